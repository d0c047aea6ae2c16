"""MobileNetV4 (Qin et al. 2024, arXiv 2404.10518): the convolutional Small / Medium / Large models and the
Hybrid Medium / Large models with Mobile MQA attention.

One row per row of TF Model Garden's block specs (``official/vision/modeling/backbones/mobilenet.py``:
``MNV4ConvSmall_BLOCK_SPECS``, ``_mnv4_conv_medium_block_specs``, ``MNV4ConvLarge_BLOCK_SPECS``,
``_mnv4_hybrid_medium_block_specs``, ``_mnv4_hybrid_large_block_specs``), the authors' release of the
paper's architecture tables; timm's ``_gen_mobilenet_v4`` (``timm/models/mobilenetv3.py``) builds the same block lists. Row
arguments are in TF's order: ``UIB(start_dw_ks, middle_dw_ks, strides, filters, expand_ratio)``,
``FusedIB(kernel, strides, filters, expand_ratio)``, ``Conv(kernel, filters, strides)``.

Every model ends the same way (TF ``convbn(1, 1, 960)``, ``gpooling``, ``convbn(1, 1, 1280)``): a 1x1 conv to
960 + BN + act, global average pooling, a 1x1 conv to 1280 **with** batch norm (and no bias) + act, dropout,
the classifier. The 1280 keeps its width below width 1.0 (TF ``finegrain_classification_mode``).
"""

from __future__ import annotations

from .model import MobileNet
from .registry import register_model
from .spec import MQA, UIB, Architecture, Conv, FusedIB, Head

RE, GE = "relu", "gelu"

# TF Model Garden MNV4 Conv-M ImageNet config: dropout_rate 0.2 (stochastic_depth_drop_rate 0.075, not flat:
# pass drop_path_rate=0.075 to train the recipe). Our default for every V4 model.
_HEAD = Head(hidden=1280, act=RE, dropout=0.2, width_floor_one=True, norm=True)


# MNV4ConvSmall_BLOCK_SPECS. Its convbn rows at 56px and 28px are plain 3x3 / 1x1 convs (no residuals).
MOBILENET_V4_CONV_SMALL = Architecture(
    name="mobilenet_v4_conv_small",
    stem=Conv(3, 32, 2, RE),  # 112px after stride 2
    body=(
        # 56px
        Conv(3, 32, 2, RE),
        Conv(1, 32, 1, RE),
        # 28px
        Conv(3, 96, 2, RE),
        Conv(1, 64, 1, RE),
        # 14px
        UIB(5, 5, 2, 96, 3.0),  # ExtraDW
        UIB(0, 3, 1, 96, 2.0),  # IB
        UIB(0, 3, 1, 96, 2.0),  # IB
        UIB(0, 3, 1, 96, 2.0),  # IB
        UIB(0, 3, 1, 96, 2.0),  # IB
        UIB(3, 0, 1, 96, 4.0),  # ConvNext
        # 7px
        UIB(3, 3, 2, 128, 6.0),  # ExtraDW
        UIB(5, 5, 1, 128, 4.0),  # ExtraDW
        UIB(0, 5, 1, 128, 4.0),  # IB
        UIB(0, 5, 1, 128, 3.0),  # IB
        UIB(0, 3, 1, 128, 4.0),  # IB
        UIB(0, 3, 1, 128, 4.0),  # IB
        Conv(1, 960, 1, RE),
    ),
    head=_HEAD,  # gpooling, convbn 1x1 1280
)

# _mnv4_conv_medium_block_specs()
MOBILENET_V4_CONV_MEDIUM = Architecture(
    name="mobilenet_v4_conv_medium",
    stem=Conv(3, 32, 2, RE),
    body=(
        FusedIB(3, 2, 48, 4.0),
        # 3rd stage
        UIB(3, 5, 2, 80, 4.0),
        UIB(3, 3, 1, 80, 2.0),
        # 4th stage
        UIB(3, 5, 2, 160, 6.0),
        UIB(3, 3, 1, 160, 4.0),
        UIB(3, 3, 1, 160, 4.0),
        UIB(3, 5, 1, 160, 4.0),
        UIB(3, 3, 1, 160, 4.0),
        UIB(3, 0, 1, 160, 4.0),
        UIB(0, 0, 1, 160, 2.0),
        UIB(3, 0, 1, 160, 4.0),
        # 5th stage
        UIB(5, 5, 2, 256, 6.0),
        UIB(5, 5, 1, 256, 4.0),
        UIB(3, 5, 1, 256, 4.0),
        UIB(3, 5, 1, 256, 4.0),
        UIB(0, 0, 1, 256, 4.0),
        UIB(3, 0, 1, 256, 4.0),
        UIB(3, 5, 1, 256, 2.0),
        UIB(5, 5, 1, 256, 4.0),
        UIB(0, 0, 1, 256, 4.0),
        UIB(0, 0, 1, 256, 4.0),
        UIB(5, 0, 1, 256, 2.0),
        # FC layers
        Conv(1, 960, 1, RE),
    ),
    head=_HEAD,
)

# MNV4ConvLarge_BLOCK_SPECS
MOBILENET_V4_CONV_LARGE = Architecture(
    name="mobilenet_v4_conv_large",
    stem=Conv(3, 24, 2, RE),
    body=(
        FusedIB(3, 2, 48, 4.0),
        UIB(3, 5, 2, 96, 4.0),
        UIB(3, 3, 1, 96, 4.0),
        UIB(3, 5, 2, 192, 4.0),
        UIB(3, 3, 1, 192, 4.0),
        UIB(3, 3, 1, 192, 4.0),
        UIB(3, 3, 1, 192, 4.0),
        UIB(3, 5, 1, 192, 4.0),
        UIB(5, 3, 1, 192, 4.0),
        UIB(5, 3, 1, 192, 4.0),
        UIB(5, 3, 1, 192, 4.0),
        UIB(5, 3, 1, 192, 4.0),
        UIB(5, 3, 1, 192, 4.0),
        UIB(3, 0, 1, 192, 4.0),
        UIB(5, 5, 2, 512, 4.0),
        UIB(5, 5, 1, 512, 4.0),
        UIB(5, 5, 1, 512, 4.0),
        UIB(5, 5, 1, 512, 4.0),
        UIB(5, 0, 1, 512, 4.0),
        UIB(5, 3, 1, 512, 4.0),
        UIB(5, 0, 1, 512, 4.0),
        UIB(5, 0, 1, 512, 4.0),
        UIB(5, 3, 1, 512, 4.0),
        UIB(5, 5, 1, 512, 4.0),
        UIB(5, 0, 1, 512, 4.0),
        UIB(5, 0, 1, 512, 4.0),
        UIB(5, 0, 1, 512, 4.0),
        Conv(1, 960, 1, RE),
    ),
    head=_HEAD,
)


def _uib_ls(start: int, mid: int, stride: int, out: int, exp: float = 4.0, act: str = RE) -> UIB:
    """The hybrids' ``uib(...)``: layer scale on (TF ``use_layer_scale=True``)."""
    return UIB(start, mid, stride, out, exp, act, layer_scale=True)


# _mnv4_hybrid_medium_block_specs(): mhsa_24px = 4 heads of 64, keys/values downsampled by a stride-2 3x3
# depthwise conv; mhsa_12px = the same without downsampling. Both with layer scale.
_MQA_M24 = MQA(160, heads=4, key_dim=64, value_dim=64, kv_stride=2)
_MQA_M12 = MQA(256, heads=4, key_dim=64, value_dim=64, kv_stride=1)

MOBILENET_V4_HYBRID_MEDIUM = Architecture(
    name="mobilenet_v4_hybrid_medium",
    stem=Conv(3, 32, 2, RE),
    body=(
        FusedIB(3, 2, 48, 4.0),
        # 3rd stage
        _uib_ls(3, 5, 2, 80, 4.0),
        _uib_ls(3, 3, 1, 80, 2.0),
        # 4th stage
        _uib_ls(3, 5, 2, 160, 6.0),
        _uib_ls(0, 0, 1, 160, 2.0),
        _uib_ls(3, 3, 1, 160, 4.0),
        _uib_ls(3, 5, 1, 160, 4.0),
        _MQA_M24,
        _uib_ls(3, 3, 1, 160, 4.0),
        _MQA_M24,
        _uib_ls(3, 0, 1, 160, 4.0),
        _MQA_M24,
        _uib_ls(3, 3, 1, 160, 4.0),
        _MQA_M24,
        _uib_ls(3, 0, 1, 160, 4.0),
        # 5th stage
        _uib_ls(5, 5, 2, 256, 6.0),
        _uib_ls(5, 5, 1, 256, 4.0),
        _uib_ls(3, 5, 1, 256, 4.0),
        _uib_ls(3, 5, 1, 256, 4.0),
        _uib_ls(0, 0, 1, 256, 2.0),
        _uib_ls(3, 5, 1, 256, 2.0),
        _uib_ls(0, 0, 1, 256, 2.0),
        _uib_ls(0, 0, 1, 256, 4.0),
        _MQA_M12,
        _uib_ls(3, 0, 1, 256, 4.0),
        _MQA_M12,
        _uib_ls(5, 5, 1, 256, 4.0),
        _MQA_M12,
        _uib_ls(5, 0, 1, 256, 4.0),
        _MQA_M12,
        _uib_ls(5, 0, 1, 256, 4.0),
        Conv(1, 960, 1, RE),
    ),
    head=_HEAD,
)

# _mnv4_hybrid_large_block_specs(): GELU in every conv block (the attention blocks have no activation);
# mhsa_24px = 8 heads of 48 with stride-2 key/value downsampling, mhsa_12px = 8 heads of 64.
_MQA_L24 = MQA(192, heads=8, key_dim=48, value_dim=48, kv_stride=2)
_MQA_L12 = MQA(512, heads=8, key_dim=64, value_dim=64, kv_stride=1)


def _uib_gl(start: int, mid: int, stride: int, out: int) -> UIB:
    return _uib_ls(start, mid, stride, out, 4.0, GE)


MOBILENET_V4_HYBRID_LARGE = Architecture(
    name="mobilenet_v4_hybrid_large",
    stem=Conv(3, 24, 2, GE),
    body=(
        FusedIB(3, 2, 48, 4.0, GE),
        _uib_gl(3, 5, 2, 96),
        _uib_gl(3, 3, 1, 96),
        _uib_gl(3, 5, 2, 192),
        _uib_gl(3, 3, 1, 192),
        _uib_gl(3, 3, 1, 192),
        _uib_gl(3, 3, 1, 192),
        _uib_gl(3, 5, 1, 192),
        _uib_gl(5, 3, 1, 192),
        _uib_gl(5, 3, 1, 192),
        # add attention blocks to 2nd last stage
        _MQA_L24,
        _uib_gl(5, 3, 1, 192),
        _MQA_L24,
        _uib_gl(5, 3, 1, 192),
        _MQA_L24,
        _uib_gl(5, 3, 1, 192),
        _MQA_L24,
        _uib_gl(3, 0, 1, 192),
        # last stage
        _uib_gl(5, 5, 2, 512),
        _uib_gl(5, 5, 1, 512),
        _uib_gl(5, 5, 1, 512),
        _uib_gl(5, 5, 1, 512),
        _uib_gl(5, 0, 1, 512),
        _uib_gl(5, 3, 1, 512),
        _uib_gl(5, 0, 1, 512),
        _uib_gl(5, 0, 1, 512),
        _uib_gl(5, 3, 1, 512),
        _uib_gl(5, 5, 1, 512),
        _MQA_L12,
        _uib_gl(5, 0, 1, 512),
        _MQA_L12,
        _uib_gl(5, 0, 1, 512),
        _MQA_L12,
        _uib_gl(5, 0, 1, 512),
        _MQA_L12,
        _uib_gl(5, 0, 1, 512),
        Conv(1, 960, 1, GE),
    ),
    head=Head(hidden=1280, act=GE, dropout=0.2, width_floor_one=True, norm=True),
)


@register_model(published_widths=(1.0,), paper="V4 / TF MNV4ConvSmall_BLOCK_SPECS")
def mobilenet_v4_conv_small(**kwargs) -> MobileNet:
    """MobileNetV4-Conv-S (TF Model Garden ``MNV4ConvSmall_BLOCK_SPECS``): 73.8% top-1 at 224."""
    return MobileNet(MOBILENET_V4_CONV_SMALL, **kwargs)


@register_model(published_widths=(1.0,), paper="V4 / TF _mnv4_conv_medium_block_specs")
def mobilenet_v4_conv_medium(**kwargs) -> MobileNet:
    """MobileNetV4-Conv-M (TF Model Garden ``_mnv4_conv_medium_block_specs``): 79.9% top-1 at 256."""
    return MobileNet(MOBILENET_V4_CONV_MEDIUM, **kwargs)


@register_model(published_widths=(1.0,), paper="V4 / TF MNV4ConvLarge_BLOCK_SPECS")
def mobilenet_v4_conv_large(**kwargs) -> MobileNet:
    """MobileNetV4-Conv-L (TF Model Garden ``MNV4ConvLarge_BLOCK_SPECS``): 82.9% top-1 at 384."""
    return MobileNet(MOBILENET_V4_CONV_LARGE, **kwargs)


@register_model(published_widths=(1.0,), paper="V4 / TF _mnv4_hybrid_medium_block_specs")
def mobilenet_v4_hybrid_medium(**kwargs) -> MobileNet:
    """MobileNetV4-Hybrid-M with Mobile MQA (TF Model Garden ``_mnv4_hybrid_medium_block_specs``): 80.7% top-1
    at 256."""
    return MobileNet(MOBILENET_V4_HYBRID_MEDIUM, **kwargs)


@register_model(published_widths=(1.0,), paper="V4 / TF _mnv4_hybrid_large_block_specs")
def mobilenet_v4_hybrid_large(**kwargs) -> MobileNet:
    """MobileNetV4-Hybrid-L with Mobile MQA and GELU (TF Model Garden ``_mnv4_hybrid_large_block_specs``):
    83.4% top-1 at 384."""
    return MobileNet(MOBILENET_V4_HYBRID_LARGE, **kwargs)
