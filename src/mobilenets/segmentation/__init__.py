"""Semantic segmentation with MobileNet backbones: LR-ASPP on MobileNetV3 (V3 section 6.4) and DeepLabv3 on
MobileNetV2 (V2 section 6.3). Importing this package registers ``lraspp_mobilenet_v3_large``,
``lraspp_mobilenet_v3_small`` and ``deeplabv3_mobilenet_v2`` (``list_models(task="segmentation")``)."""

from .deeplabv3 import DeepLabV3, DeepLabV3Config, deeplabv3_mobilenet_v2
from .lraspp import LRASPP, LRASPPConfig, lraspp_mobilenet_v3_large, lraspp_mobilenet_v3_small

__all__ = ["LRASPP", "LRASPPConfig", "DeepLabV3", "DeepLabV3Config", "lraspp_mobilenet_v3_large",
           "lraspp_mobilenet_v3_small", "deeplabv3_mobilenet_v2"]
