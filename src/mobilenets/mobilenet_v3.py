"""MobileNetV3 (Howard et al. 2019, arXiv 1905.02244v5), Tables 1 and 2, and the authors' minimalistic
variants (released with the TF reference code: no squeeze-excite, ReLU everywhere, 3x3 kernels only)."""

from __future__ import annotations

from dataclasses import replace

from .model import MobileNet
from .registry import register_model
from .spec import Architecture, Bneck, Conv, Head

RE, HS = "relu", "hswish"

# V3 Table 1 (Large): kernel, exp size, #out, SE, NL, s.
MOBILENET_V3_LARGE = Architecture(
    name="mobilenet_v3_large",
    stem=Conv(kernel=3, out=16, stride=2, act=HS),  # 224^2x3, conv2d, -, 16, -, HS, 2
    body=(
        Bneck(3, 16, 16, False, RE, 1),
        Bneck(3, 64, 24, False, RE, 2),
        Bneck(3, 72, 24, False, RE, 1),
        Bneck(5, 72, 40, True, RE, 2),
        Bneck(5, 120, 40, True, RE, 1),
        Bneck(5, 120, 40, True, RE, 1),
        Bneck(3, 240, 80, False, HS, 2),
        Bneck(3, 200, 80, False, HS, 1),
        Bneck(3, 184, 80, False, HS, 1),
        Bneck(3, 184, 80, False, HS, 1),
        Bneck(3, 480, 112, True, HS, 1),
        Bneck(3, 672, 112, True, HS, 1),
        Bneck(5, 672, 160, True, HS, 2),
        Bneck(5, 960, 160, True, HS, 1),
        Bneck(5, 960, 160, True, HS, 1),
        Conv(kernel=1, out=960, stride=1, act=HS),  # 7^2x160, conv2d 1x1, -, 960, -, HS, 1
    ),
    # pool 7x7; conv2d 1x1 NBN 1280 HS; conv2d 1x1 NBN k. Dropout 0.2 before the classifier (reference
    # code). The 1280 is never width-scaled (tf-slim's finegrain_classification_mode): V3 Table 3's
    # Large 1.25 has 7.5M params, which needs it fixed (scaled to 1600 it would be 8.3M).
    head=Head(hidden=1280, act=HS, dropout=0.2),
)

# V3 Table 2 (Small).
MOBILENET_V3_SMALL = Architecture(
    name="mobilenet_v3_small",
    stem=Conv(kernel=3, out=16, stride=2, act=HS),
    body=(
        Bneck(3, 16, 16, True, RE, 2),
        Bneck(3, 72, 24, False, RE, 2),
        Bneck(3, 88, 24, False, RE, 1),
        Bneck(5, 96, 40, True, HS, 2),
        Bneck(5, 240, 40, True, HS, 1),
        Bneck(5, 240, 40, True, HS, 1),
        Bneck(5, 120, 48, True, HS, 1),
        Bneck(5, 144, 48, True, HS, 1),
        Bneck(5, 288, 96, True, HS, 2),
        Bneck(5, 576, 96, True, HS, 1),
        Bneck(5, 576, 96, True, HS, 1),
        # conv2d 1x1, 576, HS. Table 2 marks SE on this row; the reference code and every released
        # checkpoint have none, and neither do we (SE after a 1x1 conv on 7x7 maps was dropped by the authors).
        Conv(kernel=1, out=576, stride=1, act=HS),
    ),
    # pool 7x7; conv2d 1x1 NBN 1024 HS (the final paper; an early version printed 1280); conv2d 1x1 NBN k.
    # Unlike Large, V3 Table 3's Small 1.25 (3.6M params) needs the 1024 scaled above width 1 (to 1280;
    # fixed it would be 3.2M); below 1 it stays 1024 (Small 0.35: 1.4M). The reference code's
    # finegrain_classification_mode switch was evidently set differently for the two released 1.25 models.
    head=Head(hidden=1024, act=HS, dropout=0.2, width_floor_one=True),
)


def minimalistic(arch: Architecture) -> Architecture:
    """The authors' minimalistic variant of a V3 table: no squeeze-excite, ReLU instead of h-swish, and every
    depthwise kernel 3x3 (tf-slim mobilenet_v3.py, V3_LARGE_MINIMALISTIC / V3_SMALL_MINIMALISTIC)."""

    def row(r):
        if isinstance(r, Bneck):
            return replace(r, kernel=3, se=False, act=RE)
        return replace(r, act=RE)

    return Architecture(
        name=f"{arch.name}_minimal",
        stem=row(arch.stem),
        body=tuple(row(r) for r in arch.body),
        head=replace(arch.head, act=RE),
    )


MOBILENET_V3_LARGE_MINIMAL = minimalistic(MOBILENET_V3_LARGE)
MOBILENET_V3_SMALL_MINIMAL = minimalistic(MOBILENET_V3_SMALL)

_V3_WIDTHS = (0.35, 0.5, 0.75, 1.0, 1.25)  # V3 Table 3 / the reference release


@register_model(published_widths=_V3_WIDTHS, paper="V3 Table 1")
def mobilenet_v3_large(**kwargs) -> MobileNet:
    """MobileNetV3-Large (V3 Table 1)."""
    return MobileNet(MOBILENET_V3_LARGE, **kwargs)


@register_model(published_widths=_V3_WIDTHS, paper="V3 Table 2")
def mobilenet_v3_small(**kwargs) -> MobileNet:
    """MobileNetV3-Small (V3 Table 2)."""
    return MobileNet(MOBILENET_V3_SMALL, **kwargs)


@register_model(published_widths=(1.0,), paper="V3 Table 1, minimalistic")
def mobilenet_v3_large_minimal(**kwargs) -> MobileNet:
    """MobileNetV3-Large minimalistic: no SE, no h-swish, 3x3 depthwise only."""
    return MobileNet(MOBILENET_V3_LARGE_MINIMAL, **kwargs)


@register_model(published_widths=(1.0,), paper="V3 Table 2, minimalistic")
def mobilenet_v3_small_minimal(**kwargs) -> MobileNet:
    """MobileNetV3-Small minimalistic: no SE, no h-swish, 3x3 depthwise only."""
    return MobileNet(MOBILENET_V3_SMALL_MINIMAL, **kwargs)
