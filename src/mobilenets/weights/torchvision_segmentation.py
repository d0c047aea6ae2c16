"""torchvision ``lraspp_mobilenet_v3_large`` state dicts -> our ``lraspp_mobilenet_v3_large(config="torchvision")``.

torchvision's LRASPP wraps ``mobilenet_v3_large(dilated=True).features`` in an ``IntermediateLayerGetter``, so
its backbone keys are the classification model's ``features.N`` renamed ``backbone.N`` (``backbone.0`` the
stem, ``backbone.1 .. 15`` the bnecks, ``backbone.16`` the last 1x1 conv), and its head is ``classifier``:

=================================  ==============================  ==========================================
torchvision                        ours                            what
=================================  ==============================  ==========================================
``backbone.0.{0,1}``               ``backbone.stem.{conv,bn}``     stem conv + BN
``backbone.N.block.*``             ``backbone.stages.S.J.*``       bneck N (the V3 table of weights/torchvision)
``backbone.16.{0,1}``              ``backbone.stages.4.3.*``       last 1x1 conv 960 + BN
``classifier.cbr.{0,1}``           ``head.cbr.{conv,bn}``          1x1 960 -> 128 + BN (+ ReLU)
``classifier.scale.1``             ``head.scale.conv``             1x1 960 -> 128 after the global pool
``classifier.low_classifier``      ``head.low_classifier``         1x1 40 -> classes (stride 8)
``classifier.high_classifier``     ``head.high_classifier``        1x1 128 -> classes
=================================  ==============================  ==========================================
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import MobileNetsError
from .layout import BlockTable, model_blocks, rename_blocks
from .torchvision import V3
from .validate import load_exact

__all__ = ["LRASPP_TABLE", "detect", "to_ours", "load_torchvision_lraspp"]

LRASPP_TABLE = BlockTable(
    prefixes=(
        (r"backbone\.0\.", "stem", 0),
        (r"backbone\.(?P<n>\d+)\.", "body.{n}", -1),
        (r"classifier\.cbr\.", "head.cbr", 0),
        (r"classifier\.scale\.", "head.scale", 0),
        (r"classifier\.low_classifier\.", "head.low_classifier", 0),
        (r"classifier\.high_classifier\.", "head.high_classifier", 0),
    ),
    # V3's block variants (with / without expansion and SE; the stem and last conv's {0: conv, 1: bn}), and
    # the pooling branch: nn.Sequential(AdaptiveAvgPool2d, Conv2d, Sigmoid) has weights only at index 1.
    variants=(*V3.variants, {"1": "conv"}),
)


def detect(keys) -> bool:
    """Whether ``keys`` are a torchvision LR-ASPP state dict (an IntermediateLayerGetter backbone and an
    ``LRASPPHead``)."""
    keys = set(keys)
    return "classifier.cbr.0.weight" in keys and "classifier.scale.1.weight" in keys and any(
        k.startswith("backbone.0.") for k in keys)


def _template() -> nn.Module:
    from ..segmentation.lraspp import lraspp_mobilenet_v3_large

    with torch.device("meta"):
        return lraspp_mobilenet_v3_large(config="torchvision", num_classes=1)


def to_ours(state: dict[str, torch.Tensor], model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """``state`` (torchvision keys) under our keys for ``model`` (default: a torchvision-config LR-ASPP; only
    the grouping of blocks into stages is read from it). ``num_batches_tracked`` is dropped. Raises
    :class:`MobileNetsError` for keys the table cannot place."""
    canonical = rename_blocks(state, LRASPP_TABLE)
    blocks = model_blocks((model if model is not None else _template()).backbone)
    out = {}
    for key, value in canonical.items():
        if key.startswith("body."):
            n, rest = key[len("body."):].split(".", 1)
            key = f"{blocks[int(n)]}.{rest}" if int(n) < len(blocks) else key
        out[key if key.startswith("head.") else f"backbone.{key}"] = value
    return out


def load_torchvision_lraspp(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a torchvision ``lraspp_mobilenet_v3_large`` state dict into ``model`` (an
    ``lraspp_mobilenet_v3_large(config="torchvision")`` with the same class count), all or nothing: any
    missing, unexpected or mis-shaped tensor is a :class:`MobileNetsError` listing them, and nothing is loaded."""
    config = getattr(model, "config", None)
    if getattr(config, "config", None) != "torchvision":
        raise MobileNetsError("torchvision LR-ASPP weights need lraspp_mobilenet_v3_large(config='torchvision'), "
                              f"got {getattr(config, 'name', type(model).__name__)} "
                              f"config={getattr(config, 'config', None)!r}")
    if not detect(state):
        raise MobileNetsError("not a torchvision lraspp_mobilenet_v3_large state dict "
                              "(no classifier.cbr / classifier.scale / backbone.0 keys)")
    load_exact(model, to_ours(state, model), "torchvision LR-ASPP weights", "the model")
