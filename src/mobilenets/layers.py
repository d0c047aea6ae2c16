"""Small shared building pieces: channel rounding, activations, TF-compatible convolution, conv-norm-act."""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["make_divisible", "make_activation", "create_conv2d", "Conv2dSame", "ConvNormAct", "pad_same", "ACTIVATIONS"]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never below ``min_value`` (default ``divisor``)
    and never more than 10% below ``value``.

    This is the rounding of the TensorFlow reference code (``_make_divisible`` in tf-slim's mobilenet.py),
    used by V2 and V3 for every width-scaled channel count.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:  # rounding down by more than 10% would cut capacity: step up instead
        rounded += divisor
    return rounded


# Activation names used in the architecture tables. "RE" in the V3 tables is plain ReLU; V1 and V2 use
# ReLU6 as in the reference TensorFlow code (V1 paper says ReLU, its released weights were trained with
# ReLU6); "HS" is h-swish, x * relu6(x + 3) / 6 (V3 section 5.2); "gelu" is the exact (erf) GELU of V4's
# Hybrid-Large (TF Model Garden ``activation='gelu'``, Keras's default ``approximate=False``).
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hswish": nn.Hardswish,
    "gelu": nn.GELU,
}


def make_activation(name: str | None) -> nn.Module:
    """An activation module by table name (``None`` means linear: identity)."""
    if name is None:
        return nn.Identity()
    if name == "gelu":
        return nn.GELU()  # no in-place form
    return ACTIVATIONS[name](inplace=True)


def _same_pad_amount(size: int, kernel: int, stride: int, dilation: int) -> int:
    out = (size + stride - 1) // stride  # ceil(size / stride) in integers (symbolic sizes under torch.export)
    return max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


def pad_same(x: torch.Tensor, kernel_size: Tuple[int, int], stride: Tuple[int, int],
             dilation: Tuple[int, int]) -> torch.Tensor:
    """Pad ``x`` as TensorFlow's "SAME" padding does for a conv with these settings (extra row / column at the
    bottom / right). A leaf for torch.fx (its amounts come from the input size, which a symbolic trace does
    not know), plain TorchScript for ``torch.jit.script``."""
    ih, iw = x.shape[-2], x.shape[-1]
    ph = _same_pad_amount(ih, kernel_size[0], stride[0], dilation[0])
    pw = _same_pad_amount(iw, kernel_size[1], stride[1], dilation[1])
    if ph > 0 or pw > 0:
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
    return x


torch.fx.wrap("pad_same")  # symbolic tracing records one call instead of tracing the size arithmetic


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow's "SAME" padding, computed from the input size at run time.

    TF pads the extra row/column at the bottom/right (e.g. 0 top-left, 1 bottom-right for a 3x3 stride-2
    conv on an even input), where PyTorch's symmetric padding pads both sides: weights trained in TF give
    slightly different numbers without this. The state-dict keys are those of ``nn.Conv2d``.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs["padding"] = 0
        super().__init__(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_same(x, self.kernel_size, self.stride, self.dilation)
        return self._conv_forward(x, self.weight, self.bias)  # not super().forward: TorchScript has no super()


def create_conv2d(
    in_chs: int,
    out_chs: int,
    kernel_size: int,
    *,
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
    bias: bool = False,
    tf_padding: bool = False,
) -> nn.Conv2d:
    """A 2-d convolution with "same"-size output: PyTorch's symmetric ``dilation * (k - 1) // 2`` padding by
    default, TF's asymmetric "SAME" padding when ``tf_padding`` (only stride > 1 differs, so only those get
    Conv2dSame). ``dilation`` > 1 is the atrous convolution of dilated backbones (output stride 16 or 8)."""
    if tf_padding and stride > 1:
        return Conv2dSame(in_chs, out_chs, kernel_size, stride=stride, dilation=dilation, groups=groups, bias=bias)
    return nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=dilation * (kernel_size - 1) // 2,
                     dilation=dilation, groups=groups, bias=bias)


class ConvNormAct(nn.Module):
    """Convolution -> batch norm -> activation: the plain "conv2d" rows of the papers' tables."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int,
        *,
        stride: int = 1,
        act: str | None = "relu6",
        bn_eps: float = 1e-5,
        tf_padding: bool = False,
    ) -> None:
        super().__init__()
        self.conv = create_conv2d(in_chs, out_chs, kernel_size, stride=stride, tf_padding=tf_padding)
        self.bn = nn.BatchNorm2d(out_chs, eps=bn_eps)
        self.act = make_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class LayerScale2d(nn.Module):
    """Per-channel learned output scale ``x * gamma`` (CaiT's layer scale), ``gamma`` initialised to ``init``:
    V4's hybrid blocks (TF Model Garden ``use_layer_scale``, ``layer_scale_init_value=1e-5``)."""

    def __init__(self, channels: int, init: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((channels,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1)


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth (Huang et al. 2016): in training, zero a residual branch for a random ``p`` of the
    samples and scale the rest by 1 / (1 - p); identity in eval mode or for ``p == 0``."""
    if p <= 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    """:func:`drop_path` as a module (rate ``p``); no parameters, so state-dict keys are unaffected."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p:g}"


__all__ += ["LayerScale2d", "DropPath", "drop_path"]
