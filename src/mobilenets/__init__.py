"""mobilenets: the MobileNet family (V1, V2, V3) in PyTorch, faithful to the papers."""

from .checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from .errors import MobileNetsError
from .factory import create_model
from .features import FeatureExtractor
from .model import FeatureInfo, MobileNet, ModelConfig
from .preprocess import IMAGENET, TF_INCEPTION, Preprocessing
from .profile import Profile, profile
from .registry import list_models
from .weights import LoadReport, WeightsInfo, inspect_weights, load_weights, model_from_weights
from .training import TrainConfig, TrainResult, train
from .evaluate import EvalResult, evaluate

__version__ = "0.1.0"

__all__ = [
    "create_model", "list_models", "profile", "Profile", "MobileNet", "ModelConfig", "FeatureInfo",
    "FeatureExtractor", "save_checkpoint", "load_checkpoint", "CheckpointMeta", "Preprocessing", "IMAGENET",
    "TF_INCEPTION", "MobileNetsError", "load_weights", "model_from_weights", "inspect_weights", "LoadReport",
    "WeightsInfo", "TrainConfig", "TrainResult", "train", "EvalResult", "evaluate",
]
