"""MobileNetV4's convolutional blocks (Qin et al. 2024, arXiv 2404.10518, section 3.2 / Figure 4).

- :class:`UniversalInvertedBottleneck` — the UIB: optional depthwise conv on the input, 1x1 expansion, optional
  depthwise conv in the expanded space, 1x1 projection. Its four instances (IB, ConvNext-like, FFN, ExtraDW)
  are the same class with a start / middle kernel of 0 for "absent".
- :class:`FusedInvertedBottleneck` — FusedIB: a kxk full conv does the expansion (and the downsampling), then
  the 1x1 projection.

Both follow TF Model Garden's ``nn_blocks.UniversalInvertedBottleneckBlock`` / ``InvertedBottleneckBlock(
use_depthwise=False)``: batch norm after every conv, the activation after the expansion and the middle
depthwise conv only (the start depthwise conv and the projection are linear), the input added back when the
stride is 1 and the channel count unchanged, layer scale and stochastic depth on the residual branch.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import DropPath, LayerScale2d, create_conv2d, make_activation

__all__ = ["UniversalInvertedBottleneck", "FusedInvertedBottleneck", "LAYER_SCALE_INIT"]

LAYER_SCALE_INIT = 1e-5  # TF Model Garden UniversalInvertedBottleneckBlock(layer_scale_init_value=1e-5)


class UniversalInvertedBottleneck(nn.Module):
    """Universal Inverted Bottleneck (V4 Figure 4).

    ``conv_dw_start`` + ``bn_start`` (kernel ``start_kernel``, linear; absent for 0) -> ``conv_pw`` + ``bn1`` +
    ``act1`` (1x1 expansion to ``mid_chs``) -> ``conv_dw`` + ``bn2`` + ``act2`` (kernel ``mid_kernel``; absent
    for 0) -> ``conv_pwl`` + ``bn3`` (1x1 projection, linear) -> ``layer_scale`` -> + input. The stride goes to
    the middle depthwise conv when there is one (TF ``middle_dw_downsample=True``), else to the start one.
    """

    def __init__(
        self,
        in_chs: int,
        mid_chs: int,
        out_chs: int,
        *,
        start_kernel: int = 0,
        mid_kernel: int = 3,
        stride: int = 1,
        dilation: int = 1,
        act: str = "relu",
        layer_scale: bool = False,
        drop_path_rate: float = 0.0,
        bn_eps: float = 1e-5,
        tf_padding: bool = False,
    ) -> None:
        super().__init__()
        if stride > 1 and not (start_kernel or mid_kernel):
            raise ValueError("a strided UIB needs a depthwise conv to downsample")
        self.has_skip = stride == 1 and in_chs == out_chs
        if start_kernel:
            start_stride = 1 if mid_kernel else stride
            self.conv_dw_start = create_conv2d(in_chs, in_chs, start_kernel, stride=start_stride, dilation=dilation,
                                               groups=in_chs, tf_padding=tf_padding)
            self.bn_start = nn.BatchNorm2d(in_chs, eps=bn_eps)
        else:
            self.conv_dw_start = self.bn_start = None
        self.conv_pw = create_conv2d(in_chs, mid_chs, 1)
        self.bn1 = nn.BatchNorm2d(mid_chs, eps=bn_eps)
        self.act1 = make_activation(act)
        if mid_kernel:
            self.conv_dw = create_conv2d(mid_chs, mid_chs, mid_kernel, stride=stride, dilation=dilation,
                                         groups=mid_chs, tf_padding=tf_padding)
            self.bn2 = nn.BatchNorm2d(mid_chs, eps=bn_eps)
            self.act2 = make_activation(act)
        else:
            self.conv_dw = self.bn2 = self.act2 = None
        self.conv_pwl = create_conv2d(mid_chs, out_chs, 1)
        self.bn3 = nn.BatchNorm2d(out_chs, eps=bn_eps)
        self.layer_scale = LayerScale2d(out_chs, LAYER_SCALE_INIT) if layer_scale else None
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        if self.conv_dw_start is not None and self.bn_start is not None:
            x = self.bn_start(self.conv_dw_start(x))
        x = self.act1(self.bn1(self.conv_pw(x)))
        if self.conv_dw is not None and self.bn2 is not None and self.act2 is not None:
            x = self.act2(self.bn2(self.conv_dw(x)))
        x = self.bn3(self.conv_pwl(x))
        if self.layer_scale is not None:
            x = self.layer_scale(x)
        if self.has_skip:
            if self.drop_path is not None:
                x = self.drop_path(x)
            x = x + shortcut
        return x


class FusedInvertedBottleneck(nn.Module):
    """FusedIB (V4 Figure 4; TF ``fused_ib``, i.e. ``InvertedBottleneckBlock(use_depthwise=False)``):
    ``conv_exp`` (kxk full conv, ``in_chs`` -> ``mid_chs``, the block's stride) + ``bn1`` + ``act1`` ->
    ``conv_pwl`` (1x1) + ``bn2`` (linear) -> + input when shapes allow."""

    def __init__(
        self,
        in_chs: int,
        mid_chs: int,
        out_chs: int,
        *,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        act: str = "relu",
        drop_path_rate: float = 0.0,
        bn_eps: float = 1e-5,
        tf_padding: bool = False,
    ) -> None:
        super().__init__()
        self.has_skip = stride == 1 and in_chs == out_chs
        self.conv_exp = create_conv2d(in_chs, mid_chs, kernel_size, stride=stride, dilation=dilation,
                                      tf_padding=tf_padding)
        self.bn1 = nn.BatchNorm2d(mid_chs, eps=bn_eps)
        self.act1 = make_activation(act)
        self.conv_pwl = create_conv2d(mid_chs, out_chs, 1)
        self.bn2 = nn.BatchNorm2d(out_chs, eps=bn_eps)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.act1(self.bn1(self.conv_exp(x)))
        x = self.bn2(self.conv_pwl(x))
        if self.has_skip:
            if self.drop_path is not None:
                x = self.drop_path(x)
            x = x + shortcut
        return x
