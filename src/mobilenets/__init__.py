"""mobilenets: the MobileNet family (V1, V2, V3) in PyTorch, faithful to the papers.

The public names below are imported on first use (PEP 562 module ``__getattr__``): ``import mobilenets`` and
the ``mobilenets`` command's ``--help`` do not import torch; ``mobilenets.create_model`` etc. do.
"""

from __future__ import annotations

import importlib
import sys
import types

from .errors import MobileNetsError

__version__ = "0.1.0"

# public name -> the module (relative to this package) that defines it
_LAZY = {
    "CheckpointMeta": "checkpoint", "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
    "create_model": "factory",
    "FeatureExtractor": "features",
    "FeatureInfo": "model", "MobileNet": "model", "ModelConfig": "model",
    "IMAGENET": "preprocess", "TF_INCEPTION": "preprocess", "Preprocessing": "preprocess",
    "Profile": "profile", "profile": "profile",
    "list_models": "registry",
    "LoadReport": "weights", "WeightsInfo": "weights", "inspect_weights": "weights", "load_weights": "weights",
    "model_from_weights": "weights",
    "TrainConfig": "training", "TrainResult": "training", "train": "training",
    "EvalResult": "evaluate", "evaluate": "evaluate",
}

__all__ = [
    "create_model", "list_models", "profile", "Profile", "MobileNet", "ModelConfig", "FeatureInfo",
    "FeatureExtractor", "save_checkpoint", "load_checkpoint", "CheckpointMeta", "Preprocessing", "IMAGENET",
    "TF_INCEPTION", "MobileNetsError", "load_weights", "model_from_weights", "inspect_weights", "LoadReport",
    "WeightsInfo", "TrainConfig", "TrainResult", "train", "EvalResult", "evaluate",
]


class _Package(types.ModuleType):
    """This package's module type. ``evaluate`` and ``profile`` name both a submodule and the function it
    defines; the package attribute is the function (as when this package imported them eagerly), but importing
    the submodule sets the attribute to the module: that assignment is dropped here, and ``__getattr__`` below
    resolves the name to the function."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and _LAZY.get(name) == name:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    """A public name from its module, or a subpackage / submodule (``mobilenets.weights``), imported now."""
    if name.startswith("_"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    else:
        try:
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
