"""The model registry: a dict of names to builder functions, filled by the :func:`register_model` decorator.

Classifiers, detectors and segmenters share it; each entry says its ``task``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable

from torch import nn

from .errors import MobileNetsError

__all__ = ["register_model", "list_models", "get_model_entry", "ModelEntry", "TASKS"]

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


def list_models(task: str | None = "classification") -> list[str]:
    """Names of the registered models of ``task`` (None: every task), in registration order."""
    return [n for n, e in _REGISTRY.items() if task is None or e.task == task]


def get_model_entry(name: str) -> ModelEntry:
    """The entry of ``name``; an unknown name is a :class:`MobileNetsError` suggesting the close ones."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(close)}?" if close else f"; known models: {', '.join(_REGISTRY)}"
        raise MobileNetsError(f"unknown model {name!r}{hint}") from None
