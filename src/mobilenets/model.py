"""The one MobileNet module, built as a pure function of an :class:`~mobilenets.spec.Architecture` table and
its options: stem -> stages -> head.

Stages group the body's blocks by output stride (2, 4, 8, 16, 32), so the backbone taps in
:attr:`MobileNet.feature_info` come straight from the table's strides.
"""

from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import singledispatch
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .blocks import DepthwiseSeparable, InvertedResidual
from .errors import MobileNetsError
from .layers import ConvNormAct, make_activation, make_divisible
from .preprocess import IMAGENET, Preprocessing
from .spec import MQA, UIB, Architecture, Bneck, Bottleneck, Conv, DepthwiseSep, FusedIB

__all__ = [
    "MobileNet", "ModelConfig", "FeatureInfo", "FeatureInfoList", "BlockInfo", "TAILS", "DILATION_STYLES",
    "GLOBAL_POOLS", "take_indices",
]


TAILS = ("full", "detection", "segmentation")
DILATION_STYLES = ("tf", "torchvision")
GLOBAL_POOLS = ("avg", "max", "")  # timm's names; "": no pooling, the head runs on the feature map


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

    ``global_pool``: ``"avg"`` (the papers), ``"max"``, or ``""`` for none (timm's option; needs
    ``num_classes=0``): the model then returns the head's per-pixel features, (N, C, H/32, W/32).
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
    global_pool: str = "avg"
    drop_path_rate: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class FeatureInfo(dict):
    """One backbone tap: the module whose output it is (``module``), its channels (``channels``) and its stride
    w.r.t. the input (``stride``).

    It is also the dict timm's feature wrappers read (``{"module", "num_chs", "reduction"}``: ``timm.models.
    FeatureInfo``, ``FeatureListNet``, ``FeatureHookNet`` take a :attr:`MobileNet.feature_info` as it is)."""

    def __init__(self, module: str, channels: int, stride: int) -> None:
        super().__init__(module=module, num_chs=channels, reduction=stride)

    @property
    def module(self) -> str:
        return self["module"]

    @property
    def channels(self) -> int:
        return self["num_chs"]

    @property
    def stride(self) -> int:
        return self["reduction"]

    def __repr__(self) -> str:
        return f"FeatureInfo(module={self.module!r}, channels={self.channels}, stride={self.stride})"


class FeatureInfoList(list):
    """A list of :class:`FeatureInfo` with timm's ``FeatureInfo`` accessors: ``channels()``, ``reduction()``,
    ``module_name()`` (each over every tap, or at index / indices ``idx``), ``get(key, idx)``, ``get_dicts()``."""

    def get(self, key: str, idx: int | Sequence[int] | None = None):
        if idx is None:
            return [f[key] for f in self]
        if isinstance(idx, (tuple, list)):
            return [self[i][key] for i in idx]
        return self[idx][key]

    def get_dicts(self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None):
        picked = self if idx is None else [self[i] for i in idx] if isinstance(idx, (tuple, list)) else self[idx]
        pick = (lambda f: dict(f)) if keys is None else (lambda f: {k: f[k] for k in keys})
        return pick(picked) if isinstance(picked, dict) else [pick(f) for f in picked]

    def channels(self, idx: int | Sequence[int] | None = None):
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None):
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None):
        return self.get("module", idx)


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
    on dilation), and the head: ``head_conv``/``head_bn`` (V4)/``head_act`` (V3, V4), ``dropout``, ``classifier``.
    ``feature_info`` lists the stage-end taps, ``block_info`` every block (see :class:`BlockInfo`).

    The model API of timm's and torchvision's models: ``torch.jit.script``, ``torch.export``, ``torch.fx``
    (torchvision's ``create_feature_extractor``) all work; ``num_features``, ``head_hidden_size``,
    :meth:`get_classifier`, :meth:`reset_classifier`, :meth:`forward_features`, :meth:`forward_head`,
    :meth:`forward_intermediates`, :meth:`prune_intermediate_layers`, :meth:`set_grad_checkpointing` and
    :attr:`pretrained_cfg` (what ``timm.data.resolve_data_config`` reads) behave as timm's.
    """

    # Python-only views of the config: TorchScript compiles a module's properties unless listed here.
    __jit_unused_properties__ = ["num_classes", "pretrained_cfg", "default_cfg"]

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
        global_pool: str = "avg",
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        _check_options(width=width, num_classes=num_classes, in_chans=in_chans, dropout=dropout, bn_eps=bn_eps,
                       tail=tail, output_stride=output_stride, dilation_style=dilation_style,
                       global_pool=global_pool)
        _check_drop_path(arch, drop_path_rate)
        self.arch = arch
        self.config = ModelConfig(arch.name, float(width), int(num_classes), int(in_chans), dropout,
                                  bool(tf_padding), float(bn_eps), bool(fixed_stem), tail, int(output_stride),
                                  dilation_style, global_pool, float(drop_path_rate))

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
        self.feature_info = FeatureInfoList(
            FeatureInfo(f"stages.{i}", blocks[-1].out_chs, blocks[-1].stride)
            for i, blocks in enumerate(by_stride.values())
        )
        # V3-Small's first bneck already has stride 2: the stem is the stride-2 tap (feature index 0)
        self._stem_tap = 2 not in by_stride
        if self._stem_tap:
            self.feature_info.insert(0, FeatureInfo("stem", stem.out_chs, stem.stride))
        block_info: list[BlockInfo] = []
        for i, blocks in enumerate(by_stride.values()):
            for j, b in enumerate(blocks):
                block_info.append(BlockInfo(len(block_info), f"stages.{i}.{j}", b.in_chs, b.exp_chs, b.out_chs,
                                            b.stride, b.table_stride))
        self.block_info = block_info

        self.num_features = st.in_chs  # channels of forward_features' output
        head = arch.head
        if head.hidden is not None:
            hidden = make_divisible(head.hidden * max(width, 1.0), 8) if head.width_floor_one else head.hidden
            self.head_conv = nn.Conv2d(st.in_chs, hidden, 1, bias=not head.norm)  # V3: "conv2d 1x1, NBN"
            self.head_bn = nn.BatchNorm2d(hidden, eps=bn_eps) if head.norm else None  # V4: convbn 1x1 1280
            self.head_act = make_activation(head.act)
            self.head_hidden_size = hidden
        else:
            self.head_conv = self.head_bn = self.head_act = None
            self.head_hidden_size = st.in_chs  # channels of forward_head(pre_logits=True)
        self.global_pool = global_pool
        self.grad_checkpointing = False
        self.preprocessing: Preprocessing = IMAGENET  # what the weights expect: set by mobilenets.load_weights
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

    @property
    def pretrained_cfg(self) -> dict:
        """timm's ``pretrained_cfg``: the input size, crop fraction, interpolation and mean / std the weights
        expect (from :attr:`preprocessing`: ImageNet's for a fresh model and for PyTorch weights; mean = std =
        0.5, i.e. [-1, 1] inputs, for Keras / TFLite weights), the pooled size at that input, and the names of
        the first conv and the classifier. ``timm.data.resolve_data_config({}, model=model)`` reads it."""
        return _pretrained_cfg(self.config, self.preprocessing)

    @property
    def default_cfg(self) -> dict:
        """timm's older name of :attr:`pretrained_cfg`."""
        return self.pretrained_cfg

    def get_classifier(self) -> nn.Module:
        """The classifier module (``nn.Identity`` when ``num_classes`` is 0)."""
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a freshly initialised one for ``num_classes`` (0: no classifier, the
        model returns pooled features) and, if given, set the global pooling (``"avg"``, ``"max"``, or ``""``
        for none: then ``num_classes`` must be 0 and the model returns unpooled features, as timm's)."""
        global_pool = self.global_pool if global_pool is None else global_pool
        _check_options(width=self.config.width, num_classes=num_classes, in_chans=self.config.in_chans,
                       dropout=self.config.dropout, bn_eps=self.config.bn_eps, tail=self.config.tail,
                       output_stride=self.config.output_stride, dilation_style=self.config.dilation_style,
                       global_pool=global_pool)
        self.classifier = self._make_classifier(num_classes)
        if isinstance(self.classifier, nn.Linear):
            nn.init.normal_(self.classifier.weight, 0, 0.01)
            nn.init.zeros_(self.classifier.bias)
        self.global_pool = global_pool
        self.config = ModelConfig(**{**self.config.to_dict(), "num_classes": num_classes, "global_pool": global_pool})

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Trade compute for memory in training: each stage's activations are recomputed in the backward pass
        (``torch.utils.checkpoint``) instead of kept. Gradients are unchanged, and so are the batch-norm
        running statistics (the recomputation does not update them a second time)."""
        self.grad_checkpointing = bool(enable)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and stages: the stride-32 feature map (N, num_features, H/32, W/32)."""
        x = self.stem(x)
        if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
            for stage in self.stages:
                x = _checkpoint(stage, x)
            return x
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, V3's 1x1 head conv, dropout and classifier (``pre_logits``: stop before the classifier).
        Without global pooling (``global_pool=""``) the head conv runs at every position (it is 1x1) and the
        result keeps its (N, C, H, W) shape, as timm's MobileNetV3 does."""
        # global average pool written as adaptive_avg_pool2d (= mean over H, W): litert-torch's int8 quantizer
        # annotates this op and not mean, so V3's int8 TFLite files pool in int8 (export/core.py)
        if self.global_pool == "avg":
            x = nn.functional.adaptive_avg_pool2d(x, 1)
        elif self.global_pool == "max":
            x = nn.functional.adaptive_max_pool2d(x, 1)
        if self.head_conv is not None:
            x = self.head_conv(x)
            if self.head_bn is not None:
                x = self.head_bn(x)
            x = self.head_act(x)
        if self.global_pool != "":
            x = x.flatten(1)
        x = self.dropout(x)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """timm's ``forward_intermediates``: the feature maps of :attr:`feature_info` taps ``indices`` (None:
        all; an int n: the last n; a list: those, negative ones counted from the end), and the final feature
        map (:meth:`forward_features`'s output) unless ``intermediates_only``. ``stop_early`` (with
        ``intermediates_only``) skips the stages past the last wanted tap. ``norm`` is accepted and does
        nothing: MobileNets have no final norm layer. Only ``output_fmt="NCHW"``."""
        if output_fmt != "NCHW":
            raise MobileNetsError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        if stop_early and not intermediates_only:
            raise MobileNetsError("stop_early needs intermediates_only=True (the final features need every stage)")
        take, last = take_indices(len(self.feature_info), indices)
        offset = 1 if self._stem_tap else 0  # feature index of stages[0]
        out: List[torch.Tensor] = []
        x = self.stem(x)
        if self._stem_tap and 0 in take:
            out.append(x)
        checkpointing = self.grad_checkpointing and self.training and not torch.jit.is_scripting()
        for i, stage in enumerate(self.stages):
            if not stop_early or i + offset <= last:
                x = _checkpoint(stage, x) if checkpointing else stage(x)
                if i + offset in take:
                    out.append(x)
        if intermediates_only:
            return out
        return x, out

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """timm's ``prune_intermediate_layers``: drop the stages past the last of the :attr:`feature_info` taps
        ``indices`` (as in :meth:`forward_intermediates`) and, with ``prune_head``, the head (no head conv, no
        pooling, no classifier: ``forward`` returns the last kept feature map). Returns the taps' absolute
        indices. The pruned model is a feature extractor: its ``config`` no longer rebuilds it, and full
        checkpoints load into it with ``strict=False``. ``prune_norm``: no norm layer to prune."""
        take, last = take_indices(len(self.feature_info), indices)
        n_stages = last + 1 - (1 if self._stem_tap else 0)
        if n_stages < len(self.stages) and not prune_head:
            raise MobileNetsError(f"taps {take} drop the stages the head reads: prune_head=False needs the last "
                                  f"tap (index {len(self.feature_info) - 1})")
        self.stages = self.stages[:max(n_stages, 0)]
        self.num_features = self.feature_info[last]["num_chs"]
        if prune_head:
            self.head_conv = self.head_bn = self.head_act = None
            self.head_hidden_size = self.num_features
            self.reset_classifier(0, "")
        return take


def take_indices(n: int, indices: Optional[Union[int, Sequence[int]]]) -> Tuple[List[int], int]:
    """timm's ``feature_take_indices``: the absolute indices of ``indices`` among ``n`` taps (None: all; an int
    k: the last k; a sequence: those, negative from the end) and the largest; out of range is a
    :class:`MobileNetsError`."""
    if indices is None:
        indices = n
    if isinstance(indices, int):
        if not 0 < indices <= n:
            raise MobileNetsError(f"indices: the last {indices} of {n} feature maps is out of range (1 to {n})")
        take = [n - indices + i for i in range(indices)]
    else:
        take: List[int] = []
        for i in indices:
            idx = n + i if i < 0 else i
            if not 0 <= idx < n:
                raise MobileNetsError(f"indices: feature index {i} is out of range (0 to {n - 1}, or -{n} to -1)")
            take.append(idx)
        if not take:
            raise MobileNetsError("indices: no feature index given")
    return take, max(take)


def _pretrained_cfg(config: ModelConfig, pre: Preprocessing) -> dict:
    side = pre.crop
    pool = -(-side // config.output_stride)  # every downsampling conv maps n to ceil(n / 2)
    return {
        "architecture": config.name,
        "num_classes": config.num_classes,
        "input_size": (config.in_chans, side, side),
        "pool_size": (pool, pool),
        "crop_pct": side / pre.resize,
        "crop_mode": "center",
        "interpolation": pre.interpolation,
        "mean": pre.mean,
        "std": pre.std,
        "first_conv": "stem.conv",
        "classifier": "classifier",
    }


@torch.jit.unused
def _checkpoint(stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``stage(x)`` with activation checkpointing; the recomputation in the backward pass leaves the
    batch-norm running statistics as the forward pass left them."""
    from torch.utils.checkpoint import checkpoint

    return checkpoint(stage, x, use_reentrant=False, context_fn=lambda: (_noop(), _bn_stats_kept(stage)))


@contextmanager
def _noop():
    yield


@contextmanager
def _bn_stats_kept(module: nn.Module):
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [[b.clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked)] for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (mean, var, n) in zip(norms, saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(n)


def _check_options(*, width, num_classes, in_chans, dropout, bn_eps, tail, output_stride, dilation_style,
                   global_pool="avg") -> None:
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
        (global_pool in GLOBAL_POOLS, f"global_pool must be one of {GLOBAL_POOLS}, got {global_pool!r}"),
        (global_pool != "" or num_classes == 0,
         f"global_pool='' (no pooling) needs num_classes=0, got {num_classes!r}: a classifier needs pooled features"),
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
