"""Typed rows for the papers' architecture tables.

Each architecture (``mobilenet_v1.py``, ``mobilenet_v2.py``, ``mobilenet_v3.py``) is a tuple of these rows,
one per row of the paper's table, so a reader can hold the code next to the paper. Channel counts are the
paper's (width 1.0); the builder in ``model.py`` applies the width multiplier.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

__all__ = ["Conv", "DepthwiseSep", "Bottleneck", "Bneck", "Head", "Architecture", "Row"]


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


Row = Union[Conv, DepthwiseSep, Bottleneck, Bneck]


@dataclass(frozen=True)
class Architecture:
    """A whole network: the stem row, the body rows (everything between stem and pooling), the head."""

    name: str
    stem: Conv
    body: tuple[Row, ...]
    head: Head
