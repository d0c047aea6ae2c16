"""LR-ASPP, "Lite Reduced Atrous Spatial Pyramid Pooling" (V3 section 6.4, Figure 10), on MobileNetV3.

Two configurations, each a row of :data:`LRASPP_SPECS`:

- ``"paper"``: the TF DeepLab definition the V3 paper's Cityscapes numbers come from (model zoo flags for
  ``mobilenetv3_large_cityscapes_trainfine``: ``--model_variant=mobilenet_v3_large_seg
  --image_pooling_crop_size=769,769 --image_pooling_stride=4,5 --add_image_level_feature=1
  --aspp_convs_filters=128 --aspp_with_concat_projection=0 --aspp_with_squeeze_and_excitation=1
  --decoder_use_sum_merge=1 --decoder_filters=19 --decoder_output_is_logits=1 --image_se_uses_qsigmoid=1
  --decoder_output_stride=8``). Backbone: TF DeepLab ``mobilenet_v3_{large,small}_seg`` (the last stage
  halved and the 13th / 9th expansion cut to 336 / 144: our ``tail="segmentation"``), up to its last 1x1 conv
  (``final_endpoint`` ``layer_17`` / ``layer_13``), output stride 16 by TF-slim dilation (or 32). Head
  (deeplab/model.py ``extract_features`` + ``refine_by_decoder`` / ``_decoder_with_sum_merge``):

  - ``cbr``: 1x1 conv 128 + BN + ReLU on the stride-16 features (scope ``aspp0``);
  - ``scale``: average pool -> 1x1 conv 128 *with bias* (no BN: ``image_feature_normalizer_fn = None``) ->
    q-sigmoid = relu6(x + 3) / 6 (``image_se_uses_qsigmoid``; Figure 10 draws a sigmoid) -> bilinear resize
    back to the feature map (scope ``image_pooling``); ``cbr * scale``;
  - resize to the low-level map (stride 8), ``high_classifier`` 1x1 to classes (``decoder_conv0``), plus
    ``low_classifier`` 1x1 to classes on the low-level features (``feature_projection0``): the decoder end
    point ``layer_7/depthwise_output`` (Large, 120 ch) / ``layer_4/depthwise_output`` (Small, 88 ch), i.e.
    the depthwise output of the last stride-8 block; sum = logits;
  - every resize ``align_corners=True`` (deeplab/core/utils.py ``resize_bilinear``), then logits -> input size.

- ``"torchvision"``: ``torchvision.models.segmentation.lraspp_mobilenet_v3_large`` exactly: the full 960 tail
  (``_lraspp_mobilenetv3`` builds ``mobilenet_v3_large(dilated=True)``, no reduced tail), output stride 16
  with torchvision-style dilation, low tap = the output of the block that downsamples to stride 8
  (``stage_indices[-4]``, "C2": the first 40-ch block of Large), global average pool -> 1x1 conv 128 without
  bias -> sigmoid, ``align_corners=False``.

The pooling branch of the paper config (``pooling``):

- ``"global"`` (default): global average pooling. TF DeepLab's own choice when no crop size is given, and
  *identical* to the 49x49 pool at the 769x769 training crops (the kernel is the whole 49x49 map there), so
  the paper's training graph is exactly this; it works at any input size and in every runtime (a global
  mean), where a 49x49 kernel needs inputs of at least 769 px (ceil(769 / 16) = 49) and large-kernel average
  pools are missing from some accelerators' op sets.
- ``"tf"``: the model zoo flags' evaluation graph: kernel ``scale_dimension(769, 1 / output_stride)`` (49 at
  output stride 16, 25 at 32), stride (4, 5) in feature-map pixels (``image_pooling_stride=4,5``, passed to
  ``slim.avg_pool2d`` on the features), VALID, then resized back: the released checkpoints' evaluation graph
  at 1025x2049 (a 65x129 map pooled to 5x17). It cannot run at 513x1025 (a 33x65 map, smaller than the
  kernel), so V3 Table 8's half-resolution rows were not computed with it.
- ``"figure10"``: the same kernel with the stride V3 Figure 10 prints, (16, 20).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MobileNetsError
from ..features import FeatureExtractor, Tap
from ..layers import ConvNormAct
from ..model import MobileNet
from ..mobilenet_v3 import MOBILENET_V3_LARGE, MOBILENET_V3_SMALL
from ..registry import register_model
from ..spec import Architecture

__all__ = ["LRASPP", "LRASPPHead", "PoolingGate", "LRASPPConfig", "LRASPPSpec", "LRASPP_SPECS", "POOLINGS",
           "lraspp_mobilenet_v3_large", "lraspp_mobilenet_v3_small", "pool_geometry"]

POOLINGS = ("global", "tf", "figure10")
HEAD_BN_EPS = 1e-5  # TF DeepLab's head batch norm (get_batch_norm_params(epsilon=1e-5)); torchvision's
#                     LRASPPHead uses nn.BatchNorm2d's default, also 1e-5
IMAGE_POOLING_CROP = 769  # --image_pooling_crop_size=769,769 (Cityscapes training crops)
POOL_STRIDES = {"tf": (4, 5), "figure10": (16, 20)}  # --image_pooling_stride=4,5 / V3 Figure 10


@dataclass(frozen=True)
class LRASPPSpec:
    """One configuration of the LR-ASPP network, as a table row (see the module docstring for sources)."""

    source: str
    tail: str  # backbone tail (model.ModelConfig.tail)
    dilation_style: str  # where the dilation starts (model.ModelConfig.dilation_style)
    output_strides: tuple[int, ...]  # allowed output strides of the high-level features
    low_block: str  # "last": last stride-8 block (TF decoder end point); "first": the block reaching 8 (C2)
    low_point: str  # features.Tap point of that block
    inter_channels: int  # aspp_convs_filters=128 / torchvision inter_channels=128
    gate: str  # "hardsigmoid" (q_sigmoid) or "sigmoid"
    gate_bias: bool  # the pooling branch's 1x1 conv has a bias (TF: no normalizer -> biases) or not
    align_corners: bool  # bilinear resizes: TF resize_bilinear(align_corners=True) / F.interpolate(False)


LRASPP_SPECS: dict[str, LRASPPSpec] = {
    "paper": LRASPPSpec(
        source="V3 section 6.4 / Figure 10; TF DeepLab model zoo flags for mobilenetv3_*_cityscapes_trainfine",
        tail="segmentation", dilation_style="tf", output_strides=(16, 32), low_block="last",
        low_point="depthwise", inter_channels=128, gate="hardsigmoid", gate_bias=True, align_corners=True,
    ),
    "torchvision": LRASPPSpec(
        source="torchvision.models.segmentation.lraspp (LRASPPHead, _lraspp_mobilenetv3), "
               "mobilenet_v3_large(dilated=True)",
        tail="full", dilation_style="torchvision", output_strides=(16,), low_block="first", low_point="output",
        inter_channels=128, gate="sigmoid", gate_bias=False, align_corners=False,
    ),
}


@dataclass(frozen=True)
class LRASPPConfig:
    """Every option of an LR-ASPP model: ``create_model(c.name, **{k: v for k, v in c.to_dict().items()
    if k != "name"})`` rebuilds it (checkpoints save it)."""

    name: str
    width: float = 1.0
    num_classes: int = 21
    in_chans: int = 3
    config: str = "paper"
    output_stride: int = 16
    pooling: str = "global"
    bn_eps: float = 1e-3
    tf_padding: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def pool_geometry(pooling: str, output_stride: int) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """(kernel, stride) of the pooling branch's average pool in feature-map pixels, or None for global
    pooling. The kernel is TF DeepLab's ``scale_dimension(769, 1 / output_stride)`` = (769 - 1) / os + 1."""
    if pooling == "global":
        return None
    k = int((IMAGE_POOLING_CROP - 1) / output_stride + 1)
    return (k, k), POOL_STRIDES[pooling]


class PoolingGate(nn.Module):
    """The second branch of LR-ASPP (V3 Figure 10): average pool -> 1x1 conv -> (hard) sigmoid. It plays the
    role of a squeeze-excite over the 128 channels of the first branch (``aspp_with_squeeze_and_excitation``).

    Returns the gate at the pooled resolution: (N, C, 1, 1) for global pooling, else the VALID average-pool
    grid (the caller resizes it to the feature map)."""

    def __init__(self, in_chs: int, out_chs: int, *, pool: tuple[tuple[int, int], tuple[int, int]] | None,
                 gate: str, bias: bool) -> None:
        super().__init__()
        self.pool = pool
        self.conv = nn.Conv2d(in_chs, out_chs, 1, bias=bias)
        self.gate = nn.Hardsigmoid() if gate == "hardsigmoid" else nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is None:
            # adaptive_avg_pool2d rather than mean(): see MobileNet.forward_head (int8 TFLite export)
            s = F.adaptive_avg_pool2d(x, 1)
        else:
            (kh, kw), stride = self.pool
            if x.shape[-2] < kh or x.shape[-1] < kw:
                raise MobileNetsError(
                    f"the {kh}x{kw} pooling kernel needs a feature map of at least {kh}x{kw}, got "
                    f"{x.shape[-2]}x{x.shape[-1]} (an input of at least 769x769): use pooling='global'")
            s = F.avg_pool2d(x, (kh, kw), stride)
        return self.gate(self.conv(s))


class LRASPPHead(nn.Module):
    """The LR-ASPP head on (low, high) feature maps: ``cbr(high) * scale(high)``, resized to the low-level
    map, ``high_classifier`` + ``low_classifier(low)``: logits at the low-level resolution (stride 8).
    Sub-module names follow torchvision's ``LRASPPHead``."""

    def __init__(self, low_chs: int, high_chs: int, num_classes: int, spec: LRASPPSpec, *,
                 pool: tuple[tuple[int, int], tuple[int, int]] | None) -> None:
        super().__init__()
        inter = spec.inter_channels
        self.align_corners = spec.align_corners
        self.cbr = ConvNormAct(high_chs, inter, 1, act="relu", bn_eps=HEAD_BN_EPS)
        self.scale = PoolingGate(high_chs, inter, pool=pool, gate=spec.gate, bias=spec.gate_bias)
        self.low_classifier = nn.Conv2d(low_chs, num_classes, 1)
        self.high_classifier = nn.Conv2d(inter, num_classes, 1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        x = self.cbr(high)
        s = self.scale(high)
        if self.scale.pool is not None:  # a pooled grid (not 1x1): resized back to the feature map
            s = F.interpolate(s, size=x.shape[-2:], mode="bilinear", align_corners=self.align_corners)
        x = x * s
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=self.align_corners)
        return self.low_classifier(low) + self.high_classifier(x)


class LRASPP(nn.Module):
    """LR-ASPP semantic segmentation on a MobileNetV3 backbone: ``forward(x)`` gives (N, num_classes, H, W)
    logits at the input resolution.

    ``backbone`` is a :class:`~mobilenets.features.FeatureExtractor` over the MobileNet's ``stem`` and
    ``stages`` (classification weights load into it with ``strict=False``), ``head`` an :class:`LRASPPHead`,
    ``config`` the :class:`LRASPPConfig`. Build it with :func:`mobilenets.create_model`.
    """

    def __init__(self, arch: Architecture, config: LRASPPConfig) -> None:
        super().__init__()
        spec = LRASPP_SPECS[config.config]
        body = MobileNet(arch, width=config.width, num_classes=0, in_chans=config.in_chans,
                         tf_padding=config.tf_padding, bn_eps=config.bn_eps, tail=spec.tail,
                         output_stride=config.output_stride, dilation_style=spec.dilation_style)
        stride8 = [b.index for b in body.block_info if b.table_stride == 8]
        low = Tap(stride8[-1] if spec.low_block == "last" else stride8[0], spec.low_point)
        high = Tap(len(body.block_info) - 1)  # the last 1x1 conv (TF final_endpoint layer_17 / layer_13)
        self.config = config
        self.spec = spec
        self.backbone = FeatureExtractor(body, taps=[low, high])
        low_info, high_info = self.backbone.feature_info
        self.head = LRASPPHead(low_info.channels, high_info.channels, config.num_classes, spec,
                               pool=pool_geometry(config.pooling, config.output_stride))
        self._init_head()

    def _init_head(self) -> None:
        for m in self.head.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self.backbone(x)
        logits = self.head(low, high)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=self.spec.align_corners)


def _build(arch: Architecture, name: str, *, width: float, num_classes: int, in_chans: int, config: str,
           output_stride: int, pooling: str, bn_eps: float, tf_padding: bool,
           dropout: float | None) -> LRASPP:
    def integer(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    spec = LRASPP_SPECS.get(config) if isinstance(config, str) else None
    checks = [
        (spec is not None, f"config must be one of {', '.join(LRASPP_SPECS)}, got {config!r}"),
        (integer(num_classes) and 1 <= num_classes <= 100_000,
         f"num_classes must be an integer in [1, 100000], got {num_classes!r}"),
        (pooling in POOLINGS, f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}"),
        (isinstance(width, (int, float)) and not isinstance(width, bool), f"width must be a number, got {width!r}"),
        (spec is None or (integer(output_stride) and output_stride in spec.output_strides),
         f"output_stride must be {' or '.join(map(str, spec.output_strides)) if spec else '16'} for "
         f"config={config!r}, got {output_stride!r}"),
        (config != "torchvision" or pooling == "global",
         f"config='torchvision' pools globally (AdaptiveAvgPool2d(1)); pooling={pooling!r} is a paper option"),
        (dropout in (None, 0, 0.0),
         f"LR-ASPP has no dropout (neither TF DeepLab's nor torchvision's), got dropout={dropout!r}"),
        (isinstance(tf_padding, bool), f"tf_padding must be True or False, got {tf_padding!r}"),
    ]
    for ok, message in checks:
        if not ok:
            raise MobileNetsError(message)
    cfg = LRASPPConfig(name, float(width), num_classes, in_chans, config, output_stride, pooling, bn_eps,
                       tf_padding)
    return LRASPP(arch, cfg)


@register_model(published_widths=(1.0,), paper="V3 section 6.4 / Figure 10, Tables 7-8", task="segmentation")
def lraspp_mobilenet_v3_large(*, width: float = 1.0, num_classes: int = 21, in_chans: int = 3,
                              config: str = "paper", output_stride: int = 16, pooling: str = "global",
                              bn_eps: float = 1e-3, tf_padding: bool = False,
                              dropout: float | None = None) -> LRASPP:
    """LR-ASPP on MobileNetV3-Large (V3 section 6.4).

    Args:
        width: the backbone's width multiplier (the head keeps 128 channels, as TF DeepLab's).
        num_classes: classes (21: PASCAL VOC with background; the paper's Cityscapes models have 19).
        config: ``"paper"`` (TF DeepLab's ``mobilenet_v3_large_seg`` LR-ASPP) or ``"torchvision"``
            (torchvision's ``lraspp_mobilenet_v3_large``, whose state dict loads through
            :func:`mobilenets.weights.torchvision_segmentation.load_torchvision_lraspp`).
        output_stride: 16 (default) or, for the paper config, 32 (V3 Table 8's OS32 rows).
        pooling: the paper config's pooling branch: ``"global"`` (default), ``"tf"`` or ``"figure10"``
            (see the module docstring for why global is the default).
        bn_eps: the backbone's batch-norm epsilon (1e-3: TF-slim's and torchvision's MobileNetV3); the head's
            batch norm uses 1e-5 as both references do.
        tf_padding: TensorFlow "SAME" padding in the backbone's strided convs.
        dropout: accepted for :func:`mobilenets.create_model`; must be None or 0 (LR-ASPP has no dropout).
    """
    return _build(MOBILENET_V3_LARGE, "lraspp_mobilenet_v3_large", width=width, num_classes=num_classes,
                  in_chans=in_chans, config=config, output_stride=output_stride, pooling=pooling, bn_eps=bn_eps,
                  tf_padding=tf_padding, dropout=dropout)


@register_model(published_widths=(1.0,), paper="V3 section 6.4 / Figure 10, Tables 7-8", task="segmentation")
def lraspp_mobilenet_v3_small(*, width: float = 1.0, num_classes: int = 21, in_chans: int = 3,
                              config: str = "paper", output_stride: int = 16, pooling: str = "global",
                              bn_eps: float = 1e-3, tf_padding: bool = False,
                              dropout: float | None = None) -> LRASPP:
    """LR-ASPP on MobileNetV3-Small (V3 section 6.4): options as :func:`lraspp_mobilenet_v3_large`. The
    ``"torchvision"`` config applies torchvision's construction (``_lraspp_mobilenetv3``) to Small (low tap:
    the first 24-ch block, stride 8); torchvision itself publishes no Small LR-ASPP."""
    return _build(MOBILENET_V3_SMALL, "lraspp_mobilenet_v3_small", width=width, num_classes=num_classes,
                  in_chans=in_chans, config=config, output_stride=output_stride, pooling=pooling, bn_eps=bn_eps,
                  tf_padding=tf_padding, dropout=dropout)
