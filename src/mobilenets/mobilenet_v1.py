"""MobileNetV1 (Howard et al. 2017, arXiv 1704.04861), Table 1."""

from __future__ import annotations

from .model import MobileNet
from .registry import register_model
from .spec import Architecture, Conv, DepthwiseSep, Head

# V1 Table 1, one row per paper row ("Conv dw / s" + "Conv 1x1" pairs as DepthwiseSep). Channels are the
# 1x1 outputs at width 1.0. ReLU6 as in the reference TF code (the paper writes ReLU).
MOBILENET_V1 = Architecture(
    name="mobilenet_v1",
    stem=Conv(kernel=3, out=32, stride=2, act="relu6"),  # Conv / s2, 3x3x3x32
    body=(
        DepthwiseSep(kernel=3, out=64, stride=1),
        DepthwiseSep(kernel=3, out=128, stride=2),
        DepthwiseSep(kernel=3, out=128, stride=1),
        DepthwiseSep(kernel=3, out=256, stride=2),
        DepthwiseSep(kernel=3, out=256, stride=1),
        DepthwiseSep(kernel=3, out=512, stride=2),
        DepthwiseSep(kernel=3, out=512, stride=1, n=5),  # "5x Conv dw / s1 + Conv 1x1"
        DepthwiseSep(kernel=3, out=1024, stride=2),
        # The paper prints "Conv dw / s2" here, a misprint: the input is already 7x7 and the reference code
        # (and every released checkpoint) uses stride 1.
        DepthwiseSep(kernel=3, out=1024, stride=1),
    ),
    # Avg pool 7x7, FC 1024 x 1000. The reference code uses dropout keep_prob 0.999 (Keras: rate 1e-3).
    head=Head(dropout=1e-3),
)


@register_model(published_widths=(0.25, 0.5, 0.75, 1.0), paper="V1 Table 1")
def mobilenet_v1(**kwargs) -> MobileNet:
    """MobileNetV1 with depthwise separable convolutions (V1 Table 1)."""
    return MobileNet(MOBILENET_V1, **kwargs)
