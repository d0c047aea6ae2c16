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
from .errors import MobileNetsError
from .layers import ConvNormAct, make_activation, make_divisible
from .spec import MQA, UIB, Architecture, Bneck, Bottleneck, Conv, DepthwiseSep, FusedIB

__all__ = ["MobileNet", "ModelConfig", "FeatureInfo", "BlockInfo", "TAILS", "DILATION_STYLES"]


TAILS = ("full", "detection", "segmentation")
DILATION_STYLES = ("tf", "torchvision")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model: saved with every checkpoint.

    Backbone options for dense prediction (defaults: the classification network of the paper):

    - ``tail``: ``"full"``; ``"detection"`` halves the output channels of every layer from the first stride-32
      block to the last conv (V3 section 6.3; TF-slim ``V3_*_DETECTION = _reduce_consecutive_layers(...)``,
      torchvision ``reduced_tail=True``); ``"segmentation"`` also halves that first block's expansion (TF
      DeepLab ``mobilenet_v3_large_seg``: expansion 336 instead of 672, Small 144 instead of 288).
    - ``output_stride``: 32, or 16 / 8 to replace the last one / two downsamplings by dilated (atrous)
      convolutions (DeepLab, LR-ASPP). ``dilation_style`` says where the dilation starts: ``"tf"`` (TF-slim
      ``mobilenet_base(output_stride=...)``: the block that would have downsampled keeps rate 1, the blocks after
      it get the rate) or ``"torchvision"`` (that block already gets the new rate).
    - ``fixed_stem``: the stem keeps its table width at every width multiplier (timm ``*_050`` models and
      Keras's V3 at alphas other than 0.75 / 1.0 do; the papers scale it).
    """

    name: str
    width: float = 1.0
    num_classes: int = 1000
    in_chans: int = 3
    dropout: float | None = None
    tf_padding: bool = False
    bn_eps: float = 1e-5
    fixed_stem: bool = False
    tail: str = "full"
    output_stride: int = 32
    dilation_style: str = "tf"
    drop_path_rate: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FeatureInfo:
    """One backbone tap: the module whose output it is, its channels and its stride w.r.t. the input."""

    module: str
    channels: int
    stride: int


@dataclass(frozen=True)
class BlockInfo:
    """One block of the body, flat index ``index`` (0-based over the whole body, the paper's rows expanded by
    their repeats): where it lives (``module``, e.g. ``stages.4.0``), its channels and its output stride (w.r.t.
    the input; with dilation it stops growing). ``exp_chs``: the expansion width (inverted residuals), or the
    depthwise width (V1), or None (a plain conv)."""

    index: int
    module: str
    in_chs: int
    exp_chs: int | None
    out_chs: int
    stride: int
    table_stride: int  # the stride the table gives the block's output (before any dilation)


@dataclass
class _Built:
    block: nn.Module
    table_stride: int
    stride: int
    in_chs: int
    exp_chs: int | None
    out_chs: int


@dataclass
class _BuildState:
    in_chs: int  # actual (width-scaled) channels entering the next row
    table_in: int  # the same at width 1.0, as the paper's table prints it
    width: float
    bn_eps: float
    tf_padding: bool
    tail: str = "full"
    output_stride: int = 32
    dilation_style: str = "tf"
    fixed_stem: bool = False
    drop_path_rate: float = 0.0
    n_body: int = 1  # body blocks in all (for the stochastic-depth schedule)
    table_stride: int = 1  # the table's stride so far
    stride: int = 1  # the actual stride so far (stops at output_stride)
    dilation: int = 1
    blocks: list[_Built] = field(default_factory=list)

    def place(self, stride: int) -> tuple[int, int]:
        """(conv stride, dilation) of a layer the table gives ``stride``: past ``output_stride`` the
        downsampling becomes dilation (DeepLab's atrous convolution)."""
        if stride > 1 and self.stride * stride > self.output_stride:
            if self.dilation_style == "tf":  # this layer keeps the current rate, later ones get the new one
                rate = self.dilation
                self.dilation *= stride
                return 1, rate
            self.dilation *= stride
            return 1, self.dilation
        return stride, self.dilation

    def in_tail(self, stride: int) -> bool:
        """Whether a layer with table stride ``stride`` ends at table stride 32 (the "tail" of V3 6.3)."""
        return self.table_stride * stride >= 32

    def add(self, block: nn.Module, stride: int, conv_stride: int, exp_chs: int | None, out_chs: int,
            table_out: int) -> None:
        self.table_stride *= stride
        self.stride *= conv_stride
        self.blocks.append(_Built(block, self.table_stride, self.stride, self.in_chs, exp_chs, out_chs))
        self.in_chs = out_chs
        self.table_in = table_out

    def scale(self, chs: float) -> int:
        return make_divisible(chs * self.width, 8)

    def tail_factor(self, stride: int) -> float:
        return 0.5 if self.tail != "full" and self.in_tail(stride) else 1.0

    def drop_path(self) -> float:
        """The stochastic-depth rate of the next body block: ``drop_path_rate`` scaled linearly with depth,
        ``rate * index / blocks`` (timm's schedule, which trained the public V4 weights; TF Model Garden's
        ``flat_stochastic_depth_drop_rate=False`` uses ``(index + 1) / blocks``)."""
        return self.drop_path_rate * len(self.blocks) / self.n_body


@singledispatch
def _add_row(row, st: _BuildState) -> None:
    raise TypeError(f"unknown architecture row {row!r}")


@_add_row.register
def _(row: Conv, st: _BuildState) -> None:
    if st.fixed_stem and not st.blocks and st.table_stride == 1:  # the stem row at its table width
        out = row.out
    elif row.width_floor_one:
        out = make_divisible(row.out * max(st.width, 1.0), 8)
    else:
        out = st.scale(row.out * st.tail_factor(row.stride))
    conv_stride, _ = st.place(row.stride)
    block = ConvNormAct(
        st.in_chs, out, row.kernel, stride=conv_stride, act=row.act, bn_eps=st.bn_eps, tf_padding=st.tf_padding
    )
    st.add(block, row.stride, conv_stride, None, out, row.out)


@_add_row.register
def _(row: DepthwiseSep, st: _BuildState) -> None:
    for i in range(row.n):
        stride = row.stride if i == 0 else 1
        out = st.scale(row.out * st.tail_factor(stride))
        conv_stride, dilation = st.place(stride)
        block = DepthwiseSeparable(
            st.in_chs, out, kernel_size=row.kernel, stride=conv_stride, dilation=dilation, act=row.act,
            bn_eps=st.bn_eps, tf_padding=st.tf_padding,
        )
        st.add(block, stride, conv_stride, st.in_chs, out, row.out)


@_add_row.register
def _(row: Bottleneck, st: _BuildState) -> None:
    for i in range(row.n):
        stride = row.s if i == 0 else 1
        out = st.scale(row.c * st.tail_factor(stride))
        exp = st.in_chs * row.t
        if st.tail == "segmentation" and st.in_tail(stride) and not st.in_tail(1):
            exp //= 2  # the first tail block's expansion halved too (see ModelConfig)
        conv_stride, dilation = st.place(stride)
        block = InvertedResidual(
            st.in_chs, exp, out, kernel_size=3, stride=conv_stride, dilation=dilation, act=row.act,
            bn_eps=st.bn_eps, tf_padding=st.tf_padding,
        )
        st.add(block, stride, conv_stride, exp, out, row.c)


@_add_row.register
def _(row: Bneck, st: _BuildState) -> None:
    out = st.scale(row.out * st.tail_factor(row.stride))
    # The tables print absolute expansion sizes at width 1.0; the reference code (tf-slim mobilenet_v3.py,
    # expand_input_by_factor) stores them as ratios of the input and rounds ratio * actual input channels.
    # At width 1.0 the two agree; at other widths only the ratio reproduces the published MAdds. A halved tail
    # keeps the ratios (TF-slim halves num_outputs only), so its expansions halve with their inputs.
    ratio = row.exp / st.table_in
    if st.tail == "segmentation" and st.in_tail(row.stride) and not st.in_tail(1):
        ratio /= 2  # DeepLab's mobilenet_v3_*_seg: the first tail block's expansion 672 -> 336 (Small 288 -> 144)
    exp = make_divisible(st.in_chs * ratio, 8)
    conv_stride, dilation = st.place(row.stride)
    # Where the expansion size equals the input (V3's first row, 16 -> 16) the block has no expansion conv.
    block = InvertedResidual(
        st.in_chs, exp, out, kernel_size=row.kernel, stride=conv_stride, dilation=dilation, act=row.act,
        se=row.se, bn_eps=st.bn_eps, tf_padding=st.tf_padding,
    )
    st.add(block, row.stride, conv_stride, exp, out, row.out)


class MobileNet(nn.Module):
    """A MobileNet (V1, V2 or V3) built from an architecture table.

    Use :func:`mobilenets.create_model` rather than calling this directly. Sub-modules: ``stem`` (the first
    conv row), ``stages`` (body blocks grouped by the table's output stride, so state-dict keys do not depend
    on dilation), and the head: ``head_conv``/``head_act`` (V3 only), ``dropout``, ``classifier``.
    ``feature_info`` lists the stage-end taps, ``block_info`` every block (see :class:`BlockInfo`).
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
        fixed_stem: bool = False,
        tail: str = "full",
        output_stride: int = 32,
        dilation_style: str = "tf",
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        _check_options(width=width, num_classes=num_classes, in_chans=in_chans, dropout=dropout, bn_eps=bn_eps,
                       tail=tail, output_stride=output_stride, dilation_style=dilation_style)
        _check_drop_path(arch, drop_path_rate)
        self.arch = arch
        self.config = ModelConfig(arch.name, float(width), int(num_classes), int(in_chans), dropout,
                                  bool(tf_padding), float(bn_eps), bool(fixed_stem), tail, int(output_stride),
                                  dilation_style, float(drop_path_rate))

        st = _BuildState(in_chs=in_chans, table_in=in_chans, width=width, bn_eps=bn_eps, tf_padding=tf_padding,
                         tail=tail, output_stride=output_stride, dilation_style=dilation_style,
                         fixed_stem=fixed_stem, drop_path_rate=float(drop_path_rate),
                         n_body=max(1, sum(getattr(r, "n", 1) for r in arch.body)))
        _add_row(arch.stem, st)
        stem = st.blocks.pop()
        self.stem = stem.block
        for row in arch.body:
            _add_row(row, st)

        by_stride: dict[int, list[_Built]] = {}  # table strides only grow, so insertion order holds
        for b in st.blocks:
            by_stride.setdefault(b.table_stride, []).append(b)
        self.stages = nn.Sequential(*(nn.Sequential(*(b.block for b in blocks)) for blocks in by_stride.values()))
        self.feature_info: list[FeatureInfo] = [
            FeatureInfo(f"stages.{i}", blocks[-1].out_chs, blocks[-1].stride)
            for i, blocks in enumerate(by_stride.values())
        ]
        if 2 not in by_stride:  # V3-Small's first bneck already has stride 2: the stem is the stride-2 tap
            self.feature_info.insert(0, FeatureInfo("stem", stem.out_chs, stem.stride))
        self.block_info: list[BlockInfo] = []
        for i, blocks in enumerate(by_stride.values()):
            for j, b in enumerate(blocks):
                self.block_info.append(BlockInfo(len(self.block_info), f"stages.{i}.{j}", b.in_chs, b.exp_chs,
                                                 b.out_chs, b.stride, b.table_stride))

        self.num_features = st.in_chs
        head = arch.head
        if head.hidden is not None:
            hidden = make_divisible(head.hidden * max(width, 1.0), 8) if head.width_floor_one else head.hidden
            self.head_conv = nn.Conv2d(st.in_chs, hidden, 1, bias=not head.norm)  # V3: "conv2d 1x1, NBN"
            self.head_bn = nn.BatchNorm2d(hidden, eps=bn_eps) if head.norm else None  # V4: convbn 1x1 1280
            self.head_act = make_activation(head.act)
            self.head_hidden_size = hidden
        else:
            self.head_conv = self.head_bn = self.head_act = None
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
            x = self.head_conv(x)
            if self.head_bn is not None:
                x = self.head_bn(x)
            x = self.head_act(x)
        x = self.dropout(x.flatten(1))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _check_options(*, width, num_classes, in_chans, dropout, bn_eps, tail, output_stride, dilation_style) -> None:
    """Every builder option in range, else a one-line :class:`MobileNetsError` naming it."""
    import math

    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    checks = [
        (number(width) and 0 < width <= 16, f"width must be in (0, 16], got {width!r}"),
        (isinstance(num_classes, int) and not isinstance(num_classes, bool) and 0 <= num_classes <= 1_000_000,
         f"num_classes must be an integer in [0, 1000000], got {num_classes!r}"),
        (isinstance(in_chans, int) and not isinstance(in_chans, bool) and 1 <= in_chans <= 1024,
         f"in_chans must be an integer in [1, 1024], got {in_chans!r}"),
        (dropout is None or (number(dropout) and 0 <= dropout <= 1), f"dropout must be in [0, 1], got {dropout!r}"),
        (number(bn_eps) and 0 < bn_eps < 1, f"bn_eps must be in (0, 1), got {bn_eps!r}"),
        (tail in TAILS, f"tail must be one of {', '.join(TAILS)}, got {tail!r}"),
        (output_stride in (8, 16, 32), f"output_stride must be 8, 16 or 32, got {output_stride!r}"),
        (dilation_style in DILATION_STYLES,
         f"dilation_style must be one of {', '.join(DILATION_STYLES)}, got {dilation_style!r}"),
    ]
    for ok, message in checks:
        if not ok:
            raise MobileNetsError(message)


_DROP_PATH_ROWS = (UIB, FusedIB, MQA)


def _check_drop_path(arch: Architecture, rate) -> None:
    """``drop_path_rate`` in [0, 1), and only for architectures with V4 residual blocks (the V1-V3 blocks have
    no stochastic depth: their papers train without it)."""
    import math

    if not (isinstance(rate, (int, float)) and not isinstance(rate, bool) and math.isfinite(rate)
            and 0 <= rate < 1):
        raise MobileNetsError(f"drop_path_rate must be in [0, 1), got {rate!r}")
    if rate > 0 and not any(isinstance(r, _DROP_PATH_ROWS) for r in arch.body):
        raise MobileNetsError(f"drop_path_rate is for MobileNetV4 models; {arch.name} has no stochastic depth")


# MobileNetV4 rows (mobilenet_v4.py): FusedIB, UIB, Mobile MQA. Expansion widths are ratios of the block's
# actual input channels, rounded to 8 (TF Model Garden ``make_divisible(in_filters * expand_ratio, 8)``).

@_add_row.register
def _(row: FusedIB, st: _BuildState) -> None:
    from .uib import FusedInvertedBottleneck

    out = st.scale(row.out * st.tail_factor(row.stride))
    exp = make_divisible(st.in_chs * row.exp, 8)
    conv_stride, dilation = st.place(row.stride)
    block = FusedInvertedBottleneck(
        st.in_chs, exp, out, kernel_size=row.kernel, stride=conv_stride, dilation=dilation, act=row.act,
        drop_path_rate=st.drop_path(), bn_eps=st.bn_eps, tf_padding=st.tf_padding,
    )
    st.add(block, row.stride, conv_stride, exp, out, row.out)


@_add_row.register
def _(row: UIB, st: _BuildState) -> None:
    from .uib import UniversalInvertedBottleneck

    out = st.scale(row.out * st.tail_factor(row.stride))
    exp = make_divisible(st.in_chs * row.exp, 8)
    conv_stride, dilation = st.place(row.stride)
    block = UniversalInvertedBottleneck(
        st.in_chs, exp, out, start_kernel=row.start_dw, mid_kernel=row.mid_dw, stride=conv_stride,
        dilation=dilation, act=row.act, layer_scale=row.layer_scale, drop_path_rate=st.drop_path(),
        bn_eps=st.bn_eps, tf_padding=st.tf_padding,
    )
    st.add(block, row.stride, conv_stride, exp, out, row.out)


@_add_row.register
def _(row: MQA, st: _BuildState) -> None:
    from .attention import MobileMQA

    out = st.scale(row.out * st.tail_factor(1))
    # key / value / head dims are not width-scaled (TF Model Garden scales ``filters`` only)
    block = MobileMQA(
        st.in_chs, out, heads=row.heads, key_dim=row.key_dim, value_dim=row.value_dim, kv_stride=row.kv_stride,
        kv_kernel=row.kv_kernel, dilation=st.dilation, layer_scale=row.layer_scale, drop_path_rate=st.drop_path(),
        bn_eps=st.bn_eps, tf_padding=st.tf_padding,
    )
    st.add(block, 1, 1, None, out, row.out)
