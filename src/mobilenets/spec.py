"""Typed rows for the papers' architecture tables.

Each architecture (``mobilenet_v1.py`` ... ``mobilenet_v4.py``) is a tuple of these rows,
one per row of the paper's table, so a reader can hold the code next to the paper. Channel counts are the
paper's (width 1.0); the builder in ``model.py`` applies the width multiplier.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

__all__ = ["Conv", "DepthwiseSep", "Bottleneck", "Bneck", "FusedIB", "UIB", "MQA", "Head", "Architecture", "Row"]


@dataclass(frozen=True)
class Conv:
    """A plain "conv2d" row: kxk conv + BN + activation (the stem, and the last 1x1 conv of V2/V3)."""

    kernel: int
    out: int
    stride: int
    act: str
    width_floor_one: bool = False  # channels scale by max(width, 1): V2's last 1x1 conv (V2 section 5.1)


@dataclass(frozen=True)
class DepthwiseSep:
    """A V1 Table 1 "Conv dw / s + Conv 1x1" pair, repeated ``n`` times (the "5x" row)."""

    kernel: int
    out: int
    stride: int
    n: int = 1
    act: str = "relu6"


@dataclass(frozen=True)
class Bottleneck:
    """A V2 Table 2 row: expansion factor t, output channels c, repeats n, stride s of the first repeat.
    The expansion width is t times the block's actual input channels (V2 Table 1)."""

    t: int
    c: int
    n: int
    s: int
    act: str = "relu6"


@dataclass(frozen=True)
class Bneck:
    """A V3 Table 1/2 row: kernel, expansion size, output channels, squeeze-excite, nonlinearity, stride."""

    kernel: int
    exp: int
    out: int
    se: bool
    act: str
    stride: int


@dataclass(frozen=True)
class Head:
    """What follows the last stage: global average pool, an optional 1x1 conv without BN on the pooled
    features (V3's "conv2d 1x1, NBN" rows), dropout, the classifier."""

    hidden: int | None = None  # V3's 1280 / 1024
    act: str | None = None
    dropout: float = 0.2
    # True: ``hidden`` scales by max(width, 1); False: never width-scaled (see mobilenet_v3.py for why).
    width_floor_one: bool = False
    # True: the hidden 1x1 conv has batch norm and no bias (V4, TF Model Garden's "convbn 1x1 1280" after the
    # global pooling); False: a bias and no norm (V3's "NBN").
    norm: bool = False


@dataclass(frozen=True)
class FusedIB:
    """A V4 "FusedIB" row (TF Model Garden ``fused_ib``): kxk full conv expanding the input ``exp`` times + BN +
    act, then 1x1 projection + BN (linear); residual when shapes allow."""

    kernel: int
    stride: int
    out: int
    exp: float
    act: str = "relu"


@dataclass(frozen=True)
class UIB:
    """A V4 Universal Inverted Bottleneck row, in TF Model Garden's ``uib(start_dw_ks, middle_dw_ks, strides,
    filters, expand_ratio)`` order. A kernel of 0 means "no such depthwise conv": (0, k) is the inverted
    bottleneck (IB), (k, 0) ConvNext-like, (0, 0) FFN, (k, k') ExtraDW. The stride goes to the middle depthwise
    conv when there is one (TF ``middle_dw_downsample=True``), else to the start one. The expansion width is
    ``exp`` times the block's actual input channels. ``layer_scale``: the hybrids' per-channel output scale
    (TF ``use_layer_scale``, initialised to 1e-5)."""

    start_dw: int
    mid_dw: int
    stride: int
    out: int
    exp: float
    act: str = "relu"
    layer_scale: bool = False


@dataclass(frozen=True)
class MQA:
    """A V4 Mobile MQA row (TF Model Garden ``mhsa`` with ``use_multi_query=True``): batch norm of the input,
    multi-query attention (``heads`` query heads of ``key_dim``, one shared key head of ``key_dim`` and value
    head of ``value_dim``), keys and values optionally downsampled by a stride-``kv_stride`` depthwise conv
    (kernel ``kv_kernel``) + BN, output projection to ``out`` channels, layer scale, residual."""

    out: int
    heads: int
    key_dim: int
    value_dim: int
    kv_stride: int = 1
    kv_kernel: int = 3  # TF BlockSpec.downsampling_dw_kernel_size default
    layer_scale: bool = True


Row = Union[Conv, DepthwiseSep, Bottleneck, Bneck, FusedIB, UIB, MQA]


@dataclass(frozen=True)
class Architecture:
    """A whole network: the stem row, the body rows (everything between stem and pooling), the head."""

    name: str
    stem: Conv
    body: tuple[Row, ...]
    head: Head
