"""DeepLabv3 on MobileNetV2 (V2 section 6.3, Table 7; DeepLabv3: Chen et al. 2017, arXiv 1706.05587).

The V2 paper's "MNet V2*" row: the head reads the *second-to-last* feature map (the 320-ch output of the last
bottleneck, TF DeepLab's ``_MOBILENET_V2_FINAL_ENDPOINT = 'layer_18'``: the body without the final 1x1 1280
conv), output stride 16 or 8 by TF-slim dilation (the block that would downsample keeps the current rate,
the blocks after it get the doubled one). Head, TF DeepLab ``deeplab/model.py`` ``extract_features`` with
``aspp_with_batch_norm`` (256 filters, every conv + BN (eps 1e-5) + ReLU), branches concatenated in this
order:

====================  ========================================================  ==========================
TF scope              what                                                      ours
====================  ========================================================  ==========================
``image_pooling``     average pool over the map -> 1x1 conv 256 -> bilinear    ``head.image_pooling``
                      resize back (``add_image_level_feature``)
``aspp0``             1x1 conv 256                                              ``head.aspp0``
``aspp1..3``          3x3 conv 256, rates 6 / 12 / 18 at OS16 (12 / 24 / 36 at   ``head.atrous.0..2``
                      OS8; ``atrous_rates``), only with ``aspp=True``
``concat_projection`` 1x1 conv 256 on the concatenation, dropout keep 0.9        ``head.concat_projection``
``logits/semantic``   1x1 conv to classes with bias, no BN / activation          ``classifier``
====================  ========================================================  ==========================

then a bilinear resize (``align_corners=True``) to the input size. ``aspp=False`` is Table 7's "OS16, no
ASPP" row (2.11M params, 2.75B MAdds, 75.32 mIoU); ``aspp=True`` the "with ASPP" row (4.52M, 5.8B, 75.70).
TF DeepLab pools with a kernel of the training crop size / output stride (33x33 at 513x513: the whole map);
we pool globally, the same at the crop size and defined at every input size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MobileNetsError
from ..features import FeatureExtractor, Tap
from ..layers import ConvNormAct, create_conv2d, make_activation
from ..mobilenet_v2 import MOBILENET_V2
from ..model import MobileNet
from ..registry import register_model

__all__ = ["DeepLabV3", "DeepLabV3Head", "ImagePooling", "AtrousConv", "DeepLabV3Config", "ATROUS_RATES",
           "ASPP_FILTERS", "deeplabv3_mobilenet_v2"]

ASPP_FILTERS = 256  # depth = 256 in extract_features (aspp_convs_filters' default)
HEAD_BN_EPS = 1e-5  # get_batch_norm_params(decay=0.9997, epsilon=1e-5) of the ASPP head
DROPOUT = 0.1  # slim.dropout(keep_prob=0.9) after concat_projection
# DeepLabv3 section 4.3 / TF DeepLab README: rates (6, 12, 18) at output stride 16, doubled at 8.
ATROUS_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}


@dataclass(frozen=True)
class DeepLabV3Config:
    """Every option of a DeepLabv3 model: ``create_model(c.name, **{k: v for k, v in c.to_dict().items()
    if k != "name"})`` rebuilds it (checkpoints save it)."""

    name: str
    width: float = 1.0
    num_classes: int = 21
    in_chans: int = 3
    output_stride: int = 16
    aspp: bool = False
    dropout: float = DROPOUT
    bn_eps: float = 1e-3
    tf_padding: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


class ImagePooling(ConvNormAct):
    """DeepLabv3's image-level feature (DeepLabv3 section 3.3): global average pool -> 1x1 conv + BN + ReLU ->
    bilinear resize back to the feature map (a broadcast from 1x1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # adaptive_avg_pool2d rather than mean(): see MobileNet.forward_head (int8 TFLite export)
        y = super().forward(F.adaptive_avg_pool2d(x, 1))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=True)


class AtrousConv(nn.Module):
    """One atrous branch of ASPP (DeepLabv3 section 3.3): 3x3 conv with dilation ``rate`` + BN + ReLU."""

    def __init__(self, in_chs: int, out_chs: int, rate: int) -> None:
        super().__init__()
        self.conv = create_conv2d(in_chs, out_chs, 3, dilation=rate)
        self.bn = nn.BatchNorm2d(out_chs, eps=HEAD_BN_EPS)
        self.act = make_activation("relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class DeepLabV3Head(nn.Module):
    """Image pooling + 1x1 branch (+ three atrous branches), concatenated, 1x1 projection, dropout."""

    def __init__(self, in_chs: int, *, rates: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        d = ASPP_FILTERS
        self.image_pooling = ImagePooling(in_chs, d, 1, act="relu", bn_eps=HEAD_BN_EPS)
        self.aspp0 = ConvNormAct(in_chs, d, 1, act="relu", bn_eps=HEAD_BN_EPS)
        self.atrous = nn.ModuleList(AtrousConv(in_chs, d, r) for r in rates)
        self.concat_projection = ConvNormAct(d * (2 + len(rates)), d, 1, act="relu", bn_eps=HEAD_BN_EPS)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.image_pooling(x), self.aspp0(x)] + [branch(x) for branch in self.atrous]
        return self.dropout(self.concat_projection(torch.cat(branches, dim=1)))


class DeepLabV3(nn.Module):
    """DeepLabv3 on MobileNetV2: ``forward(x)`` gives (N, num_classes, H, W) logits at the input resolution.

    ``backbone``: a :class:`~mobilenets.features.FeatureExtractor` over the V2 stem and stages up to the 320-ch
    block (classification weights load into it with ``strict=False``); ``head``: :class:`DeepLabV3Head`;
    ``classifier``: the 1x1 logits conv; ``config``: :class:`DeepLabV3Config`.
    """

    def __init__(self, config: DeepLabV3Config) -> None:
        super().__init__()
        body = MobileNet(MOBILENET_V2, width=config.width, num_classes=0, in_chans=config.in_chans,
                         tf_padding=config.tf_padding, bn_eps=config.bn_eps, output_stride=config.output_stride,
                         dilation_style="tf")
        last_bottleneck = [b.index for b in body.block_info if b.exp_chs is not None][-1]
        self.config = config
        self.backbone = FeatureExtractor(body, taps=[Tap(last_bottleneck)])
        rates = ATROUS_RATES[config.output_stride] if config.aspp else ()
        self.head = DeepLabV3Head(self.backbone.feature_info[0].channels, rates=rates, dropout=config.dropout)
        self.classifier = nn.Conv2d(ASPP_FILTERS, config.num_classes, 1)
        self._init_head()

    def _init_head(self) -> None:
        for m in self.head.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
        nn.init.normal_(self.classifier.weight, 0, 0.01)  # get_branch_logits: truncated_normal(stddev=0.01)
        nn.init.zeros_(self.classifier.bias)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (features,) = self.backbone(x)
        logits = self.classifier(self.head(features))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=True)


@register_model(published_widths=(0.5, 1.0), paper="V2 section 6.3, Table 7", task="segmentation")
def deeplabv3_mobilenet_v2(*, width: float = 1.0, num_classes: int = 21, in_chans: int = 3,
                           output_stride: int = 16, aspp: bool = False, dropout: float | None = None,
                           bn_eps: float = 1e-3, tf_padding: bool = False) -> DeepLabV3:
    """DeepLabv3 on MobileNetV2 (V2 Table 7, "MNet V2*").

    Args:
        width: the backbone's width multiplier (the head keeps 256 channels, as TF DeepLab's).
        num_classes: classes (21: PASCAL VOC with background).
        output_stride: 16 or 8 (dilating the last one / two stages, TF-slim style).
        aspp: add the three atrous 3x3 branches (rates 6/12/18 at OS16, 12/24/36 at OS8); False is Table 7's
            "no ASPP" row, the configuration of TF DeepLab's released MobileNetV2 models.
        dropout: after the projection; None: TF DeepLab's 0.1 (keep_prob 0.9).
        bn_eps: the backbone's batch-norm epsilon (1e-3: TF-slim's); the head's use 1e-5 as TF DeepLab's.
        tf_padding: TensorFlow "SAME" padding in the backbone's strided convs.
    """
    def integer(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    dropout = DROPOUT if dropout is None else dropout
    checks = [
        (isinstance(width, (int, float)) and not isinstance(width, bool), f"width must be a number, got {width!r}"),
        (integer(num_classes) and 1 <= num_classes <= 100_000,
         f"num_classes must be an integer in [1, 100000], got {num_classes!r}"),
        (integer(output_stride) and output_stride in ATROUS_RATES,
         f"output_stride must be 16 or 8, got {output_stride!r}"),
        (isinstance(aspp, bool), f"aspp must be True or False, got {aspp!r}"),
        (isinstance(dropout, (int, float)) and not isinstance(dropout, bool) and 0 <= dropout < 1,
         f"dropout must be in [0, 1), got {dropout!r}"),
        (isinstance(tf_padding, bool), f"tf_padding must be True or False, got {tf_padding!r}"),
    ]
    for ok, message in checks:
        if not ok:
            raise MobileNetsError(message)
    return DeepLabV3(DeepLabV3Config("deeplabv3_mobilenet_v2", float(width), num_classes, in_chans, output_stride,
                                     aspp, float(dropout), bn_eps, tf_padding))
