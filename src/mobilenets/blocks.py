"""One block class per paper concept.

- :class:`DepthwiseSeparable` — V1 section 3.1 / Figure 3: 3x3 depthwise conv + BN + ReLU, then 1x1
  pointwise conv + BN + ReLU.
- :class:`SqueezeExcite` — V3 section 5.3 / Figure 4: global pool, 1x1 reduce + ReLU, 1x1 expand, hard-sigmoid
  gate.
- :class:`InvertedResidual` — V2 section 3.3 / Table 1 (inverted residual with linear bottleneck), which V3
  calls "bneck" and extends with an optional squeeze-excite and h-swish.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import create_conv2d, make_activation, make_divisible

__all__ = ["DepthwiseSeparable", "SqueezeExcite", "InvertedResidual"]


class DepthwiseSeparable(nn.Module):
    """V1 depthwise separable convolution (V1 Figure 3, right)."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        act: str = "relu6",
        bn_eps: float = 1e-5,
        tf_padding: bool = False,
    ) -> None:
        super().__init__()
        self.conv_dw = create_conv2d(in_chs, in_chs, kernel_size, stride=stride, dilation=dilation, groups=in_chs,
                                     tf_padding=tf_padding)
        self.bn1 = nn.BatchNorm2d(in_chs, eps=bn_eps)
        self.act1 = make_activation(act)
        self.conv_pw = create_conv2d(in_chs, out_chs, 1)
        self.bn2 = nn.BatchNorm2d(out_chs, eps=bn_eps)
        self.act2 = make_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv_dw(x)))
        x = self.act2(self.bn2(self.conv_pw(x)))
        return x

    def forward_intermediates(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``forward`` that also returns the depthwise output: ``{"depthwise", "output"}``."""
        d = self.act1(self.bn1(self.conv_dw(x)))
        return {"depthwise": d, "output": self.act2(self.bn2(self.conv_pw(d)))}


class SqueezeExcite(nn.Module):
    """V3 squeeze-and-excite (V3 section 5.3): the squeeze width is ``make_divisible(channels / 4, 8)``
    ("we replace them all to fixed to be 1/4 of the number of channels in expansion layer"), and the gate is
    the hard sigmoid relu6(x + 3) / 6."""

    def __init__(self, channels: int, *, reduction: int = 4) -> None:
        super().__init__()
        squeeze = make_divisible(channels / reduction, 8)
        self.conv_reduce = nn.Conv2d(channels, squeeze, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(squeeze, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = nn.functional.adaptive_avg_pool2d(x, 1)  # the squeeze; not mean(): see MobileNet.forward_head
        s = self.gate(self.conv_expand(self.act(self.conv_reduce(s))))
        return x * s


class InvertedResidual(nn.Module):
    """Inverted residual with linear bottleneck (V2 Table 1; V3 "bneck", V3 Figure 4).

    1x1 expand + BN + act (absent when ``exp_chs == in_chs``, as in V2's t=1 row and V3's first row) ->
    kxk depthwise + BN + act -> optional squeeze-excite -> 1x1 project + BN with **no** activation (the linear
    bottleneck, V2 section 3.2). The input is added back when stride is 1 and the channel count is unchanged.
    """

    def __init__(
        self,
        in_chs: int,
        exp_chs: int,
        out_chs: int,
        *,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        act: str = "relu6",
        se: bool = False,
        bn_eps: float = 1e-5,
        tf_padding: bool = False,
    ) -> None:
        super().__init__()
        self.has_skip = stride == 1 and in_chs == out_chs
        if exp_chs != in_chs:
            self.conv_pw = create_conv2d(in_chs, exp_chs, 1)
            self.bn1 = nn.BatchNorm2d(exp_chs, eps=bn_eps)
            self.act1 = make_activation(act)
        else:
            self.conv_pw = self.bn1 = self.act1 = None
        self.conv_dw = create_conv2d(
            exp_chs, exp_chs, kernel_size, stride=stride, dilation=dilation, groups=exp_chs, tf_padding=tf_padding
        )
        self.bn2 = nn.BatchNorm2d(exp_chs, eps=bn_eps)
        self.act2 = make_activation(act)
        self.se = SqueezeExcite(exp_chs) if se else None
        self.conv_pwl = create_conv2d(exp_chs, out_chs, 1)
        self.bn3 = nn.BatchNorm2d(out_chs, eps=bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        if self.conv_pw is not None:
            x = self.act1(self.bn1(self.conv_pw(x)))
        x = self.act2(self.bn2(self.conv_dw(x)))
        if self.se is not None:
            x = self.se(x)
        x = self.bn3(self.conv_pwl(x))
        if self.has_skip:
            x = x + shortcut
        return x

    def forward_intermediates(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``forward`` that also returns the inner feature maps the dense-prediction heads tap (TF-slim's end
        points): ``"expansion"`` (after the expansion conv and its activation; the input where there is no
        expansion conv), ``"depthwise"`` (after the depthwise conv and its activation, before squeeze-excite)
        and ``"output"``."""
        shortcut = x
        if self.conv_pw is not None:
            x = self.act1(self.bn1(self.conv_pw(x)))
        e = x
        d = self.act2(self.bn2(self.conv_dw(e)))
        x = self.se(d) if self.se is not None else d
        x = self.bn3(self.conv_pwl(x))
        if self.has_skip:
            x = x + shortcut
        return {"expansion": e, "depthwise": d, "output": x}
