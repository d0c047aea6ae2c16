"""The model registry: a dict of names to builder functions, filled by the :func:`register_model` decorator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

__all__ = ["register_model", "list_models", "get_model_entry", "ModelEntry"]


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its builder and the widths the authors published weights/figures for."""

    name: str
    build: Callable[..., nn.Module]
    published_widths: tuple[float, ...]
    paper: str


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(*, published_widths: tuple[float, ...], paper: str):
    """Register ``fn`` (a function of keyword options returning a model) under its own name."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[fn.__name__] = ModelEntry(fn.__name__, fn, published_widths, paper)
        return fn

    return deco


def list_models() -> list[str]:
    """Names of every registered model, in registration order (V1, V2, V3)."""
    return list(_REGISTRY)


def get_model_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(_REGISTRY)}") from None
