"""The model registry: a dict of names to builder functions, filled by the :func:`register_model` decorator.

Classifiers, detectors and segmenters share it; each entry says its ``task``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .errors import MobileNetsError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["register_model", "list_models", "get_model_entry", "ModelEntry", "TASKS", "BUILTIN_MODELS"]

TASKS = ("classification", "detection", "segmentation")

# The models this package registers, by task, in registration order (the import order in factory.py): what
# the command line's --help lists without importing torch. tests/test_cli.py checks it against the filled
# registry: a new built-in model is added here too.
BUILTIN_MODELS: dict[str, tuple[str, ...]] = {
    "classification": ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
                       "mobilenet_v3_large_minimal", "mobilenet_v3_small_minimal"),
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


def list_models(task: str | None = "classification") -> list[str]:
    """Names of the registered models of ``task`` (None: every task), in registration order."""
    _load_builtin()
    return [n for n, e in _REGISTRY.items() if task is None or e.task == task]


def get_model_entry(name: str) -> ModelEntry:
    """The entry of ``name``; an unknown name is a :class:`MobileNetsError` suggesting the close ones."""
    _load_builtin()
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(close)}?" if close else f"; known models: {', '.join(_REGISTRY)}"
        raise MobileNetsError(f"unknown model {name!r}{hint}") from None
