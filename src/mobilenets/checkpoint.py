"""Our own checkpoint format: safetensors tensors + JSON metadata (model config, class names, preprocessing).

Nothing is ever unpickled: the tensors are safetensors, the metadata is JSON in the safetensors header.
Writes are atomic (temp file in the same folder, fsync, rename), so an interrupted save never leaves a
truncated checkpoint behind.
"""

from __future__ import annotations

import json
import os
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .errors import MobileNetsError, existing_file, file_mode, one_line, output_file
from .model import ModelConfig
from .preprocess import IMAGENET, Preprocessing

__all__ = ["CheckpointMeta", "save_checkpoint", "read_checkpoint", "load_checkpoint", "atomic_write"]

FORMAT = "mobilenets.checkpoint/1"


@dataclass
class CheckpointMeta:
    """What a checkpoint says about itself besides the tensors."""

    config: ModelConfig  # or a detector's / segmenter's config (DetectorConfig, LRASPPConfig, DeepLabV3Config)
    class_names: list[str] | None = None  # detectors: the foreground classes (label i is class_names[i - 1])
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
        """The metadata of a safetensors header, every field checked: a :class:`MobileNetsError` naming the
        file and the field for anything missing, malformed or out of range."""
        if header.get("format") != FORMAT:
            raise MobileNetsError(f"{path}: a safetensors file, but not a mobilenets checkpoint (no '{FORMAT}' header)")

        def bad(what: str, message: str) -> MobileNetsError:
            return MobileNetsError(f"{path}: bad checkpoint metadata ({what}): {one_line(message, 300)}")

        def field_json(key: str, default: str, kind: type, kind_name: str):
            try:
                value = json.loads(header.get(key, default))
            except ValueError:
                raise bad(key, "not valid JSON") from None
            if not isinstance(value, kind):
                raise bad(key, f"expected {kind_name}, got {type(value).__name__}")
            return value

        if "config" not in header:
            raise bad("config", "missing")
        config = field_json("config", "", dict, "a JSON object")
        from .weights.dense import dense_config, is_dense_name

        try:
            dense = is_dense_name(config.get("name"))
        except MobileNetsError as e:  # an unknown model name: "did you mean ...?"
            raise bad("config", str(e)) from None
        if dense:  # a detector or segmenter: its own config type, checked by building it on the meta device
            try:
                cfg = dense_config(config)
            except MobileNetsError as e:
                raise bad("config", str(e)) from None
            return cls._rest(header, cfg, bad, field_json)
        try:
            cfg = ModelConfig(**config)
        except TypeError:
            known = set(ModelConfig.__dataclass_fields__)
            unknown = sorted(set(config) - known)
            raise bad("config", f"unknown field(s) {', '.join(map(repr, unknown))}" if unknown
                      else "the model name is missing") from None
        try:
            _check_config(cfg)
        except MobileNetsError as e:
            raise bad("config", str(e)) from None
        return cls._rest(header, cfg, bad, field_json)

    @classmethod
    def _rest(cls, header, cfg, bad, field_json) -> "CheckpointMeta":
        """Class names, preprocessing and extra of a header whose config is ``cfg``. Detectors keep their
        foreground classes' names (slot 0 is background), other models one name per output."""
        from .weights.dense import task_of

        expected = cfg.num_classes - 1 if task_of(cfg.name) == "detection" else cfg.num_classes
        names = field_json("class_names", "null", (list, type(None)), "a list of names or null")
        if names is not None and (len(names) != expected or not all(isinstance(n, str) for n in names)):
            raise bad("class_names", f"expected {expected} strings (one per class), got {len(names)} "
                                     "entries" + ("" if all(isinstance(n, str) for n in names) else
                                                  " that are not all strings"))
        if names is not None and any(_has_control(n) for n in names):
            raise bad("class_names", "names with control characters (newlines, terminal escape codes)")
        preprocessing = field_json("preprocessing", "{}", dict, "a JSON object")
        try:
            preprocessing = Preprocessing.from_dict(preprocessing)
        except MobileNetsError as e:
            raise bad("preprocessing", str(e)) from None
        extra = field_json("extra", "{}", dict, "a JSON object")
        return cls(config=cfg, class_names=names, preprocessing=preprocessing, extra=extra)


def _has_control(name: str) -> bool:
    return any(unicodedata.category(c) == "Cc" for c in name)


def check_class_names(names, where: str) -> None:
    """Class names a checkpoint can hold (see :meth:`CheckpointMeta.from_header`): none with control characters
    (newlines, terminal escape codes) and none twice (per-class tables and metrics are keyed by name), else a
    one-line :class:`MobileNetsError` naming ``where`` they come from. Checked before a run trains, not after."""
    bad = next((n for n in names if _has_control(n)), None)
    if bad is not None:
        raise MobileNetsError(f"{where}: the class name '{one_line(bad, 60)}' has control characters (newlines, "
                              "terminal escape codes); rename it")
    seen: set[str] = set()
    twice = next((n for n in names if n in seen or seen.add(n)), None)
    if twice is not None:
        raise MobileNetsError(f"{where}: the class name '{one_line(twice, 60)}' is there twice; class names must "
                              "differ")


def _check_config(cfg: ModelConfig) -> None:
    """A config a model can be built from: a registered classification model, every option in range (the
    builder's own checks, on the meta device: no memory, no init)."""
    from .factory import create_model
    from .registry import get_model_entry, list_models

    if not isinstance(cfg.name, str):
        raise MobileNetsError(f"name must be a string, got {type(cfg.name).__name__}")
    if get_model_entry(cfg.name).name not in list_models():
        raise MobileNetsError(f"{cfg.name} is not a classification model")
    for flag in ("tf_padding", "fixed_stem"):
        if not isinstance(getattr(cfg, flag, False), bool):
            raise MobileNetsError(f"{flag} must be true or false, got {getattr(cfg, flag)!r}")
    options = {k: v for k, v in cfg.to_dict().items() if k != "name"}
    with torch.device("meta"):
        create_model(cfg.name, **options)


def atomic_write(path: Path | str, write) -> None:
    """Call ``write(tmp_path)`` on a temp file next to ``path``, fsync it, then rename it over ``path``. A
    folder that cannot be written (read-only, full disk) is a :class:`MobileNetsError`; ``path`` is then as it
    was and no temp file is left."""
    from safetensors import SafetensorError

    path = output_file(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise MobileNetsError(f"{path}: cannot write there ({e.strerror or one_line(e)})") from None
    os.close(fd)
    try:
        write(tmp)
        # mkstemp makes 0600 files, and some writers (safetensors) replace the file with another 0600 one: give
        # the result the mode open() would have, after the write
        os.chmod(tmp, file_mode())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, (OSError, SafetensorError)):  # no space left, quota, I/O error
            reason = e.strerror if isinstance(e, OSError) and e.strerror else one_line(e, 160)
            raise MobileNetsError(f"{path}: could not be written ({reason}); nothing was replaced") from None
        raise


def save_checkpoint(model: nn.Module, path: Path | str, meta: CheckpointMeta | None = None) -> Path:
    """Write ``model``'s weights and ``meta`` (default: the model's config and the preprocessing its weights
    expect, :attr:`MobileNet.preprocessing`) atomically as safetensors."""
    from safetensors.torch import save_file

    meta = meta or CheckpointMeta(config=model.config, preprocessing=getattr(model, "preprocessing", IMAGENET))
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta.to_header()))
    return Path(path)


def read_checkpoint(path: Path | str) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    """The tensors and metadata of a mobilenets checkpoint, validated like every weights file
    (:mod:`mobilenets.weights`): clear errors for anything else, a damaged file or metadata out of range."""
    read = _read_checkpoint(path)
    return read.state, read.meta


# how the not-a-checkpoint error names a weights file's format (WeightsInfo.format)
_FORMAT_NAMES = {"keras": "Keras", "tflite": "TFLite", "timm": "timm", "torchvision": "torchvision"}


def _read_checkpoint(path: Path | str):
    """``read_weights`` of a file that must be a mobilenets checkpoint; anything else is a one-line error that
    names what the file is and what to do: an exported model (ONNX, ExecuTorch, TorchScript, a TFLite export)
    is evaluated through the checkpoint it came from; other weights are converted first."""
    from .weights.core import read_weights
    from .weights.formats import exported_model_kind

    path = existing_file(path, "a checkpoint file")
    exported = exported_model_kind(path)  # before read_weights: no torch.load of a TorchScript archive
    if exported is not None:
        raise MobileNetsError(f"{path}: an exported {exported} model, not a mobilenets checkpoint: use the checkpoint "
                              "it was exported from ('mobilenets export --weights CKPT --format F --eval DIR' "
                              "reports the exported file's accuracy)")
    read = read_weights(path)
    if read.meta is None:
        name = _FORMAT_NAMES.get(read.info.format, read.info.format)
        converted = f"{path.stem}{'.converted' if path.suffix == '.safetensors' else ''}.safetensors"
        raise MobileNetsError(f"{path}: {name} weights, not a mobilenets checkpoint (no '{FORMAT}' metadata): "
                              f"'mobilenets convert {path.name} {converted}' writes one")
    return read


def load_checkpoint(path: Path | str) -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild the model a mobilenets checkpoint describes and load its weights (strict)."""
    from .weights.core import _build

    read = _read_checkpoint(path)
    model, _ = _build(read, num_classes=None, keep_background=False, options={})
    return model, read.meta
