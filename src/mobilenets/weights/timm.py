"""timm state dicts: ``mobilenetv1_*``, ``mobilenetv2_*``, ``mobilenetv3_*``, ``tf_mobilenetv3_*``.

timm's EfficientNet-style builder names the stem ``conv_stem`` + ``bn1``, the blocks ``blocks.{stage}.{i}``
with readable sub-modules (the same names as ours for inverted residuals), and the head ``conv_head``
(+ ``bn2`` for V2, whose last 1x1 conv has BN; V3's has a bias and no BN, our ``head_conv``).

timm's first V2/V3 block is a ``DepthwiseSeparableConv`` (``conv_dw, bn1, [se], conv_pw, bn2``); ours is an
inverted residual without expansion (``conv_dw, bn2, [se], conv_pwl, bn3``), hence the renaming variant.

``tf_*`` models were ported from TensorFlow: they need ``tf_padding=True, bn_eps=1e-3``, which a state dict
does not record — pass them yourself (``create_model(..., tf_padding=True, bn_eps=1e-3)``, CLI ``--tf``).
"""

from __future__ import annotations

import re

import torch

from .layout import BN_PARAMS, BlockTable, rename_blocks

__all__ = ["detect", "to_canonical"]

_SE = {"se.conv_reduce": "se.conv_reduce", "se.conv_expand": "se.conv_expand"}
_IR = {"conv_pw": "conv_pw", "bn1": "bn1", "conv_dw": "conv_dw", "bn2": "bn2", "conv_pwl": "conv_pwl", "bn3": "bn3"}
_DS_AS_IR = {"conv_dw": "conv_dw", "bn1": "bn2", "conv_pw": "conv_pwl", "bn2": "bn3"}
_DS_AS_V1 = {"conv_dw": "conv_dw", "bn1": "bn1", "conv_pw": "conv_pw", "bn2": "bn2"}
_CONV_BN = {"conv": "conv", "bn1": "bn"}  # ConvBnAct: V3's last 1x1 conv (960 / 576)

# V1 blocks are all DepthwiseSeparableConv, identical to ours.
V1_VARIANTS = (_DS_AS_V1,)
# V2 / V3: inverted residuals with or without SE, the first (depthwise-separable) block, ConvBnAct.
V23_VARIANTS = (_IR, {**_IR, **_SE}, _DS_AS_IR, {**_DS_AS_IR, **_SE}, _CONV_BN)

_BLOCK = r"blocks\.(?P<n>(?P<s>\d+)\.(?P<j>\d+))\."


def detect(keys: set[str]) -> bool:
    return "conv_stem.weight" in keys and any(k.startswith("blocks.") for k in keys)


def to_canonical(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # timm nests blocks by stage: number them in order to get our flat body index.
    pairs = sorted({tuple(map(int, m.groups()[1:])) for k in state if (m := re.match(_BLOCK, k))})
    flat = {p: i for i, p in enumerate(pairs)}
    last = len(pairs)
    has_head_bn = f"bn2.{BN_PARAMS[0]}" in state  # V2: conv_head + bn2 is the last body conv (1280)
    prefixes = (
        (_BLOCK, "body.{n}", 0),
        (r"conv_stem\.", "stem.conv", 0),
        (r"bn1\.", "stem.bn", 0),
        (r"conv_head\.", f"body.{last}.conv" if has_head_bn else "head_conv", 0),
        (r"bn2\.", f"body.{last}.bn", 0),
        (r"classifier\.", "classifier", 0),
    )
    is_v1 = not any(".conv_pwl." in k for k in state)
    table = BlockTable(prefixes, V1_VARIANTS if is_v1 else V23_VARIANTS)
    return rename_blocks(state, table, block_index=lambda m: flat[(int(m["s"]), int(m["j"]))])
