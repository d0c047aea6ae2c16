"""The model registry: a dict of names to builder functions, filled by the :func:`register_model` decorator.

Classifiers, detectors and segmenters share it; each entry says its ``task``. :data:`ALIASES` maps timm's and
torchvision's model names (``mobilenetv3_large_100``, ``tf_mobilenetv3_small_100``,
``ssdlite320_mobilenet_v3_large``) to a registered name, a width and the options that make the same network;
:func:`resolve_alias` applies one. This module imports no torch.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from .errors import MobileNetsError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["register_model", "list_models", "get_model_entry", "ModelEntry", "TASKS", "Alias", "ALIASES",
           "resolve_alias", "BUILTIN_MODELS"]

TASKS = ("classification", "detection", "segmentation")

# The models this package registers, by task, in registration order (the import order in factory.py): what
# the command line's --help lists without importing torch. tests/test_cli.py checks it against the filled
# registry: a new built-in model is added here too.
BUILTIN_MODELS: dict[str, tuple[str, ...]] = {
    "classification": ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
                       "mobilenet_v3_large_minimal", "mobilenet_v3_small_minimal", "mobilenet_v4_conv_small",
                       "mobilenet_v4_conv_medium", "mobilenet_v4_conv_large", "mobilenet_v4_hybrid_medium",
                       "mobilenet_v4_hybrid_large"),
    "detection": ("ssdlite_mobilenet_v1", "ssdlite_mobilenet_v2", "ssdlite_mobilenet_v3_large",
                  "ssdlite_mobilenet_v3_small"),
    "segmentation": ("deeplabv3_mobilenet_v2", "lraspp_mobilenet_v3_large", "lraspp_mobilenet_v3_small"),
}


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its builder, the widths the authors published weights/figures for, the paper table
    it follows and its task."""

    name: str
    build: Callable[..., nn.Module]
    published_widths: tuple[float, ...]
    paper: str
    task: str = "classification"


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(*, published_widths: tuple[float, ...], paper: str, task: str = "classification"):
    """Register ``fn`` (a function of keyword options returning a model) under its own name."""
    assert task in TASKS, task

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[fn.__name__] = ModelEntry(fn.__name__, fn, published_widths, paper, task)
        return fn

    return deco


def _load_builtin() -> None:
    """Import the model modules (``factory`` imports them all), which fills the registry: ``import mobilenets``
    imports nothing eagerly."""
    from . import factory  # noqa: F401


def list_models(task: str | None = "classification", *, pretrained: bool = False) -> list[str]:
    """Names of the registered models of ``task`` (None: every task), in registration order; with
    ``pretrained=True`` only those with published weights in the catalog (``mobilenets weights``)."""
    _load_builtin()
    names = [n for n, e in _REGISTRY.items() if task is None or e.task == task]
    if pretrained:
        from .weights.hub import PUBLISHED_WEIGHTS

        have = {w.model for w in PUBLISHED_WEIGHTS}
        names = [n for n in names if n in have]
    return names


def get_model_entry(name: str) -> ModelEntry:
    """The entry of ``name`` (a registered name or an alias of :data:`ALIASES`); an unknown name is a
    :class:`MobileNetsError` suggesting the close ones."""
    _load_builtin()
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        if isinstance(name, str) and name in ALIASES:
            return _REGISTRY[ALIASES[name].name]
        close = difflib.get_close_matches(str(name), [*_REGISTRY, *ALIASES], n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(close)}?" if close else f"; known models: {', '.join(_REGISTRY)}"
        raise MobileNetsError(f"unknown model {name!r}{hint}") from None


# ------------------------------------------------------------------------------------------------- aliases


@dataclass(frozen=True)
class Alias:
    """Another library's name for one of ours: the registered ``name``, its ``width`` (None: any), ``tf``
    (TensorFlow-trained weights: TF "SAME" padding and BN eps 1e-3) and other builder ``options``."""

    name: str
    width: float | None = None
    tf: bool = False
    options: tuple[tuple[str, object], ...] = field(default=())


def _timm_aliases() -> dict[str, Alias]:
    # timm's names, "<arch>_<width x 100>" (timm/models/mobilenetv1.py, mobilenetv3.py, efficientnet.py).
    # mobilenetv3_small_050 keeps the stem at its table width (16): checked on timm's own model by
    # tests/test_weights_hub.py, as is every row here.
    out: dict[str, Alias] = {}
    for w in (100, 125):
        out[f"mobilenetv1_{w}"] = Alias("mobilenet_v1", w / 100)
    for w in (35, 50, 75, 100, 140):
        out[f"mobilenetv2_{w:03d}"] = Alias("mobilenet_v2", w / 100)
    for w in (75, 100):
        out[f"mobilenetv3_large_{w:03d}"] = Alias("mobilenet_v3_large", w / 100)
        out[f"tf_mobilenetv3_large_{w:03d}"] = Alias("mobilenet_v3_large", w / 100, tf=True)
    for w in (50, 75, 100):
        out[f"mobilenetv3_small_{w:03d}"] = Alias("mobilenet_v3_small", w / 100,
                                                  options=(("fixed_stem", True),) if w == 50 else ())
    for w in (75, 100):
        out[f"tf_mobilenetv3_small_{w:03d}"] = Alias("mobilenet_v3_small", w / 100, tf=True)
    out["tf_mobilenetv3_large_minimal_100"] = Alias("mobilenet_v3_large_minimal", 1.0, tf=True)
    out["tf_mobilenetv3_small_minimal_100"] = Alias("mobilenet_v3_small_minimal", 1.0, tf=True)
    # MobileNetV4 ("mobilenetv4_<variant>[_<width x 100>]"): below width 1 timm keeps the stem at its table
    # width (_gen_mobilenet_v4: fix_stem=channel_multiplier < 1.0); Hybrid-L's 24 rounds back to 24 at 0.75, so
    # there the fixed stem is the scaled one and the weights say width 0.75 without it
    for variant in ("conv_small", "conv_medium", "conv_large", "hybrid_medium", "hybrid_large"):
        out[f"mobilenetv4_{variant}"] = Alias(f"mobilenet_v4_{variant}", 1.0)
    fixed = (("fixed_stem", True),)
    out["mobilenetv4_conv_small_035"] = Alias("mobilenet_v4_conv_small", 0.35, options=fixed)
    out["mobilenetv4_conv_small_050"] = Alias("mobilenet_v4_conv_small", 0.5, options=fixed)
    out["mobilenetv4_hybrid_medium_075"] = Alias("mobilenet_v4_hybrid_medium", 0.75, options=fixed)
    out["mobilenetv4_hybrid_large_075"] = Alias("mobilenet_v4_hybrid_large", 0.75)
    return out


ALIASES: dict[str, Alias] = {
    **_timm_aliases(),
    # torchvision's detector name (its classifiers and lraspp_mobilenet_v3_large are named as ours)
    "ssdlite320_mobilenet_v3_large": Alias("ssdlite_mobilenet_v3_large", options=(("config", "torchvision"),)),
}


def resolve_alias(name: str, width: float | None = None, options: dict | None = None) -> tuple[str, float | None,
                                                                                               dict, bool]:
    """(registered name, width, options, tf) for ``name``: a registered name passes through unchanged; an alias
    gives its model, width and options (``options`` given by the caller win). A ``width`` other than the
    alias's is a :class:`MobileNetsError` (``mobilenetv3_large_100`` is width 1)."""
    options = dict(options or {})
    registered = isinstance(name, str) and (name in _REGISTRY or any(name in n for n in BUILTIN_MODELS.values()))
    alias = ALIASES.get(name) if isinstance(name, str) and not registered else None
    if alias is None:
        return name, width, options, False
    if width is not None and alias.width is not None and abs(width - alias.width) > 1e-9:
        raise MobileNetsError(f"{name} is {alias.name} width {alias.width:g}; for width {width:g} ask for "
                              f"{alias.name!r} with width={width:g}")
    return alias.name, alias.width if width is None else width, {**dict(alias.options), **options}, alias.tf
