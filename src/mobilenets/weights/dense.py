"""Detector and segmenter weights: our checkpoints of them, torchvision's ``ssdlite320_mobilenet_v3_large`` and
``lraspp_mobilenet_v3_large`` state dicts, and TF DeepLab's DeepLabv3-MobileNetV2 TFLite file.

Each reader returns a :class:`DenseParsed`: the model config the tensors fit (checked by building the model on
the meta device and comparing every shape), the tensors under our keys, and what the file implies
(preprocessing, class names). :mod:`mobilenets.weights.core` routes files here at its one boundary.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import MobileNetsError
from ..preprocess import IMAGENET, Preprocessing
from . import torchvision_detection, torchvision_segmentation
from .validate import check_shapes

__all__ = ["DenseParsed", "is_dense_name", "dense_config", "build_dense", "parse_dense_state_dict",
           "parse_deeplab_tflite", "task_of"]

# torchvision's detection / segmentation weights take images scaled to [-1, 1] (SSDLite: GeneralizedRCNNTransform
# with mean = std = 0.5, fixed 320x320) or ImageNet mean/std resized to 520 (LR-ASPP's transforms).
_SSDLITE_PRE = Preprocessing(320, 320, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
_LRASPP_PRE = Preprocessing(520, 520, IMAGENET.mean, IMAGENET.std)


@dataclass
class DenseParsed:
    format: str
    config: object  # DetectorConfig / LRASPPConfig / DeepLabV3Config
    state: dict[str, torch.Tensor]  # our keys
    preprocessing: Preprocessing
    class_names: list[str] | None = None


def task_of(name: str) -> str:
    from ..factory import get_model_entry  # the factory fills the registry

    return get_model_entry(name).task


def is_dense_name(name) -> bool:
    return isinstance(name, str) and task_of(name) != "classification"


def _rebuild_options(config) -> dict:
    return {k: v for k, v in config.to_dict().items() if k != "name"}


def dense_config(config: dict):
    """The typed config of a detector / segmenter from its JSON form: the model is built on the meta device (the
    builder checks every option) and its own config must say the same (no unknown or dropped fields)."""
    from ..factory import create_model

    if not isinstance(config.get("name"), str):
        raise MobileNetsError("the model name is missing")
    options = {k: v for k, v in config.items() if k != "name"}
    try:
        with torch.device("meta"):
            model = create_model(config["name"], **options)
    except TypeError as e:  # an option the builder does not take
        raise MobileNetsError(f"options {sorted(options)} do not fit {config['name']} ({e})") from None
    typed = model.config
    if json.loads(json.dumps(typed.to_dict())) != json.loads(json.dumps(config)):
        raise MobileNetsError(f"{config['name']}: the config does not round-trip (got {typed.to_dict()})")
    return typed


def build_dense(config) -> nn.Module:
    """The model ``config`` describes (random weights)."""
    from ..factory import create_model

    return create_model(config.name, **_rebuild_options(config))


def _want_shapes(config) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = build_dense(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def check_dense_shapes(state: dict[str, torch.Tensor], config, label: str) -> dict[str, torch.Tensor]:
    """``state`` without bookkeeping counters, every tensor the shape ``config``'s model needs."""
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    check_shapes(state, _want_shapes(config), label, f"{config.name} as configured")
    return state


def _coco_names() -> list[str] | None:
    try:
        from torchvision.models._meta import _COCO_CATEGORIES
    except ImportError:  # a torchvision without the table: the checkpoint just has no names
        return None
    return list(_COCO_CATEGORIES[1:])  # slot 0 is "__background__"; "N/A" marks COCO's unused ids


def parse_dense_state_dict(state: dict[str, torch.Tensor], label: str) -> DenseParsed | None:
    """A torchvision SSDLite or LR-ASPP state dict under our keys (None for any other state dict)."""
    keys = set(state)
    if torchvision_detection.detect(keys):
        from ..detection.ssdlite import ssdlite_mobilenet_v3_large

        head = state.get("head.classification_head.module_list.0.1.weight")
        if head is None or head.dim() != 4 or head.shape[0] % 6:
            raise MobileNetsError(f"{label}: a torchvision SSDLite state dict without a 6-box class predictor")
        with torch.device("meta"):
            config = ssdlite_mobilenet_v3_large(config="torchvision", num_classes=head.shape[0] // 6).config
            template = build_dense(config)
        ours = check_dense_shapes(torchvision_detection.to_ours(state, template), config, label)
        names = _coco_names() if config.num_classes == 91 else None
        return DenseParsed("torchvision", config, ours, _SSDLITE_PRE, names)
    if torchvision_segmentation.detect(keys):
        from ..segmentation.data import VOC_SEG_CLASSES
        from ..segmentation.lraspp import lraspp_mobilenet_v3_large

        low = state.get("classifier.low_classifier.weight")
        if low is None or low.dim() != 4:
            raise MobileNetsError(f"{label}: a torchvision LR-ASPP state dict without its low classifier")
        with torch.device("meta"):
            config = lraspp_mobilenet_v3_large(config="torchvision", num_classes=low.shape[0]).config
            template = build_dense(config)
        ours = check_dense_shapes(torchvision_segmentation.to_ours(state, template), config, label)
        names = list(VOC_SEG_CLASSES) if config.num_classes == len(VOC_SEG_CLASSES) else None
        return DenseParsed("torchvision", config, ours, _LRASPP_PRE, names)
    return None


def parse_deeplab_tflite(path: Path, graph) -> DenseParsed | None:
    """TF DeepLab's DeepLabv3-MobileNetV2 TFLite file (None for any other TFLite graph)."""
    from ..segmentation.data import VOC_SEG_CLASSES
    from .tflite_deeplab import deeplab_from_tflite, is_deeplab_tflite

    if not is_deeplab_tflite(graph):
        return None
    model, info = deeplab_from_tflite(path)
    side = getattr(info, "input_size", None) or 513
    side = side[0] if isinstance(side, (tuple, list)) else side
    pre = Preprocessing(int(side), int(side), tuple(info.mean), tuple(info.std))
    names = list(VOC_SEG_CLASSES) if model.config.num_classes == len(VOC_SEG_CLASSES) else None
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    return DenseParsed("tflite", model.config, state, pre, names)
