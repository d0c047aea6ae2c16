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
           "resolve_alias"]

TASKS = ("classification", "detection", "segmentation")


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


def list_models(task: str | None = "classification", *, pretrained: bool = False) -> list[str]:
    """Names of the registered models of ``task`` (None: every task), in registration order; with
    ``pretrained=True`` only those with published weights in the catalog (``mobilenets weights``)."""
    names = [n for n, e in _REGISTRY.items() if task is None or e.task == task]
    if pretrained:
        from .weights.hub import PUBLISHED_WEIGHTS

        have = {w.model for w in PUBLISHED_WEIGHTS}
        names = [n for n in names if n in have]
    return names


def get_model_entry(name: str) -> ModelEntry:
    """The entry of ``name`` (a registered name or an alias of :data:`ALIASES`); an unknown name is a
    :class:`MobileNetsError` suggesting the close ones."""
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
    alias = ALIASES.get(name) if isinstance(name, str) and name not in _REGISTRY else None
    if alias is None:
        return name, width, options, False
    if width is not None and alias.width is not None and abs(width - alias.width) > 1e-9:
        raise MobileNetsError(f"{name} is {alias.name} width {alias.width:g}; for width {width:g} ask for "
                              f"{alias.name!r} with width={width:g}")
    return alias.name, alias.width if width is None else width, {**dict(alias.options), **options}, alias.tf
