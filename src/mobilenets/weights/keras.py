"""Keras Applications HDF5 files: ``MobileNet``, ``MobileNetV2``, ``MobileNetV3Large`` / ``MobileNetV3Small``.

Read with h5py (no Keras needed), in the three layouts Keras writes:

- full model, legacy HDF5 (``model.save("x.h5")``, Keras 2 and 3): ``model_weights/<layer>/<weight name>``;
- weights only, legacy HDF5 (Keras 2 ``save_weights("x.h5")``, the files Keras Applications downloads):
  the same without the ``model_weights`` group;
- weights only, Keras 3 (``save_weights("x.weights.h5")``): ``layers/<class name>_<i>/vars/<j>``: layers
  are named by class and numbered in model order, so these map by position (see ``_positional``).

Layer names are normalised (lower case, ``/`` -> ``_``, ``BatchNorm`` -> ``bn``) so tf.keras 2 names
(``expanded_conv_1/expand/BatchNorm``) and Keras 3 names (``expanded_conv_1_expand_bn``) share one table.
Keras's padding is TF "SAME" (V1's stride-2 depthwise convs pad bottom/right only, which is SAME on even
inputs: every stride-2 input of a 32k x 32k image) and its batch-norm epsilon is 1e-3: models built for
these files get ``tf_padding=True, bn_eps=1e-3``.

Keras's MobileNetV3 keeps its stem at 16 channels at every ``alpha`` (the reference code and torchvision
scale it) and scales Large's 1280 head conv above alpha 1. At alphas 0.75 and 1.0 (the only ones Keras
publishes V3 weights for) the scaled stem is 16 too; at the other alphas up to 1 the file is detected as our
model with ``fixed_stem=True``. Keras V3-Large above alpha 1 (a scaled 1280 head) has no registered twin and
fails with a clear "shapes match no width" error.

MobileNetV3 models built with ``include_preprocessing=True`` (the default) start with a ``Rescaling`` layer
that takes [0, 255] pixels to [-1, 1]; it has no weights, and our preprocessing (``TF_INCEPTION``) does
the same, so both kinds of file load alike.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from ..errors import MobileNetsError

__all__ = ["read_h5", "to_canonical", "V1", "V2", "V3"]

# Rows: (their normalised layer name, full match; our module; kind). ``{n}`` is the block number from the
# (?P<n>) group plus ``offset`` (a missing group means block 0); ``{last}`` is the body's last (1x1 conv) row.
# Kinds: conv (HWIO kernel), dw (depthwise kernel), bn, dense (the V2 classifier), fc1x1 (a 1x1 conv used as
# the classifier: V1 ``conv_preds``, V3 ``logits``).
V1 = (
    ("conv1", "stem.conv", "conv"),
    ("conv1_bn", "stem.bn", "bn"),
    (r"conv_dw_(?P<n>\d+)", "body.{n}.conv_dw", "dw"),
    (r"conv_dw_(?P<n>\d+)_bn", "body.{n}.bn1", "bn"),
    (r"conv_pw_(?P<n>\d+)", "body.{n}.conv_pw", "conv"),
    (r"conv_pw_(?P<n>\d+)_bn", "body.{n}.bn2", "bn"),
    ("conv_preds", "classifier", "fc1x1"),
)
V1_OFFSET = -1  # conv_dw_1 is our body.0

V2 = (
    ("conv1", "stem.conv", "conv"),
    ("bn_conv1", "stem.bn", "bn"),
    ("expanded_conv_depthwise", "body.0.conv_dw", "dw"),  # block 0 (t = 1): no expansion conv
    ("expanded_conv_depthwise_bn", "body.0.bn2", "bn"),
    ("expanded_conv_project", "body.0.conv_pwl", "conv"),
    ("expanded_conv_project_bn", "body.0.bn3", "bn"),
    (r"block_(?P<n>\d+)_expand", "body.{n}.conv_pw", "conv"),
    (r"block_(?P<n>\d+)_expand_bn", "body.{n}.bn1", "bn"),
    (r"block_(?P<n>\d+)_depthwise", "body.{n}.conv_dw", "dw"),
    (r"block_(?P<n>\d+)_depthwise_bn", "body.{n}.bn2", "bn"),
    (r"block_(?P<n>\d+)_project", "body.{n}.conv_pwl", "conv"),
    (r"block_(?P<n>\d+)_project_bn", "body.{n}.bn3", "bn"),
    ("conv_1", "body.{last}.conv", "conv"),  # the 1280 1x1 conv
    ("conv_1_bn", "body.{last}.bn", "bn"),
    ("predictions", "classifier", "dense"),
)

_B = r"expanded_conv_(?:(?P<n>\d+)_)?"  # block 0 is "expanded_conv_", block i "expanded_conv_{i}_"
V3 = (
    ("conv", "stem.conv", "conv"),
    ("conv_bn", "stem.bn", "bn"),
    (_B + "expand", "body.{n}.conv_pw", "conv"),
    (_B + "expand_bn", "body.{n}.bn1", "bn"),
    (_B + "depthwise", "body.{n}.conv_dw", "dw"),
    (_B + "depthwise_bn", "body.{n}.bn2", "bn"),
    (_B + "squeeze_excite_conv", "body.{n}.se.conv_reduce", "conv"),
    (_B + "squeeze_excite_conv_1", "body.{n}.se.conv_expand", "conv"),
    (_B + "project", "body.{n}.conv_pwl", "conv"),
    (_B + "project_bn", "body.{n}.bn3", "bn"),
    ("conv_1", "body.{last}.conv", "conv"),  # 1x1 conv to 6x the last block's channels (960 / 576)
    ("conv_1_bn", "body.{last}.bn", "bn"),
    ("conv_2", "head_conv", "conv"),  # the 1x1 conv without BN after pooling (1280 / 1024)
    ("logits", "classifier", "fc1x1"),
)

# Variable names in Keras order; Keras 3 .weights.h5 files store them by position in this same order.
_VARS = {
    "conv": ("kernel", "bias"),
    "dw": ("depthwise_kernel", "bias"),
    "fc1x1": ("kernel", "bias"),
    "dense": ("kernel", "bias"),
    "bn": ("gamma", "beta", "moving_mean", "moving_variance"),
}
_TORCH_NAMES = {"kernel": "weight", "depthwise_kernel": "weight", "bias": "bias", "gamma": "weight",
                "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
_LAYOUT = {  # Keras kernel layout -> torch
    "conv": lambda w: w.permute(3, 2, 0, 1),  # (kh, kw, in, out) -> (out, in, kh, kw)
    "dw": lambda w: w.permute(2, 3, 0, 1),  # (kh, kw, C, 1) -> (C, 1, kh, kw)
    "fc1x1": lambda w: w[0, 0].T,  # (1, 1, in, out) -> (out, in)
    "dense": lambda w: w.T,  # (in, out) -> (out, in)
}


def normalise(name: str) -> str:
    return name.lower().replace("/", "_").replace("batchnorm", "bn")


# The arrays of an HDF5 file may declare at most 16x the file's size + 64 MiB. Keras writes weights uncompressed,
# so a real file declares about its own size; a chunked, compressed dataset of fill values declares terabytes in
# kilobytes (a decompression bomb that numpy would try to allocate).
_H5_EXPANSION = 16
_H5_SLACK_BYTES = 64 << 20


class _Reader:
    """Reads a file's weight datasets, refusing what is not plainly stored in this file: external storage and
    virtual datasets (their bytes come from other files on this machine), external links (which open another
    file), and arrays that together declare far more bytes than the file holds."""

    def __init__(self, f, path: Path):
        self.file = f
        self.size = path.stat().st_size
        self.budget = _H5_EXPANSION * self.size + _H5_SLACK_BYTES
        self.declared = 0

    def array(self, dataset, where: str) -> np.ndarray:
        """A float array from an HDF5 dataset (a weight), else a :class:`MobileNetsError` naming it."""
        import h5py

        if not isinstance(dataset, h5py.Dataset):
            raise MobileNetsError(f"weight {where} is not an array (an HDF5 {type(dataset).__name__})")
        if dataset.file.id != self.file.id:
            raise MobileNetsError(f"weight {where} links to another file ({dataset.file.filename}); refused")
        if dataset.external or dataset.is_virtual:
            raise MobileNetsError(f"weight {where} takes its bytes from other files (HDF5 "
                                  f"{'external storage' if dataset.external else 'virtual dataset'}); refused")
        if dataset.dtype.kind != "f":
            raise MobileNetsError(f"weight {where} has dtype {dataset.dtype}, not a floating-point type")
        self.declared += int(dataset.size) * dataset.dtype.itemsize
        if self.declared > self.budget:
            raise MobileNetsError(f"weight {where} {tuple(dataset.shape)}: the file's arrays would take "
                                  f"{self.declared / 2**20:,.0f} MiB, far more than its {self.size / 2**20:,.1f} MiB; "
                                  "refused as a decompression bomb")
        return np.asarray(dataset)


def read_h5(path: Path) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Layer name -> [(variable name or position, array)] in Keras order, for any of the three layouts.
    Every variable is a float array stored in this file (else a :class:`MobileNetsError` naming the layer)."""
    import h5py

    layers: dict[str, list[tuple[str, np.ndarray]]] = {}
    try:
        with h5py.File(path, "r") as f:
            read = _Reader(f, path)
            if "layer_names" not in f.attrs and "model_weights" not in f and "layers" in f:  # Keras 3 weights
                for name, group in f["layers"].items():
                    v = group.get("vars") if isinstance(group, h5py.Group) else None
                    if v is not None and len(v):
                        layers[name] = [(str(i), read.array(v[str(i)], f"{name}/vars/{i}")) for i in range(len(v))]
                return layers
            root = f["model_weights"] if "model_weights" in f else f
            if "layer_names" not in root.attrs:
                raise MobileNetsError("an HDF5 file, but not a Keras model or weights file")
            for name in root.attrs["layer_names"]:
                name = name.decode() if isinstance(name, bytes) else str(name)
                group = root[name]
                names = [w.decode() if isinstance(w, bytes) else str(w) for w in group.attrs.get("weight_names", [])]
                if names:
                    layers[name] = [(w.rsplit("/", 1)[-1].split(":")[0], read.array(group[w], w)) for w in names]
    except (OSError, KeyError, ValueError, TypeError, AttributeError, MemoryError) as e:
        first = str(e).strip().split("\n")[0]
        raise MobileNetsError(f"not a readable Keras HDF5 file ({first[:160] or type(e).__name__})") from None
    return layers


# Rank of each kind of Keras kernel (conv / depthwise: (kh, kw, in, out|1); 1x1-conv classifier likewise;
# dense: (in, out)).
_KERNEL_RANK = {"conv": 4, "dw": 4, "fc1x1": 4, "dense": 2}


def _kernel(kind: str, value: np.ndarray, where: str) -> torch.Tensor:
    """A Keras kernel in torch layout, after checking its rank (and the 1x1 of a 1x1-conv classifier)."""
    if value.ndim != _KERNEL_RANK[kind] or (kind == "fc1x1" and value.shape[:2] != (1, 1)):
        raise MobileNetsError(f"layer {where}: kernel of shape {tuple(value.shape)} is not a "
                              f"{'1x1 conv' if kind == 'fc1x1' else f'rank-{_KERNEL_RANK[kind]}'} kernel")
    return _LAYOUT[kind](torch.from_numpy(np.ascontiguousarray(value)).float()).contiguous()


def _family(names: set[str]) -> tuple[str, tuple]:
    if "conv_dw_1" in names:
        return "MobileNet", V1
    if any(n.startswith("block_") for n in names):
        return "MobileNetV2", V2
    if "conv_bn" in names and any(n.startswith("expanded_conv_") for n in names):
        return "MobileNetV3", V3
    raise MobileNetsError("a Keras file, but not a Keras Applications MobileNet / MobileNetV2 / MobileNetV3 "
                          f"(layers: {', '.join(sorted(names)[:6])}, ...)")


# Keras 3 ``.weights.h5`` files name layers by class, numbered in the model's layer order ("conv2d",
# "conv2d_1", ..., "depthwise_conv2d_3", "batch_normalization_12", "dense"), not by layer name. Such a file
# maps by position, kind by kind, onto our modules in forward order (layout.weighted_modules).
_CLASS_NAMES = {"conv2d": "conv", "depthwise_conv2d": "dw", "batch_normalization": "bn", "dense": "dense"}


def _by_class(layers: dict[str, list[tuple[str, np.ndarray]]]) -> dict[str, list[list[np.ndarray]]] | None:
    """Layers grouped by Keras class in model order, or None if the names are not class-based."""
    found: dict[str, list[tuple[int, list[np.ndarray]]]] = {}
    for name, variables in layers.items():
        m = re.fullmatch(r"(.*?)(?:_(\d+))?", name)
        if m[1] not in _CLASS_NAMES:
            return None
        found.setdefault(_CLASS_NAMES[m[1]], []).append((int(m[2] or 0), [v for _, v in variables]))
    return {kind: [v for _, v in sorted(items, key=lambda t: t[0])] for kind, items in found.items()}


def _positional(groups: dict[str, list[list[np.ndarray]]]) -> tuple[str, dict[str, torch.Tensor]]:
    from ..registry import list_models
    from .layout import meta_model, to_canonical as canon, weighted_modules

    convs, dws = groups.get("conv", []), groups.get("dw", [])
    bns, dense = groups.get("bn", []), groups.get("dense", [])
    for kind, items in (("conv", convs), ("dw", dws), ("dense", dense)):
        for i, variables in enumerate(items):
            if not variables or variables[0].ndim != _KERNEL_RANK[kind]:
                raise MobileNetsError(f"Keras 3 weights: {kind} layer {i} has no rank-{_KERNEL_RANK[kind]} kernel")
    classes = dense[0][0].shape[-1] if dense else convs[-1][0].shape[-1] if convs else 0
    dw_kernels = [w[0].shape[0] for w in dws]
    for name in list_models():
        mods = weighted_modules(meta_model(name, classes))
        body = [m for _, m, _ in mods if isinstance(m, torch.nn.Conv2d)]
        n_conv = sum(m.groups == 1 for m in body) + (0 if dense else 1)  # a 1x1 conv classifier counts
        kernels = [m.kernel_size[0] for m in body if m.groups > 1]
        n_bn = sum(bn is not None for _, _, bn in mods)
        if (n_conv, kernels, n_bn, len(dense)) == (len(convs), dw_kernels, len(bns), int(bool(dense))):
            break
    else:
        raise MobileNetsError("a Keras 3 weights file whose layers match no registered MobileNet")
    template = meta_model(name, classes)
    state: dict[str, torch.Tensor] = {}
    conv_it, dw_it, bn_it = iter(convs), iter(dws), iter(bns)
    for mod_name, m, bn in weighted_modules(template):
        if isinstance(m, torch.nn.Linear):
            kind, variables = ("dense", dense[0]) if dense else ("fc1x1", next(conv_it))
        elif m.groups > 1:
            kind, variables = "dw", next(dw_it)
        else:
            kind, variables = "conv", next(conv_it)
        state[f"{mod_name}.weight"] = _kernel(kind, variables[0], mod_name)
        if len(variables) > 1:
            state[f"{mod_name}.bias"] = torch.from_numpy(np.ascontiguousarray(variables[1])).float()
        if bn is not None:
            for param, v in zip(("weight", "bias", "running_mean", "running_var"), next(bn_it)):
                state[f"{bn}.{param}"] = torch.from_numpy(np.ascontiguousarray(v)).float()
    family = {"mobilenet_v1": "MobileNet", "mobilenet_v2": "MobileNetV2"}.get(name, "MobileNetV3")
    return family, canon(state, template)


def to_canonical(layers: dict[str, list[tuple[str, np.ndarray]]]) -> tuple[str, dict[str, torch.Tensor]]:
    """(Keras family name, canonical tensors) from :func:`read_h5`'s layers."""
    groups = _by_class(layers)
    if groups is not None:
        return _positional(groups)
    norm = {normalise(k): v for k, v in layers.items()}
    family, table = _family(set(norm))
    offset = V1_OFFSET if table is V1 else 0
    blocks = {int(m["n"] or 0) for k in norm for pattern, _, _ in table
              if "(?P<n>" in pattern and (m := re.fullmatch(pattern, k))}
    last = max(blocks, default=-1) + 1 + offset
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for name, variables in norm.items():
        for pattern, template, kind in table:
            m = re.fullmatch(pattern, name)
            if m:
                n = int(m["n"] or 0) + offset if "n" in m.groupdict() else 0
                module = template.format(n=n, last=last)
                if len(variables) > len(_VARS[kind]):
                    raise MobileNetsError(f"layer {name} has {len(variables)} weights, a {kind} layer "
                                          f"{len(_VARS[kind])}")
                for i, (var, value) in enumerate(variables):
                    var = var if var in _TORCH_NAMES else _VARS[kind][i]  # Keras 3: by position
                    if var in ("kernel", "depthwise_kernel"):
                        t = _kernel(kind, value, name)
                    else:
                        t = torch.from_numpy(np.ascontiguousarray(value)).float()
                    out[f"{module}.{_TORCH_NAMES[var]}"] = t
                break
        else:
            unknown.append(name)
    if unknown:
        raise MobileNetsError(f"Keras {family} file with layers this table does not know: {', '.join(sorted(unknown))}")
    return family, out
