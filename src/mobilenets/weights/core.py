"""Read any supported weights file, say what it holds, load it into a model all-or-nothing.

Every file goes through one boundary, :func:`_parse`: its kind from its full signature (``formats.py``),
then the format's reader, then the checks of ``validate.py`` (string keys, dense float tensors, finite
values, every shape the architecture's) and, for our checkpoints, of their metadata
(``CheckpointMeta.from_header``). What comes out is validated tensors and a :class:`WeightsInfo`; anything
else is one :class:`MobileNetsError` naming the file and the field or tensors at fault.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import MobileNetsError, one_line, output_file
from ..model import ModelConfig
from ..preprocess import IMAGENET, TF_INCEPTION, Preprocessing
from . import keras as keras_fmt
from . import hub, ours, tflite, timm, torchvision
from .formats import detect_format
from .layout import Architecture, canonical_shapes, infer_architecture, to_model_keys
from .source import DEFAULT_DEADLINE, DEFAULT_TIMEOUT, open_source, sha256sum, source_name
from .dense import DenseParsed, build_dense, check_dense_shapes, is_dense_name, parse_dense_state_dict, \
    parse_deeplab_tflite
from .validate import check_shapes, check_state_dict, check_values, load_exact, short_list

__all__ = ["WeightsInfo", "LoadReport", "inspect_weights", "load_weights", "model_from_weights", "read_weights",
           "convert_weights",
           "TF_BN_EPS"]

TF_BN_EPS = 1e-3  # Keras / TF-slim batch-norm epsilon (PyTorch's default is 1e-5)
TF_FORMATS = ("keras", "tflite")


@dataclass(frozen=True)
class WeightsInfo:
    """What a weights file holds and implies.

    ``format``: ``mobilenets`` (our checkpoint), ``mobilenets-state-dict``, ``torchvision``, ``timm``,
    ``keras`` or ``tflite``. ``model``/``width``: the registered architecture the tensors fit (from the
    checkpoint's config, else inferred from keys and shapes); ``fixed_stem``: the stem keeps its table width
    (timm ``mobilenetv3_*_050``, Keras V3 at other alphas than 0.75 / 1.0). ``file_classes``: classifier
    outputs in the file; ``background``: True for TF's 1001-class heads whose index 0 is "background"
    (dropped on load unless ``keep_background``). ``tf_padding``/``bn_eps``/``preprocessing``: the options the
    weights were trained with. ``class_names``: one per class as loaded by default (background dropped).
    ``config``: a mobilenets checkpoint's whole model config (None for other formats).
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
    fixed_stem: bool = False
    config: object | None = field(default=None, repr=False)

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
    meta: object | None = None  # CheckpointMeta of a mobilenets checkpoint
    state: dict[str, torch.Tensor] | None = None  # the file's own tensors (PyTorch and safetensors files)
    file: Path | None = None  # where the file is (the cache entry of a download)
    dense: bool = False  # a detector / segmenter: ``tensors`` are under our keys of ``info.config``'s model


@contextmanager
def _named(label: str):
    """Prefix a :class:`MobileNetsError` raised inside with ``label`` (unless it already names it)."""
    try:
        yield
    except MobileNetsError as e:
        msg = str(e)
        raise MobileNetsError(msg if msg.startswith(label) else f"{label}: {msg}") from None


def _refused_pickle(e: BaseException) -> str | None:
    """The message for ``torch.load(weights_only=True)`` refusing a pickle, or None for another error."""
    text = str(e)
    if not isinstance(e, pickle.UnpicklingError) or "Weights only load failed" not in text:
        return None
    m = re.search(r"GLOBAL ([A-Za-z_][\w.]*)", text)
    what = f" ({m[1][:120]})" if m else ""
    return f"holds Python objects other than tensors{what}; refused, nothing was loaded"


# A PyTorch zip may unpack to at most 8x its size + 64 MiB. torch.save stores its entries uncompressed (about
# 1x); a re-zipped file of zeros deflates ~1000x, and torch.load would allocate all of it.
_ZIP_EXPANSION = 8
_ZIP_SLACK_BYTES = 64 << 20


def _check_zip_size(path: Path) -> None:
    """Refuse a zip-format PyTorch file whose entries unpack to far more than the file's size."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return  # the legacy format, or not a zip at all: torch.load says what it is
    try:
        with zipfile.ZipFile(path) as z:
            unpacked = sum(i.file_size for i in z.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # torch.load's reader names the damage
    size = path.stat().st_size
    if unpacked > _ZIP_EXPANSION * size + _ZIP_SLACK_BYTES:
        raise MobileNetsError(f"a zip that unpacks to {unpacked / 2**20:,.0f} MiB from {size / 2**20:,.1f} MiB; "
                              "refused as a decompression bomb")


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    _check_zip_size(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle arbitrary objects
    except Exception as e:  # torch raises many kinds for corrupt / unsafe files
        reason = _refused_pickle(e)
        if reason:
            raise MobileNetsError(reason) from None
        text = re.sub(r"^\[enforce fail at [^\]]*\][\s.]*", "", str(e).strip())  # c10's location prefix
        first = text.split("\n")[0].split(". ")[0]
        raise MobileNetsError(f"not a readable PyTorch weights file ({one_line(first, 160) or type(e).__name__})") \
            from None
    if isinstance(obj, dict) and {"config", "epoch", "model", "optimizer"} <= set(obj):  # training/state.py
        raise MobileNetsError("a mobilenets training state (what 'train --resume' reads), not a weights file: its "
                              "class names and preprocessing are in the run's best.safetensors, load that")
    for wrapper in ("state_dict", "model", "model_state_dict", "module"):  # common checkpoint nestings
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    state = check_state_dict(obj, "a PyTorch file")
    both = sorted(k for k in state if k.startswith("module.") and k.removeprefix("module.") in state)
    if both:  # DataParallel's prefix dropped: which copy to load would be a silent guess
        raise MobileNetsError(f"{len(both)} tensor(s) are there twice, with and without the 'module.' prefix "
                              f"({short_list(both, 2)}); not loaded")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        return load_file(str(path)), header
    except (SafetensorError, OSError, ValueError, TypeError, RuntimeError) as e:
        first = str(e).strip().split("\n")[0]
        raise MobileNetsError(f"not a readable safetensors file ({one_line(first, 160) or type(e).__name__})") from None


def _state_dict_format(state: dict[str, torch.Tensor]) -> tuple[str, dict[str, torch.Tensor], str | None]:
    """(format, canonical tensors, model name if the keys alone say it)."""
    keys = set(state)
    if ours.detect(keys):
        name = ours.infer_name(keys)
        return "mobilenets-state-dict", ours.to_canonical(state, name), name
    if timm.detect(keys):
        return "timm", timm.to_canonical(state), None
    if torchvision.detect(keys):
        return "torchvision", torchvision.to_canonical(state), None
    raise MobileNetsError("a state dict, but not a MobileNet from torchvision, timm or mobilenets "
                          f"(keys: {', '.join(one_line(k, 60) for k in sorted(keys)[:4])}, ...)")


def _config_shapes(cfg) -> dict[str, tuple]:
    return canonical_shapes(cfg.name, cfg.width, cfg.num_classes, cfg.in_chans,
                            fixed_stem=getattr(cfg, "fixed_stem", False), tail=getattr(cfg, "tail", "full"))


@dataclass
class _Parsed:
    format: str
    tensors: dict[str, torch.Tensor]
    arch: Architecture | None = None
    folded: list[str] = field(default_factory=list)
    meta: object | None = None
    state: dict[str, torch.Tensor] | None = None
    dense: DenseParsed | None = None  # a detector / segmenter (weights/dense.py)


def _parse(path: Path, label: str) -> _Parsed:
    """Everything the file says about itself, validated (the one boundary; see the module docstring)."""
    from ..checkpoint import FORMAT, CheckpointMeta

    with _named(label):
        kind = detect_format(path, label)
        if kind == "h5":
            _, canonical = keras_fmt.to_canonical(keras_fmt.read_h5(path))
            check_values(canonical, label)
            return _Parsed("keras", canonical, _infer(canonical, "keras"))
        if kind == "tflite":
            graph = tflite.read_tflite(path)
            dense = parse_deeplab_tflite(path, graph)
            if dense is not None:
                check_values(dense.state, label)
                return _Parsed("tflite", dense.state, state=dense.state, dense=dense)
            arch_name = tflite.infer_name(graph)
            canonical, folded = tflite.to_canonical(graph, arch_name)
            check_values(canonical, label)
            return _Parsed("tflite", canonical, _infer(canonical, "tflite", arch_name), folded)
        if kind == "torch":
            state = _read_torch(path)
            header: dict[str, str] = {}
        else:
            state, header = _read_safetensors(path)
            state = check_state_dict(state, "a safetensors file")
        check_values(state, label)
        stated = header.get("format", "")
        if stated != FORMAT and stated.startswith(FORMAT.rsplit("/", 1)[0]):
            raise MobileNetsError(f"a mobilenets checkpoint in format {one_line(stated, 60)!r}, which this version "
                                  f"of mobilenets does not read (it reads '{FORMAT}')")
        if stated == FORMAT:
            meta = CheckpointMeta.from_header(header, label)
            cfg = meta.config
            if not isinstance(cfg, ModelConfig):  # a detector / segmenter checkpoint
                state = check_dense_shapes(state, cfg, label)
                return _Parsed("mobilenets", state, meta=meta, state=state,
                               dense=DenseParsed("mobilenets", cfg, state, meta.preprocessing, meta.class_names))
            canonical = ours.to_canonical(state, cfg.name)
            check_shapes(canonical, _config_shapes(cfg), label, f"the {cfg.name} width {cfg.width:g} its metadata "
                                                                "describes")
            return _Parsed("mobilenets", canonical, Architecture(cfg.name, cfg.width,
                                                                 bool(getattr(cfg, "fixed_stem", False))),
                           meta=meta, state=state)
        dense = parse_dense_state_dict(state, label)
        if dense is not None:
            return _Parsed(dense.format, dense.state, state=dense.state, dense=dense)
        fmt, canonical, arch_name = _state_dict_format(state)
        return _Parsed(fmt, canonical, _infer(canonical, fmt, arch_name), state=state)


def _infer(canonical: dict[str, torch.Tensor], fmt: str, name: str | None = None) -> Architecture:
    try:
        return infer_architecture(canonical, name=name)
    except MobileNetsError as e:
        raise MobileNetsError(f"{fmt} weights: {e}") from None


def _check_name(name: str | None, width: float | None, tf: bool | None) -> tuple[str | None, float | None,
                                                                                  bool | None]:
    """(registered name, width, tf) for the caller's ``name``, which may be a timm / torchvision alias
    (``tf_mobilenetv3_small_100``: mobilenet_v3_small width 1, TF-trained)."""
    from ..registry import get_model_entry, resolve_alias

    if name is None:
        return None, width, tf
    get_model_entry(name)  # unknown: "did you mean ...?"
    name, width, _, alias_tf = resolve_alias(name, width)
    return name, width, True if alias_tf and tf is None else tf


def _check_width(width) -> None:
    if width is not None and not (isinstance(width, (int, float)) and not isinstance(width, bool)
                                  and math.isfinite(width) and 0 < width <= 16):
        raise MobileNetsError(f"width must be a number in (0, 16], got {one_line(repr(width), 40)}")


def _check_flag(value, what: str, *, optional: bool = False) -> None:
    if not (isinstance(value, bool) or (optional and value is None)):
        raise MobileNetsError(f"{what} must be True or False{' or None' if optional else ''}, got "
                              f"{one_line(repr(value), 40)}")


def read_weights(source: str | os.PathLike, *, name: str | None = None, width: float | None = None,
                 tf: bool | None = None, sha256: str | None = None, refresh: bool = False,
                 timeout: float = DEFAULT_TIMEOUT, deadline: float = DEFAULT_DEADLINE) -> _Read:
    """Read ``source`` (path or URL) into canonical tensors and a :class:`WeightsInfo`.

    ``source`` may also name published weights (:mod:`~mobilenets.weights.hub`: ``"timm:mobilenetv2_100.ra_in1k"``,
    or with ``name``: ``"torchvision"``, ``"IMAGENET1K_V1"``, ...): fetched into the cache and hash-checked, read
    with the preprocessing its publisher evaluated with.
    ``name``/``width`` say which architecture the caller expects (a file holding another is an error that
    says what it holds); ``tf`` says the weights came from TensorFlow (TF "SAME" padding, BN eps 1e-3,
    [-1, 1] inputs) where the file cannot say it (timm ``tf_*`` state dicts); by default Keras and TFLite
    files are TF, everything else is not. ``refresh``: download a URL again even if it is cached;
    ``timeout``: seconds per network operation, ``deadline``: seconds for the whole download.
    """
    from ..labels import imagenet_labels

    _check_flag(tf, "tf", optional=True)
    _check_width(width)
    name, width, tf = _check_name(name, width, tf)
    _check_flag(refresh, "refresh")
    entry = hub.lookup(source, model=name, width=width)
    if entry is not None:
        if sha256 is not None:
            raise MobileNetsError(f"{entry.name}: published weights are checked against their own published hash; "
                                  "sha256= is for files and URLs")
        read: list[_Parsed] = []  # the file is parsed before it enters the cache (and when read from it)
        file = hub.fetch(entry, refresh=refresh, timeout=timeout, deadline=deadline,
                         check=lambda path, label: read.append(_parse(path, label)))
        tf = True if tf is None and entry.tf else tf  # timm tf_* files cannot say it; other files can
        parsed = read[-1]
        source = where = entry.name
    else:
        with open_source(source, sha256=sha256, refresh=refresh, timeout=timeout, deadline=deadline) as src:
            parsed = _parse(src.path, src.label)
        file, where = src.final, src.url or str(src.path)
    if parsed.dense is not None:
        return _dense_read(parsed, source, where, file, name, width)
    fmt, canonical, arch = parsed.format, parsed.tensors, parsed.arch

    def holds() -> str:
        return f"{where}: holds {arch.name} width {arch.width:g} weights ({fmt}), not " \
               f"{name or arch.name}" + (f" width {width:g}" if width else "")

    if name and name != arch.name:
        raise MobileNetsError(holds())
    if width and abs(width - arch.width) > 1e-9:
        if parsed.meta is not None:
            raise MobileNetsError(holds())
        try:  # the shapes of some widths coincide: the caller's width, if it fits too
            arch = infer_architecture(canonical, name=arch.name, width=width)
        except MobileNetsError:
            raise MobileNetsError(holds()) from None

    if parsed.meta is not None:
        meta = parsed.meta
        cfg = meta.config
        info = WeightsInfo(str(source), fmt, cfg.name, cfg.width, cfg.num_classes, False, cfg.in_chans,
                           cfg.tf_padding, cfg.bn_eps, meta.preprocessing,
                           tuple(meta.class_names) if meta.class_names else None,
                           fixed_stem=arch.fixed_stem, config=cfg)
        return _Read(info, canonical, parsed.folded, meta, parsed.state, file)

    is_tf = fmt in TF_FORMATS if tf is None else tf
    file_classes = canonical["classifier.weight"].shape[0] if "classifier.weight" in canonical else 0
    background = fmt in TF_FORMATS and file_classes == 1001
    names = tuple(imagenet_labels()) if file_classes - int(background) == 1000 else None
    bn_eps = TF_BN_EPS if is_tf else torchvision.bn_eps(arch.name) if fmt == "torchvision" else 1e-5
    published = entry.preprocessing() if entry is not None else None
    info = WeightsInfo(str(source), fmt, arch.name, arch.width, file_classes, background,
                       canonical["stem.conv.weight"].shape[1], is_tf, bn_eps,
                       published or (TF_INCEPTION if is_tf else IMAGENET), names, fixed_stem=arch.fixed_stem)
    return _Read(info, canonical, parsed.folded, None, parsed.state, file)


def download_weights(reference, *, model: str | None = None, width: float | None = None,
                     refresh: bool = False) -> tuple[hub.PublishedWeights, Path]:
    """Fetch the published weights ``reference`` names (``"timm:mobilenetv3_large_100.ra_in1k"``, or a short
    form with ``model``) into the cache: (entry, local path). The file is read as weights before it counts as
    cached, so a cut or foreign download never stays there. Raises :class:`MobileNetsError`."""
    return hub.download(reference, model=model, width=width, refresh=refresh, check=_parse)


def _dense_read(parsed: _Parsed, source, where: str, file: Path, name: str | None, width: float | None) -> _Read:
    d = parsed.dense
    cfg = d.config
    if (name and name != cfg.name) or (width and abs(width - cfg.width) > 1e-9):
        raise MobileNetsError(f"{where}: holds {cfg.name} width {cfg.width:g} weights ({d.format}), not "
                              f"{name or cfg.name}" + (f" width {width:g}" if width else ""))
    info = WeightsInfo(str(source), d.format, cfg.name, cfg.width, cfg.num_classes, False,
                       getattr(cfg, "in_chans", 3), getattr(cfg, "tf_padding", False), getattr(cfg, "bn_eps", 1e-5),
                       d.preprocessing, tuple(d.class_names) if d.class_names else None, config=cfg)
    return _Read(info, d.state, [], parsed.meta, d.state, file, dense=True)


def inspect_weights(source: str | os.PathLike, *, name: str | None = None, width: float | None = None,
                    tf: bool | None = None, sha256: str | None = None, refresh: bool = False) -> WeightsInfo:
    """What ``source`` holds: format, architecture, width, classes, and the options and preprocessing the
    weights need (see :class:`WeightsInfo`). Raises :class:`MobileNetsError` for anything unreadable."""
    return read_weights(source, name=name, width=width, tf=tf, sha256=sha256, refresh=refresh).info


def _short(keys, n: int = 5) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def _load_dense(model: nn.Module, read: _Read) -> LoadReport:
    """A detector's / segmenter's weights into ``model`` (the same architecture), all or nothing."""
    info = read.info
    cfg = model.config
    if cfg.name != info.model:
        raise MobileNetsError(f"{info.source}: {info.format} weights of {info.model}, not {cfg.name} (model left "
                              "unchanged)")
    load_exact(model, read.tensors, info.source, f"this {cfg.name}")
    report = LoadReport(info, loaded=sorted(read.tensors))
    if info.config is not None and info.config != cfg:
        report.messages.append(f"the weights' model options ({info.config.to_dict()}) differ from the model's "
                               f"({cfg.to_dict()})")
    for msg in report.messages:
        _warn(f"{info.source}: {msg}")
    return report


def _load(model: nn.Module, read: _Read, *, keep_background: bool) -> LoadReport:
    if read.dense:
        return _load_dense(model, read)
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
        cut = [k for k in incoming if k.startswith(("head_conv.", "head_bn.", "classifier.", "body."))]
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
        stem = [" (fixed stem)" if fixed else "" for fixed in (info.fixed_stem, getattr(cfg, "fixed_stem", False))]
        raise MobileNetsError(
            f"{info.source}: {info.format} weights for {info.model} width {info.width:g}{stem[0]} do not fit "
            f"{cfg.name} width {cfg.width:g}{stem[1]}: " + "; ".join(p for p in parts if p) + " (model left unchanged)")

    new_state = dict(current)
    for k, v in incoming.items():
        new_state[k] = v.to(dtype=current[k].dtype)
    if report.reinitialized:
        w = torch.empty_like(current["classifier.weight"])
        new_state["classifier.weight"] = nn.init.normal_(w, 0, 0.01)  # as MobileNet._init_weights
        new_state["classifier.bias"] = torch.zeros_like(current["classifier.bias"])
    model.load_state_dict(new_state)  # one call: all or nothing
    report.loaded = sorted(incoming)
    if hasattr(model, "preprocessing"):  # MobileNet / FeatureExtractor: their pretrained_cfg follows the weights
        model.preprocessing = info.preprocessing

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


def _check_model(model) -> None:
    from ..features import FeatureExtractor
    from ..model import MobileNet

    config = getattr(model, "config", None)
    if isinstance(model, nn.Module) and is_dense_name(getattr(config, "name", None)):
        return  # a detector / segmenter built by create_model
    if not isinstance(model, (MobileNet, FeatureExtractor)):
        raise MobileNetsError(f"weights load into a mobilenets model (create_model(...)), not a "
                              f"{type(model).__name__}")


def load_weights(model: nn.Module, source: str | os.PathLike, *, keep_background: bool = False,
                 tf: bool | None = None, sha256: str | None = None, refresh: bool = False) -> LoadReport:
    """Load weights from ``source`` (a path or http(s) URL, any supported format) into ``model`` in place.

    All or nothing: the tensors are mapped and checked first and loaded with one ``load_state_dict``; a
    file for another architecture or width raises :class:`MobileNetsError` listing the missing, unexpected
    and mismatched keys, and ``model`` is left unchanged. A classifier of another class count (fine-tuning)
    is not loaded but re-initialised, with a warning and a note in the returned :class:`LoadReport`.
    TF 1001-class heads lose their background logit (index 0) unless ``keep_background``.
    """
    _check_model(model)
    _check_flag(keep_background, "keep_background")
    config = getattr(model, "config", None)
    entry = hub.lookup(source, model=getattr(config, "name", None), width=getattr(config, "width", None))
    if entry is not None:  # "IMAGENET1K_V1", "timm": this model's published file
        source = entry.name
    return _load(model, read_weights(source, tf=tf, sha256=sha256, refresh=refresh), keep_background=keep_background)


def _build(read: _Read, *, num_classes: int | None, keep_background: bool,
           options: dict) -> tuple[nn.Module, LoadReport]:
    from ..factory import create_model

    info = read.info
    if read.dense:
        if num_classes is not None and num_classes != info.file_classes:
            raise MobileNetsError(f"{info.source}: {info.model} weights have {info.file_classes} class slots; "
                                  "train a new head with 'mobilenets train-detection/-segmentation --weights' "
                                  f"rather than num_classes={num_classes}")
        model = build_dense(info.config)
        if options:
            raise MobileNetsError(f"{info.source}: {info.model} is rebuilt from its own config; options "
                                  f"{sorted(options)} do not apply")
        return model, _load_dense(model, read)
    default_classes = info.file_classes if keep_background else info.num_classes
    base = {"tf_padding": info.tf_padding, "bn_eps": info.bn_eps, "in_chans": info.in_chans,
            "fixed_stem": info.fixed_stem}
    if info.config is not None:  # a mobilenets checkpoint: every builder option it records
        base.update({k: v for k, v in info.config.to_dict().items() if k not in ("name", "width", "num_classes")})
    model = create_model(info.model, width=info.width,
                         num_classes=default_classes if num_classes is None else num_classes, **{**base, **options})
    return model, _load(model, read, keep_background=keep_background)


def model_from_weights(source: str | os.PathLike, *, name: str | None = None, width: float | None = None,
                       num_classes: int | None = None, keep_background: bool = False, tf: bool | None = None,
                       sha256: str | None = None, refresh: bool = False, **options) -> tuple[nn.Module, LoadReport]:
    """Build the model ``source`` holds (architecture and width inferred unless given) and load it.

    The model gets the options the weights need (``tf_padding``, ``bn_eps``, ``fixed_stem``; a checkpoint's
    whole config) unless ``options`` say otherwise, and the file's class count (background dropped unless
    ``keep_background``) unless ``num_classes`` is given, in which case the classifier is re-initialised
    (fine-tuning). Returns (model, :class:`LoadReport`); ``report.info`` has the preprocessing and class names.
    """
    from ..factory import check_options

    _check_flag(keep_background, "keep_background")
    check_options(name, options)  # before the file is read (or downloaded)
    read = read_weights(source, name=name, width=width, tf=tf, sha256=sha256, refresh=refresh)
    return _build(read, num_classes=num_classes, keep_background=keep_background, options=options)


def convert_weights(source: str | os.PathLike, destination: str | os.PathLike, *, name: str | None = None,
                    width: float | None = None, keep_background: bool = False, tf: bool | None = None,
                    sha256: str | None = None, refresh: bool = False) -> LoadReport:
    """Write the weights in ``source`` (any supported format) as a mobilenets checkpoint at ``destination``
    (atomically), with the model config, the class names (ImageNet for 1000/1001-class files) and the
    preprocessing the weights need. Returns the :class:`LoadReport` of the load.

    The checkpoint is a safetensors file: a ``destination`` not named ``*.safetensors`` (``out.pth``, which
    readers would take for a pickle) is refused before anything is read, naming the right name."""
    from ..checkpoint import CheckpointMeta, save_checkpoint

    destination = output_file(destination, "checkpoint")
    if destination.suffix.lower() != ".safetensors":
        raise MobileNetsError(f"{destination}: a mobilenets checkpoint is a safetensors file; name it "
                              f"{destination.with_suffix('.safetensors').name}")
    _check_flag(keep_background, "keep_background")
    read = read_weights(source, name=name, width=width, tf=tf, sha256=sha256, refresh=refresh)
    model, report = _build(read, num_classes=None, keep_background=keep_background, options={})
    info = report.info
    names = info.names_for(model.config.num_classes, keep_background=keep_background)
    if read.dense:
        names = list(info.class_names) if info.class_names else None
    meta = CheckpointMeta(
        config=model.config,
        class_names=names,
        preprocessing=info.preprocessing,
        extra={"converted_from": source_name(source), "source_format": info.format,
               "source_sha256": sha256sum(read.file)},
    )
    save_checkpoint(model, destination, meta)
    return report
