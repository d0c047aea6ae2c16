"""Read any supported weights file, say what it holds, load it into a model all-or-nothing."""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import MobileNetsError
from ..preprocess import IMAGENET, TF_INCEPTION, Preprocessing
from . import keras as keras_fmt
from . import ours, tflite, timm, torchvision
from .layout import infer_architecture, to_model_keys
from .source import resolve_source

__all__ = ["WeightsInfo", "LoadReport", "inspect_weights", "load_weights", "model_from_weights", "read_weights",
           "convert_weights",
           "TF_BN_EPS"]

TF_BN_EPS = 1e-3  # Keras / TF-slim batch-norm epsilon (PyTorch's default is 1e-5)
TF_FORMATS = ("keras", "tflite")
_MAGIC_HDF5 = b"\x89HDF\r\n\x1a\n"


@dataclass(frozen=True)
class WeightsInfo:
    """What a weights file holds and implies.

    ``format``: ``mobilenets`` (our checkpoint), ``mobilenets-state-dict``, ``torchvision``, ``timm``,
    ``keras`` or ``tflite``. ``model``/``width``: the registered architecture the tensors fit (from the
    checkpoint's config, else inferred from keys and shapes). ``file_classes``: classifier outputs in the
    file; ``background``: True for TF's 1001-class heads whose index 0 is "background" (dropped on load
    unless ``keep_background``). ``tf_padding``/``bn_eps``/``preprocessing``: the options the weights were
    trained with. ``class_names``: one per class as loaded by default (background dropped).
    """

    source: str
    format: str
    model: str
    width: float
    file_classes: int
    background: bool
    in_chans: int
    tf_padding: bool
    bn_eps: float
    preprocessing: Preprocessing
    class_names: tuple[str, ...] | None = field(default=None, repr=False)

    @property
    def num_classes(self) -> int:
        """Classes after dropping the background logit (the default)."""
        return self.file_classes - int(self.background)

    def names_for(self, num_classes: int, *, keep_background: bool = False) -> list[str] | None:
        """Class names for a model with ``num_classes`` outputs loaded from this file (None if unknown)."""
        if self.class_names is None:
            return None
        if keep_background and self.background and num_classes == self.file_classes:
            return ["background", *self.class_names]
        return list(self.class_names) if num_classes == len(self.class_names) else None


@dataclass
class LoadReport:
    """What :func:`load_weights` did: tensors loaded, tensors left (re-)initialised, and why."""

    info: WeightsInfo
    loaded: list[str] = field(default_factory=list)  # model keys set from the file
    reinitialized: list[str] = field(default_factory=list)  # model keys freshly initialised (the classifier)
    unused: list[str] = field(default_factory=list)  # file tensors not loaded (another classifier, a cut head)
    dropped_background: bool = False
    messages: list[str] = field(default_factory=list)


@dataclass
class _Read:
    info: WeightsInfo
    tensors: dict[str, torch.Tensor]  # canonical keys (see layout.py)
    folded_bn: list[str] = field(default_factory=list)  # canonical BN prefixes holding TFLite folded biases


def _sniff(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(16)
    size = path.stat().st_size
    if not head:
        raise MobileNetsError(f"{path}: empty file")
    if head.startswith(_MAGIC_HDF5):
        return "h5"
    if head[4:8] == b"TFL3":
        return "tflite"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch zip archive / legacy pickle
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < size:
        return "safetensors"
    raise MobileNetsError(f"{path}: not a weights file this library reads (safetensors, PyTorch .pth/.pt, "
                          "Keras .h5, TFLite .tflite)")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle arbitrary objects
    except Exception as e:  # torch raises many kinds for corrupt / unsafe files
        raise MobileNetsError(f"{path}: not a readable PyTorch weights file ({_first_line(e)})") from None
    for wrapper in ("state_dict", "model", "model_state_dict", "module"):  # common checkpoint nestings
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise MobileNetsError(f"{path}: a PyTorch file, but not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        return load_file(str(path)), header
    except (SafetensorError, OSError, ValueError) as e:
        raise MobileNetsError(f"{path}: not a readable safetensors file ({_first_line(e)})") from None


def _state_dict_format(state: dict[str, torch.Tensor], path: Path) -> tuple[str, dict[str, torch.Tensor], str | None]:
    """(format, canonical tensors, model name if the keys alone say it)."""
    keys = set(state)
    if ours.detect(keys):
        name = ours.infer_name(keys)
        return "mobilenets-state-dict", ours.to_canonical(state, name), name
    if timm.detect(keys):
        return "timm", timm.to_canonical(state), None
    if torchvision.detect(keys):
        return "torchvision", torchvision.to_canonical(state), None
    raise MobileNetsError(f"{path}: a state dict, but not a MobileNet from torchvision, timm or mobilenets "
                          f"(keys: {', '.join(sorted(keys)[:4])}, ...)")


def read_weights(source: str | os.PathLike, *, name: str | None = None, width: float | None = None,
                 tf: bool | None = None, sha256: str | None = None) -> _Read:
    """Read ``source`` (path or URL) into canonical tensors and a :class:`WeightsInfo`.

    ``name``/``width`` restrict (and speed up) the architecture inference; ``tf`` says the weights came from
    TensorFlow (TF "SAME" padding, BN eps 1e-3, [-1, 1] inputs) where the file cannot say it (timm ``tf_*``
    state dicts); by default Keras and TFLite files are TF, everything else is not.
    """
    from ..checkpoint import FORMAT, CheckpointMeta
    from ..labels import imagenet_labels

    path = resolve_source(source, sha256=sha256)
    kind = _sniff(path)
    folded: list[str] = []
    meta = None
    arch_name = None
    if kind == "h5":
        family, canonical = keras_fmt.to_canonical(keras_fmt.read_h5(path))
        fmt = "keras"
    elif kind == "tflite":
        graph = tflite.read_tflite(path)
        arch_name = tflite.infer_name(graph)
        canonical, folded = tflite.to_canonical(graph, arch_name)
        fmt = "tflite"
    elif kind == "torch":
        fmt, canonical, arch_name = _state_dict_format(_read_torch(path), path)
    else:
        tensors, header = _read_safetensors(path)
        if header.get("format") == FORMAT:
            meta = CheckpointMeta.from_header(header, path)
            arch_name = meta.config.name
            canonical = ours.to_canonical(tensors, arch_name)
            fmt = "mobilenets"
        else:
            fmt, canonical, arch_name = _state_dict_format(tensors, path)

    if name and arch_name and name != arch_name:
        raise MobileNetsError(f"{path}: holds {arch_name} weights, not {name}")
    if meta is not None:
        cfg = meta.config
        if width and abs(width - cfg.width) > 1e-9:
            raise MobileNetsError(f"{path}: holds {cfg.name} width {cfg.width:g}, not width {width:g}")
        info = WeightsInfo(str(source), fmt, cfg.name, cfg.width, cfg.num_classes, False, cfg.in_chans,
                           cfg.tf_padding, cfg.bn_eps, meta.preprocessing,
                           tuple(meta.class_names) if meta.class_names else None)
        return _Read(info, canonical, folded)

    try:
        model_name, model_width = infer_architecture(canonical, name=name or arch_name, width=width)
    except MobileNetsError as e:
        if name or width:  # say what the file does hold, if anything
            try:
                other = infer_architecture(canonical, name=arch_name)
            except MobileNetsError:
                other = None
            if other:
                raise MobileNetsError(f"{path}: holds {other[0]} width {other[1]:g} weights ({fmt}), not "
                                      f"{name or other[0]}" + (f" width {width:g}" if width else "")) from None
        raise MobileNetsError(f"{path}: {fmt} weights: {e}") from None
    is_tf = fmt in TF_FORMATS if tf is None else tf
    file_classes = canonical["classifier.weight"].shape[0] if "classifier.weight" in canonical else 0
    background = fmt in TF_FORMATS and file_classes == 1001
    names = tuple(imagenet_labels()) if file_classes - int(background) == 1000 else None
    bn_eps = TF_BN_EPS if is_tf else torchvision.bn_eps(model_name) if fmt == "torchvision" else 1e-5
    info = WeightsInfo(str(source), fmt, model_name, model_width, file_classes, background,
                       canonical["stem.conv.weight"].shape[1], is_tf, bn_eps,
                       TF_INCEPTION if is_tf else IMAGENET, names)
    return _Read(info, canonical, folded)


def inspect_weights(source: str | os.PathLike, *, name: str | None = None, width: float | None = None,
                    tf: bool | None = None, sha256: str | None = None) -> WeightsInfo:
    """What ``source`` holds: format, architecture, width, classes, and the options and preprocessing the
    weights need (see :class:`WeightsInfo`). Raises :class:`MobileNetsError` for anything unreadable."""
    return read_weights(source, name=name, width=width, tf=tf, sha256=sha256).info


def _short(keys, n: int = 5) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def _load(model: nn.Module, read: _Read, *, keep_background: bool) -> LoadReport:
    info = read.info
    report = LoadReport(info)
    canonical = dict(read.tensors)
    if info.background and not keep_background and "classifier.weight" in canonical:
        canonical["classifier.weight"] = canonical["classifier.weight"][1:]
        canonical["classifier.bias"] = canonical["classifier.bias"][1:]
        report.dropped_background = True
    incoming = to_model_keys(canonical, model)
    for bn in to_model_keys({f"{b}.running_var": None for b in read.folded_bn}, model):
        if bn in incoming:  # folded BN: identity needs var + eps == 1 for this model's eps
            eps = model.get_submodule(bn.rsplit(".", 1)[0]).eps
            incoming[bn] = torch.full_like(incoming[bn], 1.0 - eps)

    current = model.state_dict()
    wanted = {k: v for k, v in current.items() if not k.endswith("num_batches_tracked")}
    if not hasattr(model, "classifier"):  # a FeatureExtractor: stem and the stages it keeps, no head
        cut = [k for k in incoming if k.startswith(("head_conv.", "classifier.", "body."))]
        report.unused += sorted(cut)
        for k in cut:
            del incoming[k]
    # The classifier of another class count (or none at all) is skipped and re-initialised: fine-tuning.
    head = [k for k in ("classifier.weight", "classifier.bias") if k in incoming or k in wanted]
    w_in, w_have = incoming.get("classifier.weight"), wanted.get("classifier.weight")
    if head and (w_in is None or w_have is None or w_in.shape != w_have.shape):
        if w_in is not None and w_have is not None and w_in.shape[1] != w_have.shape[1]:
            pass  # a different feature width: an architecture mismatch, reported below
        else:
            report.unused += [k for k in head if k in incoming]
            for k in head:
                incoming.pop(k, None)
                wanted.pop(k, None)
            n_file = 0 if w_in is None else w_in.shape[0]
            n_model = 0 if w_have is None else w_have.shape[0]
            if w_have is not None:
                report.reinitialized = [k for k in head if k in current]
            report.messages.append(f"classifier not loaded: the file has {n_file} classes, the model {n_model}"
                                   + ("; it was re-initialised" if w_have is not None else ""))

    missing = set(wanted) - set(incoming)
    unexpected = set(incoming) - set(wanted)
    mismatched = [f"{k} {tuple(incoming[k].shape)} vs {tuple(wanted[k].shape)}"
                  for k in set(wanted) & set(incoming) if incoming[k].shape != wanted[k].shape]
    if missing or unexpected or mismatched:
        cfg = model.config
        parts = [f"{len(missing)} missing: {_short(missing)}" if missing else "",
                 f"{len(unexpected)} unexpected: {_short(unexpected)}" if unexpected else "",
                 f"{len(mismatched)} mismatched (file vs model): {_short(mismatched, 3)}" if mismatched else ""]
        raise MobileNetsError(
            f"{info.source}: {info.format} weights for {info.model} width {info.width:g} do not fit "
            f"{cfg.name} width {cfg.width:g}: " + "; ".join(p for p in parts if p) + " (model left unchanged)")

    new_state = dict(current)
    for k, v in incoming.items():
        new_state[k] = v.to(dtype=current[k].dtype)
    if report.reinitialized:
        w = torch.empty_like(current["classifier.weight"])
        new_state["classifier.weight"] = nn.init.normal_(w, 0, 0.01)  # as MobileNet._init_weights
        new_state["classifier.bias"] = torch.zeros_like(current["classifier.bias"])
    model.load_state_dict(new_state)  # one call: all or nothing
    report.loaded = sorted(incoming)

    cfg = model.config
    if info.tf_padding != cfg.tf_padding or (info.bn_eps != cfg.bn_eps and not read.folded_bn):
        report.messages.append(
            f"the weights were trained with tf_padding={info.tf_padding}, bn_eps={info.bn_eps:g}; the model "
            f"uses tf_padding={cfg.tf_padding}, bn_eps={cfg.bn_eps:g}: outputs will differ slightly")
    for msg in report.messages:
        _warn(f"{info.source}: {msg}")
    return report


def _warn(message: str) -> None:
    """A UserWarning attributed to the first caller outside this package (create_model, load_weights, ...)."""
    package = str(Path(__file__).resolve().parents[1])
    level, frame = 2, sys._getframe(1)  # stacklevel 2 is our caller, frame 1
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


def load_weights(model: nn.Module, source: str | os.PathLike, *, keep_background: bool = False,
                 tf: bool | None = None, sha256: str | None = None) -> LoadReport:
    """Load weights from ``source`` (a path or http(s) URL, any supported format) into ``model`` in place.

    All or nothing: the tensors are mapped and checked first and loaded with one ``load_state_dict``; a
    file for another architecture or width raises :class:`MobileNetsError` listing the missing, unexpected
    and mismatched keys, and ``model`` is left unchanged. A classifier of another class count (fine-tuning)
    is not loaded but re-initialised, with a warning and a note in the returned :class:`LoadReport`.
    TF 1001-class heads lose their background logit (index 0) unless ``keep_background``.
    """
    return _load(model, read_weights(source, tf=tf, sha256=sha256), keep_background=keep_background)


def model_from_weights(source: str | os.PathLike, *, name: str | None = None, width: float | None = None,
                       num_classes: int | None = None, keep_background: bool = False, tf: bool | None = None,
                       sha256: str | None = None, **options) -> tuple[nn.Module, LoadReport]:
    """Build the model ``source`` holds (architecture and width inferred unless given) and load it.

    The model gets the options the weights need (``tf_padding``, ``bn_eps``) unless ``options`` say
    otherwise, and the file's class count (background dropped unless ``keep_background``) unless
    ``num_classes`` is given, in which case the classifier is re-initialised (fine-tuning).
    Returns (model, :class:`LoadReport`); ``report.info`` has the preprocessing and class names.
    """
    from ..factory import create_model

    read = read_weights(source, name=name, width=width, tf=tf, sha256=sha256)
    info = read.info
    default_classes = info.file_classes if keep_background else info.num_classes
    options = {"tf_padding": info.tf_padding, "bn_eps": info.bn_eps, "in_chans": info.in_chans, **options}
    model = create_model(info.model, width=info.width,
                         num_classes=default_classes if num_classes is None else num_classes, **options)
    return model, _load(model, read, keep_background=keep_background)


def convert_weights(source: str | os.PathLike, destination: str | os.PathLike, *, name: str | None = None,
                    width: float | None = None, keep_background: bool = False, tf: bool | None = None,
                    sha256: str | None = None) -> LoadReport:
    """Write the weights in ``source`` (any supported format) as a mobilenets checkpoint at ``destination``
    (atomically), with the model config, the class names (ImageNet for 1000/1001-class files) and the
    preprocessing the weights need. Returns the :class:`LoadReport` of the load."""
    from ..checkpoint import CheckpointMeta, save_checkpoint
    from .source import sha256sum

    model, report = model_from_weights(source, name=name, width=width, keep_background=keep_background, tf=tf,
                                       sha256=sha256)
    info = report.info
    meta = CheckpointMeta(
        config=model.config,
        class_names=info.names_for(model.config.num_classes, keep_background=keep_background),
        preprocessing=info.preprocessing,
        extra={"converted_from": Path(str(source)).name, "source_format": info.format,
               "source_sha256": sha256sum(resolve_source(source, sha256=sha256))},
    )
    save_checkpoint(model, destination, meta)
    return report
