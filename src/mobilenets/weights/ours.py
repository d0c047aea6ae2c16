"""Our own files: mobilenets checkpoints (safetensors + JSON metadata) and plain state dicts of our models
(``torch.save(model.state_dict())``). Keys are already ours; only the stage grouping is flattened."""

from __future__ import annotations

import torch

from ..errors import MobileNetsError
from .layout import meta_model
from .layout import to_canonical as _canon

__all__ = ["detect", "infer_name", "to_canonical"]


def detect(keys: set[str]) -> bool:
    return "stem.conv.weight" in keys and any(k.startswith("stages.") for k in keys)


def infer_name(keys: set[str]) -> str:
    """The registered model whose block structure (``stages.S.J`` set) is the file's."""
    from ..registry import list_models

    have = {".".join(k.split(".")[:3]) for k in keys if k.startswith("stages.")}
    for name in list_models():
        m = meta_model(name)
        blocks = {f"stages.{s}.{j}" for s, stage in enumerate(m.stages) for j in range(len(stage))}
        body_keys = {k for k in m.state_dict() if k.startswith("stages.") and not k.endswith("num_batches_tracked")}
        if blocks == have and body_keys == {k for k in keys if k.startswith("stages.") and
                                            not k.endswith("num_batches_tracked")}:
            return name
    raise MobileNetsError("a mobilenets state dict, but its blocks match no registered model")


def to_canonical(state: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    return _canon(state, meta_model(name))
