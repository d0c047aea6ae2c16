"""Our own checkpoint format: safetensors tensors + JSON metadata (model config, class names, preprocessing).

Nothing is ever unpickled: the tensors are safetensors, the metadata is JSON in the safetensors header.
Writes are atomic (temp file in the same folder, fsync, rename), so an interrupted save never leaves a
truncated checkpoint behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .errors import MobileNetsError, existing_file
from .model import ModelConfig
from .preprocess import IMAGENET, Preprocessing

__all__ = ["CheckpointMeta", "save_checkpoint", "read_checkpoint", "load_checkpoint", "atomic_write"]

FORMAT = "mobilenets.checkpoint/1"


@dataclass
class CheckpointMeta:
    """What a checkpoint says about itself besides the tensors."""

    config: ModelConfig
    class_names: list[str] | None = None
    preprocessing: Preprocessing = IMAGENET
    extra: dict = field(default_factory=dict)  # e.g. the training run's config, metrics

    def to_header(self) -> dict[str, str]:
        return {
            "format": FORMAT,
            "config": json.dumps(self.config.to_dict()),
            "class_names": json.dumps(self.class_names),
            "preprocessing": json.dumps(self.preprocessing.to_dict()),
            "extra": json.dumps(self.extra),
        }

    @classmethod
    def from_header(cls, header: dict[str, str], path: Path | str = "") -> "CheckpointMeta":
        if header.get("format") != FORMAT:
            raise MobileNetsError(f"{path}: a safetensors file, but not a mobilenets checkpoint (no '{FORMAT}' header)")
        try:
            return cls(
                config=ModelConfig(**json.loads(header["config"])),
                class_names=json.loads(header.get("class_names", "null")),
                preprocessing=Preprocessing.from_dict(json.loads(header.get("preprocessing", "{}"))),
                extra=json.loads(header.get("extra", "{}")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise MobileNetsError(f"{path}: corrupt mobilenets checkpoint metadata ({e})") from None


def atomic_write(path: Path | str, write) -> None:
    """Call ``write(tmp_path)`` on a temp file next to ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(model: nn.Module, path: Path | str, meta: CheckpointMeta | None = None) -> Path:
    """Write ``model``'s weights and ``meta`` (default: the model's config) atomically as safetensors."""
    from safetensors.torch import save_file

    meta = meta or CheckpointMeta(config=model.config)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta.to_header()))
    return Path(path)


def read_checkpoint(path: Path | str) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    """The tensors and metadata of a mobilenets checkpoint (clear errors for anything else)."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = existing_file(path, "a checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise MobileNetsError(f"{path}: not a readable safetensors file ({e})") from None
    return tensors, CheckpointMeta.from_header(header, path)


def load_checkpoint(path: Path | str) -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild the model a mobilenets checkpoint describes and load its weights (strict)."""
    from .factory import create_model

    tensors, meta = read_checkpoint(path)
    cfg = meta.config
    model = create_model(cfg.name, width=cfg.width, num_classes=cfg.num_classes, in_chans=cfg.in_chans,
                         dropout=cfg.dropout, tf_padding=cfg.tf_padding, bn_eps=cfg.bn_eps)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise MobileNetsError(f"{path}: weights do not fit {cfg.name} width {cfg.width:g}: {e}") from None
    return model, meta
