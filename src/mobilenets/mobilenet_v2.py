"""MobileNetV2 (Sandler et al. 2018, arXiv 1801.04381), Table 2."""

from __future__ import annotations

from .model import MobileNet
from .registry import register_model
from .spec import Architecture, Bottleneck, Conv, Head

# V2 Table 2: t (expansion), c (output channels), n (repeats), s (stride of the first repeat).
MOBILENET_V2 = Architecture(
    name="mobilenet_v2",
    stem=Conv(kernel=3, out=32, stride=2, act="relu6"),  # conv2d, -, 32, 1, 2
    body=(
        Bottleneck(t=1, c=16, n=1, s=1),
        Bottleneck(t=6, c=24, n=2, s=2),
        Bottleneck(t=6, c=32, n=3, s=2),
        Bottleneck(t=6, c=64, n=4, s=2),
        Bottleneck(t=6, c=96, n=3, s=1),
        Bottleneck(t=6, c=160, n=3, s=2),
        Bottleneck(t=6, c=320, n=1, s=1),
        # conv2d 1x1, 1280: "for multipliers less than one, we apply width multiplier to all layers except
        # the very last convolutional layer" (V2 section 5.1).
        Conv(kernel=1, out=1280, stride=1, act="relu6", width_floor_one=True),
    ),
    head=Head(dropout=0.2),  # avgpool 7x7, conv2d 1x1 -> k; dropout 0.2 as in the reference training setup
)


@register_model(published_widths=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4), paper="V2 Table 2")
def mobilenet_v2(**kwargs) -> MobileNet:
    """MobileNetV2 with inverted residuals and linear bottlenecks (V2 Table 2)."""
    return MobileNet(MOBILENET_V2, **kwargs)
