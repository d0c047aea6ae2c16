"""The neutral naming every importer targets, and the pieces the per-format tables share.

Every importer turns a foreign file into tensors under *canonical* keys, which are our state-dict keys with
the stage grouping flattened away: ``stem.conv.weight``, ``body.7.conv_dw.weight`` (the 8th block of the
body, counting from 0 across all stages), ``head_conv.weight``, ``classifier.weight``. Flattening makes the
tables independent of how our stages group blocks; :func:`to_model_keys` puts the stage back for a model.

Torch-ecosystem tables (torchvision, timm) are written as two levels:

- ``prefixes``: (their block prefix regex -> our block), e.g. ``features\\.(\\d+)\\.`` -> ``body.{n-1}``;
- ``variants``: for each kind of block, their sub-module names -> ours, e.g. ``conv.1.0`` -> ``conv_dw``.
  A block's variant is the one whose sub-module set equals the set found in the file, so a block with or
  without expansion conv / squeeze-excite is matched exactly, never guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from ..errors import MobileNetsError
from ..layers import make_divisible

__all__ = ["BlockTable", "rename_blocks", "model_blocks", "to_model_keys", "to_canonical", "canonical_shapes",
           "infer_architecture", "Architecture", "CANDIDATE_WIDTHS", "BN_PARAMS", "weighted_modules", "meta_model",
           "SHAPE_OPTIONS"]

# Batch-norm tensors as torch names them (num_batches_tracked is bookkeeping: never imported, never required).
BN_PARAMS = ("weight", "bias", "running_mean", "running_var")

# Widths tried when a file does not say its width: every published width (see published.py and timm's
# mobilenetv2_110d/120d/150d) and the common extras.
CANDIDATE_WIDTHS = (0.25, 0.35, 0.5, 0.75, 1.0, 1.1, 1.2, 1.25, 1.3, 1.4, 1.5, 2.0)


@dataclass(frozen=True)
class BlockTable:
    """A torch-ecosystem key table: ``prefixes`` rows (their regex with an optional ``(?P<n>\\d+)`` group,
    our block template with ``{n}`` and an offset) and ``variants`` (their sub-module -> our sub-module)."""

    prefixes: tuple[tuple[str, str, int], ...]
    variants: tuple[dict[str, str], ...]


def _split_param(key: str) -> tuple[str, str]:
    module, _, param = key.rpartition(".")
    return module, param


def rename_blocks(state: dict[str, torch.Tensor], table: BlockTable, *, block_index=None) -> dict[str, torch.Tensor]:
    """Rename ``state`` with ``table``; ``block_index`` maps a regex match to the flat block number (default:
    the ``n`` group plus the row's offset). Raises :class:`MobileNetsError` for any key the table cannot place."""
    blocks: dict[str, dict[str, torch.Tensor]] = {}  # our block -> {their remainder: tensor}
    unplaced = []
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        for pattern, template, offset in table.prefixes:
            m = re.match(pattern, key)
            if m:
                if "n" in m.groupdict():
                    n = block_index(m) if block_index else int(m["n"]) + offset
                    ours = template.format(n=n)
                else:
                    ours = template
                blocks.setdefault(ours, {})[key[m.end():]] = value
                break
        else:
            unplaced.append(key)
    if unplaced:
        raise MobileNetsError(f"unexpected keys for this layout: {_short(unplaced)}")
    out = {}
    for ours, sub in blocks.items():
        modules = {_split_param(k)[0] for k in sub}
        if modules == {""}:  # a bare layer (e.g. "classifier.weight"): no sub-modules to rename
            out.update({f"{ours}.{k}": v for k, v in sub.items()})
            continue
        variant = next((v for v in table.variants if set(v) == modules), None)
        if variant is None:
            raise MobileNetsError(f"block {ours!r} has sub-modules {sorted(modules)}, "
                                  "which match no known block layout")
        for k, v in sub.items():
            module, param = _split_param(k)
            out[f"{ours}.{variant[module]}.{param}"] = v
    return out


def _short(keys, n: int = 6) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def model_blocks(model: nn.Module) -> list[str]:
    """Our module prefix of every body block in order: ``stages.{s}.{j}``."""
    return [f"stages.{s}.{j}" for s, stage in enumerate(model.stages) for j in range(len(stage))]


def to_model_keys(canonical: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Canonical keys (``body.N.*``) -> ``model``'s state-dict keys (``stages.S.J.*``). Keys for blocks the
    model does not have are kept as ``body.N.*`` so they show up as unexpected."""
    blocks = model_blocks(model)
    out = {}
    for key, value in canonical.items():
        m = re.fullmatch(r"body\.(\d+)\.(.+)", key)
        if m and int(m[1]) < len(blocks):
            key = f"{blocks[int(m[1])]}.{m[2]}"
        out[key] = value
    return out


def to_canonical(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Our state-dict keys -> canonical keys (drops num_batches_tracked)."""
    index = {p: i for i, p in enumerate(model_blocks(model))}
    out = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        parts = key.split(".", 3)
        if len(parts) == 4 and f"stages.{parts[1]}.{parts[2]}" in index:
            key = f"body.{index[f'stages.{parts[1]}.{parts[2]}']}.{parts[3]}"
        out[key] = value
    return out


@lru_cache(maxsize=256)
def _shapes(name: str, width: float, num_classes: int, in_chans: int,
            options: tuple[tuple[str, object], ...]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    from ..factory import create_model

    with torch.device("meta"):
        model = create_model(name, width=width, num_classes=num_classes, in_chans=in_chans, **dict(options))
    return tuple((k, tuple(v.shape)) for k, v in to_canonical(model.state_dict(), model).items())


# Builder options that change tensor shapes (the rest, e.g. padding, BN eps, dilation, do not).
SHAPE_OPTIONS = ("fixed_stem", "tail")


def canonical_shapes(name: str, width: float, num_classes: int = 1000, in_chans: int = 3,
                     **options) -> dict[str, tuple]:
    """Canonical key -> shape of a registered model (built on the meta device: no memory, no init).
    ``options``: builder options (only :data:`SHAPE_OPTIONS` matter); raises :class:`MobileNetsError` for
    values out of range."""
    opts = tuple(sorted((k, v) for k, v in options.items() if k in SHAPE_OPTIONS))
    return dict(_shapes(name, float(width), int(num_classes), int(in_chans), opts))


@dataclass(frozen=True)
class Architecture:
    """What :func:`infer_architecture` found: the registered model, its width, and whether the stem keeps its
    table width (``fixed_stem``: timm ``mobilenetv3_*_050``, Keras V3 at other alphas than 0.75 / 1.0)."""

    name: str
    width: float
    fixed_stem: bool = False


def _dim(shape: tuple[int, ...] | None, i: int) -> int:
    return shape[i] if shape is not None and len(shape) > i else -1


def infer_architecture(canonical: dict[str, torch.Tensor], *, name: str | None = None,
                       width: float | None = None) -> Architecture:
    """The registered architecture whose canonical keys and shapes equal ``canonical``'s.

    The key set identifies the model (V1/V2/V3, Large/Small, minimalistic: no SE keys and 3x3 depthwise
    kernels); the shapes identify the width among :data:`CANDIDATE_WIDTHS` (the stem scaled with it, or kept
    at its table width: ``fixed_stem``). ``name`` / ``width`` restrict the search. Raises
    :class:`MobileNetsError` when nothing matches.
    """
    from ..registry import list_models

    have = {k: tuple(v.shape) for k, v in canonical.items()}
    num_classes = max(_dim(have.get("classifier.weight"), 0), 0)
    in_chans = _dim(have.get("stem.conv.weight"), 1)
    stem_out = _dim(have.get("stem.conv.weight"), 0)
    names = [name] if name else list_models()
    widths = [width] if width else CANDIDATE_WIDTHS
    if in_chans < 1 or stem_out < 1:
        raise MobileNetsError(f"the weights' stem (stem.conv.weight {have.get('stem.conv.weight')}) is not a "
                              "convolution kernel")
    same_keys = [n for n in names if set(canonical_shapes(n, 1.0, num_classes, in_chans)) == set(have)]
    for n in same_keys:
        base = canonical_shapes(n, 1.0, num_classes, in_chans)["stem.conv.weight"][0]
        for w in widths:
            for fixed in (False, True):
                if (base if fixed else make_divisible(base * w, 8)) != stem_out:  # cheap filter first
                    continue
                if canonical_shapes(n, w, num_classes, in_chans, fixed_stem=fixed) == have:
                    return Architecture(n, w, fixed)
    what = f"{name or 'registered model'}" + (f" at width {width:g}" if width else "")
    if not same_keys:
        raise MobileNetsError(f"the weights' layers match no {what} ({len(have)} tensors)")
    raise MobileNetsError(f"the weights' layers look like {same_keys[0]}, but their shapes match no width of it "
                          f"among {', '.join(f'{w:g}' for w in widths)} (stem scaled or fixed)")


def weighted_modules(model: nn.Module) -> list[tuple[str, nn.Module, str | None]]:
    """(name, module, name of the BatchNorm directly after it or None) for every conv / linear of ``model``
    in forward order (our modules are registered in the order they run). Positional formats (TFLite,
    Keras 3 weights files) map onto this list."""
    mods = list(model.named_modules())
    out = []
    for i, (name, m) in enumerate(mods):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            bn = None
            for nxt_name, nxt in mods[i + 1:]:
                if isinstance(nxt, (nn.Conv2d, nn.Linear)):
                    break
                if isinstance(nxt, nn.BatchNorm2d):
                    bn = nxt_name
                    break
            out.append((name, m, bn))
    return out


def meta_model(name: str, num_classes: int = 1000, width: float = 1.0) -> nn.Module:
    """A registered model on the meta device (structure and shapes only: no memory, no init cost)."""
    from ..factory import create_model

    with torch.device("meta"):
        return create_model(name, width=width, num_classes=num_classes)
