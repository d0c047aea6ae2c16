"""mobilenets: the MobileNet family (V1, V2, V3) in PyTorch, faithful to the papers."""

from .factory import create_model
from .features import FeatureExtractor
from .model import FeatureInfo, MobileNet, ModelConfig
from .registry import list_models

__version__ = "0.1.0"

__all__ = ["create_model", "list_models", "MobileNet", "ModelConfig", "FeatureInfo", "FeatureExtractor"]
