"""The one MobileNet module, built as a pure function of an :class:`~mobilenets.spec.Architecture` table and
its options: stem -> stages -> head.

Stages group the body's blocks by output stride (2, 4, 8, 16, 32), so the backbone taps in
:attr:`MobileNet.feature_info` come straight from the table's strides.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import singledispatch

import torch
from torch import nn

from .blocks import DepthwiseSeparable, InvertedResidual
from .layers import ConvNormAct, make_activation, make_divisible
from .spec import Architecture, Bneck, Bottleneck, Conv, DepthwiseSep

__all__ = ["MobileNet", "ModelConfig", "FeatureInfo"]


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model: saved with every checkpoint."""

    name: str
    width: float = 1.0
    num_classes: int = 1000
    in_chans: int = 3
    dropout: float | None = None
    tf_padding: bool = False
    bn_eps: float = 1e-5

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FeatureInfo:
    """One backbone tap: the module whose output it is, its channels and its stride w.r.t. the input."""

    module: str
    channels: int
    stride: int


@dataclass
class _BuildState:
    in_chs: int  # actual (width-scaled) channels entering the next row
    table_in: int  # the same at width 1.0, as the paper's table prints it
    stride: int
    width: float
    bn_eps: float
    tf_padding: bool
    blocks: list[tuple[nn.Module, int, int]] = field(default_factory=list)  # (block, out stride, out chs)

    def add(self, block: nn.Module, stride: int, out_chs: int, table_out: int) -> None:
        self.stride *= stride
        self.in_chs = out_chs
        self.table_in = table_out
        self.blocks.append((block, self.stride, out_chs))

    def scale(self, chs: int) -> int:
        return make_divisible(chs * self.width, 8)


@singledispatch
def _add_row(row, st: _BuildState) -> None:
    raise TypeError(f"unknown architecture row {row!r}")


@_add_row.register
def _(row: Conv, st: _BuildState) -> None:
    out = make_divisible(row.out * max(st.width, 1.0), 8) if row.width_floor_one else st.scale(row.out)
    block = ConvNormAct(
        st.in_chs, out, row.kernel, stride=row.stride, act=row.act, bn_eps=st.bn_eps, tf_padding=st.tf_padding
    )
    st.add(block, row.stride, out, row.out)


@_add_row.register
def _(row: DepthwiseSep, st: _BuildState) -> None:
    out = st.scale(row.out)
    for i in range(row.n):
        stride = row.stride if i == 0 else 1
        block = DepthwiseSeparable(
            st.in_chs, out, kernel_size=row.kernel, stride=stride, act=row.act, bn_eps=st.bn_eps,
            tf_padding=st.tf_padding,
        )
        st.add(block, stride, out, row.out)


@_add_row.register
def _(row: Bottleneck, st: _BuildState) -> None:
    out = st.scale(row.c)
    for i in range(row.n):
        stride = row.s if i == 0 else 1
        block = InvertedResidual(
            st.in_chs, st.in_chs * row.t, out, kernel_size=3, stride=stride, act=row.act, bn_eps=st.bn_eps,
            tf_padding=st.tf_padding,
        )
        st.add(block, stride, out, row.c)


@_add_row.register
def _(row: Bneck, st: _BuildState) -> None:
    out = st.scale(row.out)
    # The tables print absolute expansion sizes at width 1.0; the reference code (tf-slim mobilenet_v3.py,
    # expand_input_by_factor) stores them as ratios of the input and rounds ratio * actual input channels.
    # At width 1.0 the two agree; at other widths only the ratio reproduces the published MAdds.
    exp = make_divisible(st.in_chs * row.exp / st.table_in, 8)
    # Where the expansion size equals the input (V3's first row, 16 -> 16) the block has no expansion conv.
    block = InvertedResidual(
        st.in_chs, exp, out, kernel_size=row.kernel, stride=row.stride, act=row.act, se=row.se,
        bn_eps=st.bn_eps, tf_padding=st.tf_padding,
    )
    st.add(block, row.stride, out, row.out)


class MobileNet(nn.Module):
    """A MobileNet (V1, V2 or V3) built from an architecture table.

    Use :func:`mobilenets.create_model` rather than calling this directly. Sub-modules: ``stem`` (the first
    conv row), ``stages`` (body blocks grouped by output stride), and the head: ``head_conv``/``head_act``
    (V3 only), ``dropout``, ``classifier``.
    """

    def __init__(
        self,
        arch: Architecture,
        *,
        width: float = 1.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        dropout: float | None = None,
        tf_padding: bool = False,
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        if num_classes < 0 or in_chans < 1:
            raise ValueError(f"num_classes must be >= 0 and in_chans >= 1, got {num_classes}, {in_chans}")
        self.arch = arch
        self.config = ModelConfig(arch.name, width, num_classes, in_chans, dropout, tf_padding, bn_eps)

        st = _BuildState(in_chs=in_chans, table_in=in_chans, stride=1, width=width, bn_eps=bn_eps,
                         tf_padding=tf_padding)
        _add_row(arch.stem, st)
        (self.stem, _, stem_chs), = st.blocks
        st.blocks.clear()
        for row in arch.body:
            _add_row(row, st)

        by_stride: dict[int, list[tuple[nn.Module, int]]] = {}  # strides only grow, so insertion order holds
        for block, stride, out_chs in st.blocks:
            by_stride.setdefault(stride, []).append((block, out_chs))
        self.stages = nn.Sequential(*(nn.Sequential(*(b for b, _ in blocks)) for blocks in by_stride.values()))
        self.feature_info: list[FeatureInfo] = [
            FeatureInfo(f"stages.{i}", blocks[-1][1], stride) for i, (stride, blocks) in enumerate(by_stride.items())
        ]
        if 2 not in by_stride:  # V3-Small's first bneck already has stride 2: the stem is the stride-2 tap
            self.feature_info.insert(0, FeatureInfo("stem", stem_chs, 2))

        self.num_features = st.in_chs
        head = arch.head
        if head.hidden is not None:
            hidden = make_divisible(head.hidden * max(width, 1.0), 8) if head.width_floor_one else head.hidden
            self.head_conv = nn.Conv2d(st.in_chs, hidden, 1, bias=True)  # "conv2d 1x1, NBN"
            self.head_act = make_activation(head.act)
            self.head_hidden_size = hidden
        else:
            self.head_conv = self.head_act = None
            self.head_hidden_size = st.in_chs
        self.dropout = nn.Dropout(head.dropout if dropout is None else dropout)
        self.classifier = self._make_classifier(num_classes)
        self._init_weights()

    def _make_classifier(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialised one for ``num_classes`` (0: no classifier, the
        model returns pooled features)."""
        self.classifier = self._make_classifier(num_classes)
        if isinstance(self.classifier, nn.Linear):
            nn.init.normal_(self.classifier.weight, 0, 0.01)
            nn.init.zeros_(self.classifier.bias)
        self.config = ModelConfig(**{**self.config.to_dict(), "num_classes": num_classes})

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and stages: the stride-32 feature map (N, num_features, H/32, W/32)."""
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        """Pool, V3's 1x1 head conv, dropout and classifier (``pre_logits``: stop before the classifier)."""
        # global average pool written as adaptive_avg_pool2d (= mean over H, W): litert-torch's int8 quantizer
        # annotates this op and not mean, so V3's int8 TFLite files pool in int8 (export/core.py)
        x = nn.functional.adaptive_avg_pool2d(x, 1)
        if self.head_conv is not None:
            x = self.head_act(self.head_conv(x))
        x = self.dropout(x.flatten(1))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
