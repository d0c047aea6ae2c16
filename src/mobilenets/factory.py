"""``create_model``: the one entry point that builds any registered model."""

from __future__ import annotations

import inspect
import os

from torch import nn

from . import mobilenet_v1, mobilenet_v2, mobilenet_v3, mobilenet_v4  # noqa: F401  (fill the registry: classifiers,
from .detection import ssdlite  # noqa: F401  detectors,
from .segmentation import deeplabv3, lraspp  # noqa: F401  segmenters)
from .errors import MobileNetsError
from .features import FeatureExtractor
from .model import MobileNet
from .registry import get_model_entry, resolve_alias

__all__ = ["create_model", "check_options"]

# What create_model and model_from_weights take beside the builder's own options, with weights= only.
WEIGHTS_OPTIONS = ("tf", "keep_background", "sha256", "refresh")


def check_options(name: str | None, options, *, extra: tuple[str, ...] = ()) -> None:
    """Every key of ``options`` is a keyword option of ``name``'s builder (None: any classifier's, which
    :class:`~mobilenets.MobileNet` takes) or in ``extra``, else a :class:`MobileNetsError` naming them and what
    the model takes: before anything is read or built."""
    build = MobileNet.__init__ if name is None or get_model_entry(name).task == "classification" \
        else get_model_entry(name).build
    params = inspect.signature(build).parameters.values()
    accepted = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)} - {"self", "arch"}
    unknown = sorted(set(options) - accepted - set(extra))
    if unknown:
        raise MobileNetsError(f"{name or 'a classifier'} takes no option {', '.join(map(repr, unknown))}; its "
                              f"options: {', '.join(sorted(accepted | set(extra)))}")


def create_model(
    name: str,
    *,
    width: float | None = None,
    num_classes: int | None = None,
    in_chans: int | None = None,
    dropout: float | None = None,
    features_only: bool = False,
    out_strides: tuple[int, ...] | None = None,
    weights: str | os.PathLike | None = None,
    pretrained: bool = False,
    **options,
) -> nn.Module:
    """Build a registered MobileNet.

    Args:
        name: a name from :func:`mobilenets.list_models` (``task=None``: every task), e.g.
            ``"mobilenet_v3_large"``, ``"ssdlite_mobilenet_v3_large"``, ``"lraspp_mobilenet_v3_large"``, or
            timm's / torchvision's name for one (``"mobilenetv3_large_100"``, ``"tf_mobilenetv3_small_100"``,
            ``"mobilenetv2_050"``, ``"ssdlite320_mobilenet_v3_large"``: the width and options come with it;
            see :data:`mobilenets.registry.ALIASES`).
            Detectors and segmenters take their own keyword options (see their builders); ``weights``,
            ``features_only`` and ``out_strides`` are for classifiers.
        width: the width multiplier (alpha in V1, the "multiplier" of V2/V3); the resolution multiplier is
            simply the input size, any size >= 32x32 works. Default 1.0, or the width of ``weights``.
        num_classes: classifier outputs (0: no classifier, the model returns pooled features). Default 1000,
            or the class count of ``weights``; another count than the file's re-initialises the classifier
            (fine-tuning) with a warning.
        in_chans: input channels. Default 3, or the stem's of ``weights``.
        dropout: dropout before the classifier; ``None`` keeps the paper's default.
        features_only: return a :class:`~mobilenets.features.FeatureExtractor` giving the stage-end feature
            maps at ``out_strides`` (any of 2, 4, 8, 16, 32 up to ``output_stride``) instead of logits.
            Default: 4, 8, 16, 32, those past a dilated ``output_stride`` dropped (16: 4, 8, 16; the stride-16
            map is then the last stage's).
        **options: ``tf_padding=True`` for TensorFlow "SAME" padding, ``bn_eps`` for the batch-norm epsilon
            (TF/Keras use 1e-3); both are needed to reproduce TensorFlow-trained weights exactly. Backbone
            options for dense prediction: ``tail`` ("full", "detection", "segmentation": the halved last stage
            of V3 section 6.3 / TF DeepLab), ``output_stride`` (32, 16, 8: dilated last stages),
            ``dilation_style`` ("tf" or "torchvision"), ``fixed_stem`` (see :class:`~mobilenets.ModelConfig`).
            ``global_pool``: "avg" (default), "max", or "" with ``num_classes=0`` for unpooled features (timm's
            option; also :meth:`~mobilenets.MobileNet.reset_classifier`).
        weights: a weights file or http(s) URL in any format :mod:`mobilenets.weights` reads, or published
            weights by name (``mobilenets weights`` lists them): a catalog name
            (``"timm:mobilenetv3_large_100.ra_in1k"``), a source (``"torchvision"``, ``"timm"``, ``"keras"``,
            ``"tflite"``: its best file for this model and width) or a torchvision enum name / member
            (``"IMAGENET1K_V1"``, ``MobileNet_V3_Large_Weights.DEFAULT``); downloaded once into the cache,
            hash-checked. The options the weights need (``tf_padding``, ``bn_eps`` for Keras/TFLite files) are
            picked from the file unless given. ``keep_background=True`` (with ``weights``) keeps a TF
            1001-class head whole.
        pretrained: ``True``: the best-known published weights of this model at this width (the highest
            published ImageNet top-1 of the catalog; ``mobilenets weights --model NAME`` shows which; for a
            timm name, timm's own file of that name); a model without published weights is a
            :class:`MobileNetsError`.
    """
    asked = name
    name, width, alias_options, tf = resolve_alias(name, width)
    check_options(name, options, extra=WEIGHTS_OPTIONS if weights is not None or pretrained else ())
    if not isinstance(pretrained, bool):
        raise MobileNetsError(f"pretrained must be True or False, got {pretrained!r}")
    if pretrained:
        if weights is not None:
            raise MobileNetsError("pass weights=... or pretrained=True, not both")
        from .weights.hub import default_weights

        get_model_entry(name)  # an unknown name: "did you mean ...?" before the catalog says it has nothing
        weights = default_weights(name, width, alias=asked if asked != name else None).name
    if weights is not None:
        from .weights import model_from_weights

        # The file says what it needs (an alias's options are what its file holds), except that a timm tf_*
        # state dict cannot say it was trained in TensorFlow: tf=True for a tf_* alias.
        # (``tf=True`` from the caller too, as model_from_weights takes it)
        tf_file = options.pop("tf", None)
        if in_chans is not None:
            options["in_chans"] = in_chans
        model, _ = model_from_weights(weights, name=name, width=width, num_classes=num_classes,
                                      dropout=dropout, tf=True if tf else tf_file, **options)
        return FeatureExtractor(model, _out_strides(model, out_strides)) if features_only else model
    options = {**({"tf_padding": True, "bn_eps": 1e-3} if tf else {}), **alias_options, **options}
    entry = get_model_entry(name)
    if entry.task != "classification":
        kwargs = {k: v for k, v in (("width", width), ("num_classes", num_classes), ("dropout", dropout))
                  if v is not None}
        if features_only:
            raise MobileNetsError(f"{name} is a {entry.task} model: features_only is for classifiers")
        return entry.build(in_chans=3 if in_chans is None else in_chans, **kwargs, **options)
    model = entry.build(
        width=1.0 if width is None else width, num_classes=1000 if num_classes is None else num_classes,
        in_chans=3 if in_chans is None else in_chans, dropout=dropout, **options
    )
    if features_only:
        return FeatureExtractor(model, _out_strides(model, out_strides))
    return model


def _out_strides(model, out_strides: tuple[int, ...] | None) -> tuple[int, ...]:
    if out_strides is not None:
        return out_strides
    return tuple(s for s in (4, 8, 16, 32) if s <= model.config.output_stride)
