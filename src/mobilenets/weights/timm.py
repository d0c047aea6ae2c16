"""timm state dicts: ``mobilenetv1_*``, ``mobilenetv2_*``, ``mobilenetv3_*``, ``tf_mobilenetv3_*``, ``mobilenetv4_*``.

timm's EfficientNet-style builder names the stem ``conv_stem`` + ``bn1``, the blocks ``blocks.{stage}.{i}``
with readable sub-modules (the same names as ours for inverted residuals), and the head ``conv_head``
(+ ``bn2`` for V2, whose last 1x1 conv has BN; V3's has a bias and no BN, our ``head_conv``).

timm's first V2/V3 block is a ``DepthwiseSeparableConv`` (``conv_dw, bn1, [se], conv_pw, bn2``); ours is an
inverted residual without expansion (``conv_dw, bn2, [se], conv_pwl, bn3``), hence the renaming variant.

V4 (``mobilenetv4_*``): timm's ``UniversalInvertedResidual`` nests conv + BN pairs (``dw_start``, ``pw_exp``,
``dw_mid``, ``pw_proj``), ``EdgeResidual`` (FusedIB) has our names, ``MobileAttention`` nests its projections
under ``attn.{query,key,value,output}``; the head conv has batch norm (``norm_head``, our ``head_bn``).

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

# V4: UIB (start / middle depthwise convs optional, layer scale in the hybrids), FusedIB, Mobile MQA.
_UIB_START = {"dw_start.conv": "conv_dw_start", "dw_start.bn": "bn_start"}
_UIB_CORE = {"pw_exp.conv": "conv_pw", "pw_exp.bn": "bn1", "pw_proj.conv": "conv_pwl", "pw_proj.bn": "bn3"}
_UIB_MID = {"dw_mid.conv": "conv_dw", "dw_mid.bn": "bn2"}
_LAYER_SCALE = {"layer_scale": "layer_scale"}
_FUSED_IB = {"conv_exp": "conv_exp", "bn1": "bn1", "conv_pwl": "conv_pwl", "bn2": "bn2"}
_MQA_CORE = {"norm": "norm", "attn.query.proj": "query_proj", "attn.key.proj": "key_proj",
             "attn.value.proj": "value_proj", "attn.output.proj": "out_proj"}
_MQA_DOWN = {"attn.key.down_conv": "key_down", "attn.key.norm": "key_bn", "attn.value.down_conv": "value_down",
             "attn.value.norm": "value_bn"}
V4_VARIANTS = (
    *({**start, **_UIB_CORE, **mid, **ls} for start in ({}, _UIB_START) for mid in ({}, _UIB_MID)
      for ls in ({}, _LAYER_SCALE)),
    *({**_MQA_CORE, **down, **ls} for down in ({}, _MQA_DOWN) for ls in ({}, _LAYER_SCALE)),
    _FUSED_IB,
    _CONV_BN,
)

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
        (r"norm_head\.", "head_bn", 0),  # V4's head conv has batch norm
        (r"classifier\.", "classifier", 0),
    )
    is_v4 = any(k.startswith("norm_head.") for k in state)
    is_v1 = not is_v4 and not any(".conv_pwl." in k for k in state)
    table = BlockTable(prefixes, V4_VARIANTS if is_v4 else V1_VARIANTS if is_v1 else V23_VARIANTS)
    return rename_blocks(state, table, block_index=lambda m: flat[(int(m["s"]), int(m["j"]))])
