"""SSDLite (V2 paper section 6.2, V3 paper section 6.3): SSD with every regular convolution of the prediction
layers replaced by a depthwise separable pair, on a MobileNet backbone.

The network, as tables:

- taps (:data:`BACKBONES`): two backbone feature maps. V2 / V3: "C4", the expansion output of the block that
  downsamples to stride 32 (V2 layer 15, 576 ch; V3-Large 13th bneck, 672; V3-Small 9th, 288: computed at
  stride 16, before that block's depthwise conv) and "C5", the last layer before pooling (V2 1280, V3 960 / 576).
  V1: the stride-16 and stride-32 stage ends (TF OD API ssd_mobilenet_v1: Conv2d_11_pointwise,
  Conv2d_13_pointwise).
- extra layers (:data:`EXTRA_LAYERS`): 512, 256, 256, 128 channels, each a 1x1 conv to half depth, a 3x3
  depthwise conv with stride 2 and a 1x1 conv to full depth, every conv with batch norm and ReLU6 (TF OD API
  ``multi_resolution_feature_maps(use_depthwise=True, insert_1x1_conv=True)`` with layer_depth
  [-1, -1, 512, 256, 256, 128]; torchvision ``_extra_block``). At 320x320 the six maps are 20, 10, 5, 3, 2, 1.
- predictors: per map, for classes and for boxes, a 3x3 depthwise conv + BN + ReLU6 then a 1x1 conv with bias
  (TF ``convolutional_box_predictor { use_depthwise: true kernel_size: 3 num_layers_before_predictor: 0 }``;
  torchvision ``_prediction_block``).

``config`` picks the rest (default boxes, loss, post-processing; :mod:`mobilenets.detection.recipes`):
``"paper"`` = the TF OD API SSDLite configs the V3 paper's Table 6 models come from (3 boxes on the first map,
6 elsewhere; sigmoid focal loss), ``"torchvision"`` = torchvision's ``ssdlite320_mobilenet_v3_large`` (6 boxes
everywhere; softmax with hard-negative mining), whose state dict loads into ours
(:mod:`mobilenets.weights.torchvision_detection`).

Inputs are RGB scaled to [-1, 1] in both configurations (TF ``(2 / 255) x - 1``; torchvision mean = std = 0.5).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .. import mobilenet_v1, mobilenet_v2, mobilenet_v3  # noqa: F401  (the backbones' builders)
from ..errors import MobileNetsError
from ..features import FeatureExtractor, Tap, downsampling_expansion_tap, stage_end_taps
from ..layers import create_conv2d
from ..model import FeatureInfo, MobileNet
from ..registry import get_model_entry, register_model
from .box_coder import tile_default_boxes
from .recipes import CONFIGS, DetectionRecipe, resolve_recipe

__all__ = ["SSDLite", "DetectorConfig", "ExtraLayer", "EXTRA_LAYERS", "DetectorBackbone", "BACKBONES",
           "ExtraBlock", "SeparablePredictor", "ssdlite_mobilenet_v1", "ssdlite_mobilenet_v2",
           "ssdlite_mobilenet_v3_large", "ssdlite_mobilenet_v3_small"]

# TF OD API feature extractors: conv_hyperparams batch_norm { decay: 0.97 epsilon: 0.001 }; torchvision:
# BatchNorm2d(eps=0.001, momentum=0.03). PyTorch's momentum is 1 - TF's decay.
BN_MOMENTUM = 0.03
# Extra layers keep at least this many channels at small widths (TF feature_extractor { min_depth: 16 },
# torchvision SSDLiteFeatureExtractorMobileNet(min_depth=16)).
MIN_DEPTH = 16


@dataclass(frozen=True)
class ExtraLayer:
    """One extra feature layer: output channels at width 1.0 (the 1x1 in the middle has half as many) and the
    depthwise conv's stride."""

    out: int
    stride: int = 2


# V2 section 6.2 / TF feature_map_layout layer_depth [-1, -1, 512, 256, 256, 128] / torchvision
# _extra_block(get_depth(512)), (512 -> 256), (256 -> 256), (256 -> 128).
EXTRA_LAYERS = (ExtraLayer(512), ExtraLayer(256), ExtraLayer(256), ExtraLayer(128))


@dataclass(frozen=True)
class DetectorBackbone:
    """Which classification network a detector stands on and where its two backbone maps come from:
    ``"expansion"`` (C4 = the expansion output of the block that downsamples to stride 32, C5 = the last
    layer) or ``"stage_end"`` (the outputs of the last stride-16 and stride-32 blocks)."""

    model: str
    taps: str
    reduced_tail: bool  # whether the halved last stage (V3 "†") exists for it
    paper: str


BACKBONES: dict[str, DetectorBackbone] = {
    # TF OD API ssd_mobilenet_v1_feature_extractor: from_layer ['Conv2d_11_pointwise', 'Conv2d_13_pointwise']
    "ssdlite_mobilenet_v1": DetectorBackbone("mobilenet_v1", "stage_end", False, "V2 Table 6 (V1 + SSDLite)"),
    # V2 section 6.2; TF ssd_mobilenet_v2_feature_extractor: ['layer_15/expansion_output', 'layer_19']
    "ssdlite_mobilenet_v2": DetectorBackbone("mobilenet_v2", "expansion", False, "V2 section 6.2, Tables 5-6"),
    # V3 section 6.3; TF ssd_mobilenet_v3_feature_extractor: ['layer_14/expansion_output', 'layer_17'] (Large),
    # ['layer_10/expansion_output', 'layer_13'] (Small), with conv_defs V3_*_DETECTION (the halved tail)
    "ssdlite_mobilenet_v3_large": DetectorBackbone("mobilenet_v3_large", "expansion", True,
                                                   "V3 section 6.3, Table 6"),
    "ssdlite_mobilenet_v3_small": DetectorBackbone("mobilenet_v3_small", "expansion", True,
                                                   "V3 section 6.3, Table 6"),
}


@dataclass(frozen=True)
class DetectorConfig:
    """Every option of a detector: saved with checkpoints; ``create_model(cfg.name, **rest)`` rebuilds it.

    ``num_classes`` counts class slots including background (slot 0; labels 1..K, torchvision's convention:
    91 for COCO's 90 category ids, 81 for its 80 classes). ``config``: ``"paper"`` or ``"torchvision"``.
    ``reduced_tail``: the V3 "†" backbone (last stage halved). ``image_size``: the input size the default
    boxes are made for by default (int, or (H, W))."""

    name: str
    width: float = 1.0
    num_classes: int = 91
    config: str = "paper"
    reduced_tail: bool = False
    image_size: int | tuple[int, int] = 320
    bn_eps: float = 1e-3
    tf_padding: bool = False
    in_chans: int = 3

    def to_dict(self) -> dict:
        return asdict(self)


class ExtraBlock(nn.Module):
    """An SSDLite extra feature layer: 1x1 conv to ``mid_chs`` -> 3x3 depthwise conv, stride 2 -> 1x1 conv to
    ``out_chs``, each followed by batch norm and ReLU6 (torchvision ``_extra_block``)."""

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, *, stride: int = 2, bn_eps: float = 1e-3,
                 tf_padding: bool = False) -> None:
        super().__init__()
        self.conv_pw = create_conv2d(in_chs, mid_chs, 1)
        self.bn1 = nn.BatchNorm2d(mid_chs, eps=bn_eps)
        self.act1 = nn.ReLU6(inplace=True)
        self.conv_dw = create_conv2d(mid_chs, mid_chs, 3, stride=stride, groups=mid_chs, tf_padding=tf_padding)
        self.bn2 = nn.BatchNorm2d(mid_chs, eps=bn_eps)
        self.act2 = nn.ReLU6(inplace=True)
        self.conv_out = create_conv2d(mid_chs, out_chs, 1)
        self.bn3 = nn.BatchNorm2d(out_chs, eps=bn_eps)
        self.act3 = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv_pw(x)))
        x = self.act2(self.bn2(self.conv_dw(x)))
        return self.act3(self.bn3(self.conv_out(x)))


class SeparablePredictor(nn.Module):
    """An SSDLite predictor: 3x3 depthwise conv + batch norm + ReLU6, then a 1x1 conv with bias to
    ``out_chs`` = boxes per location x (class slots or 4) (torchvision ``_prediction_block``; TF
    ``ConvolutionalBoxHead`` / ``ConvolutionalClassHead`` with ``use_depthwise``)."""

    def __init__(self, in_chs: int, out_chs: int, *, bn_eps: float = 1e-3) -> None:
        super().__init__()
        self.conv_dw = create_conv2d(in_chs, in_chs, 3, groups=in_chs)
        self.bn = nn.BatchNorm2d(in_chs, eps=bn_eps)
        self.act = nn.ReLU6(inplace=True)
        self.conv_pw = create_conv2d(in_chs, out_chs, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_pw(self.act(self.bn(self.conv_dw(x))))


def _flatten(x: torch.Tensor, columns: int) -> torch.Tensor:
    """(N, boxes * columns, H, W) -> (N, H * W * boxes, columns): location-major, then box (torchvision
    ``SSDScoringHead.forward``)."""
    n, _, h, w = x.shape
    return x.view(n, -1, columns, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, columns)


class SSDLite(nn.Module):
    """SSDLite on a MobileNet. Build it with :func:`mobilenets.create_model` (``ssdlite_mobilenet_v2``,
    ``ssdlite_mobilenet_v3_large``, ...).

    Sub-modules: ``backbone`` (a :class:`~mobilenets.features.FeatureExtractor`: ``backbone.stem``,
    ``backbone.stages.S.J``), ``extras`` (:class:`ExtraBlock` x 4), ``cls_head`` and ``box_head``
    (:class:`SeparablePredictor` x 6). ``forward`` is tensor in, tensors out (exportable);
    :meth:`default_boxes` and :meth:`postprocess` turn its outputs into detections.
    """

    def __init__(self, backbone: MobileNet, taps: list[Tap], config: DetectorConfig) -> None:
        super().__init__()
        self.config = config
        recipe = self.recipe
        self.backbone = FeatureExtractor(backbone, taps=taps)
        info = list(self.backbone.feature_info)
        chs = info[-1].channels
        extras = []
        for i, row in enumerate(EXTRA_LAYERS):
            out = max(MIN_DEPTH, int(row.out * config.width))
            mid = max(MIN_DEPTH, int(row.out // 2 * config.width))
            extras.append(ExtraBlock(chs, mid, out, stride=row.stride, bn_eps=config.bn_eps,
                                     tf_padding=config.tf_padding))
            info.append(FeatureInfo(f"extras.{i}", out, info[-1].stride * row.stride))
            chs = out
        self.extras = nn.ModuleList(extras)
        self.feature_info: list[FeatureInfo] = info  # the six maps the predictors read, finest first
        boxes = recipe.boxes_per_location
        if len(boxes) != len(info):
            raise MobileNetsError(f"config {recipe.name!r} has default boxes for {len(boxes)} maps, the detector "
                                  f"has {len(info)}")
        self.cls_head = nn.ModuleList(SeparablePredictor(f.channels, n * config.num_classes, bn_eps=config.bn_eps)
                                      for f, n in zip(info, boxes))
        self.box_head = nn.ModuleList(SeparablePredictor(f.channels, n * 4, bn_eps=config.bn_eps)
                                      for f, n in zip(info, boxes))
        self._init_weights(recipe)
        self._default_boxes: dict[tuple[tuple[int, int], torch.device], torch.Tensor] = {}

    def _init_weights(self, recipe: DetectionRecipe) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if recipe.init == "truncated_normal":  # TF truncated_normal_initializer: cut at 2 std
                    nn.init.trunc_normal_(m.weight, std=recipe.init_std, a=-2 * recipe.init_std,
                                          b=2 * recipe.init_std)
                else:
                    nn.init.normal_(m.weight, std=recipe.init_std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                m.momentum = BN_MOMENTUM
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for p in self.cls_head:
            nn.init.constant_(p.conv_pw.bias, recipe.cls_bias_init)  # TF class_prediction_bias_init (-4.6)
            if recipe.init == "truncated_normal":  # TF box_predictor: random_normal_initializer (not truncated)
                nn.init.normal_(p.conv_pw.weight, std=recipe.init_std)
                nn.init.normal_(p.conv_dw.weight, std=recipe.init_std)
        if recipe.init == "truncated_normal":
            for p in self.box_head:
                nn.init.normal_(p.conv_pw.weight, std=recipe.init_std)
                nn.init.normal_(p.conv_dw.weight, std=recipe.init_std)

    @property
    def recipe(self) -> DetectionRecipe:
        """The configuration's default boxes, loss and post-processing numbers."""
        return resolve_recipe(self.config.config)

    @property
    def num_classes(self) -> int:
        """Class slots, background (0) included."""
        return self.config.num_classes

    def forward_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The six feature maps the predictors read (two backbone taps, four extra layers)."""
        feats = self.backbone(images)
        x = feats[-1]
        for extra in self.extras:
            x = extra(x)
            feats.append(x)
        return feats

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits (N, A, num_classes) and box regressions (N, A, 4) (codes (tx, ty, tw, th), see
        :mod:`~mobilenets.detection.box_coder`) for the A default boxes of the input's size, concatenated map
        by map in :meth:`default_boxes` order. ``images``: (N, in_chans, H, W) scaled to [-1, 1]."""
        feats = self.forward_features(images)
        cls = [_flatten(head(f), self.config.num_classes) for head, f in zip(self.cls_head, feats)]
        box = [_flatten(head(f), 4) for head, f in zip(self.box_head, feats)]
        return torch.cat(cls, dim=1), torch.cat(box, dim=1)

    def map_sizes(self, image_size: int | tuple[int, int] | None = None) -> list[tuple[int, int]]:
        """(h, w) of the six feature maps for an input of ``image_size``: every stride-2 layer (3x3 / 5x5,
        "same" padding, PyTorch's or TF's) maps n to ceil(n / 2)."""
        h, w = _pair(self.config.image_size if image_size is None else image_size)
        sizes = []
        for f in self.feature_info:
            fh, fw = h, w
            for _ in range(int(math.log2(f.stride))):
                fh, fw = -(-fh // 2), -(-fw // 2)
            sizes.append((fh, fw))
        return sizes

    def default_boxes(self, image_size: int | tuple[int, int] | None = None) -> torch.Tensor:
        """The default boxes (A, 4) for an input of ``image_size`` (int or (H, W); default the config's):
        XYXY in pixels of that input, in the order of :meth:`forward`'s outputs. A constant per size (cached),
        float32, on the model's device. ``"torchvision"``: torchvision's ``DefaultBoxGenerator`` exactly (3,234
        boxes at 320x320); ``"paper"``: TF's ``ssd_anchor_generator`` (2,034 boxes at 320x320)."""
        size = _pair(self.config.image_size if image_size is None else image_size)
        key = (size, next(self.parameters()).device)  # per device too: no copy (a host sync on a GPU) per call
        if key not in self._default_boxes:
            recipe = self.recipe
            self._default_boxes[key] = tile_default_boxes(recipe.box_shapes, self.map_sizes(size), size,
                                                          square=recipe.square_boxes).to(key[1])
        return self._default_boxes[key]

    def postprocess(self, cls_logits: torch.Tensor, box_regression: torch.Tensor,
                    image_sizes=None, *, input_size: int | tuple[int, int] | None = None) -> list[dict]:
        """Detections from :meth:`forward`'s outputs: a list (one per image) of dicts with ``"boxes"`` (XYXY
        pixels, clipped to the image), ``"scores"`` and ``"labels"`` (1..K), best first.

        ``image_sizes``: each image's (H, W) inside the input (boxes are clipped to it; default: the whole
        input); ``input_size``: the size the outputs were computed at (default: the largest image size, or the
        config's ``image_size``). The configuration decides the rest (:func:`~mobilenets.detection.postprocess.
        postprocess_detections`)."""
        from .postprocess import postprocess_detections

        n = cls_logits.shape[0]
        if input_size is None:
            if image_sizes is None:
                input_size = self.config.image_size
            else:
                sizes = [_pair(s) for s in image_sizes]
                input_size = (max(s[0] for s in sizes), max(s[1] for s in sizes))
        input_size = _pair(input_size)
        sizes = [input_size] * n if image_sizes is None else [_pair(s) for s in image_sizes]
        boxes = self.default_boxes(input_size)
        if boxes.shape[0] != cls_logits.shape[1]:
            raise MobileNetsError(f"the outputs have {cls_logits.shape[1]} boxes, the default boxes at "
                                  f"{input_size[0]}x{input_size[1]} number {boxes.shape[0]}: pass the input size "
                                  "the outputs were computed at (input_size=)")
        return postprocess_detections(cls_logits, box_regression, boxes.to(box_regression.device), self.recipe,
                                      sizes)


def _pair(size) -> tuple[int, int]:
    def integer(v) -> bool:
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)

    if integer(size):
        return int(size), int(size)
    if isinstance(size, (tuple, list, torch.Size)) and len(size) == 2 and all(integer(s) for s in size):
        return int(size[0]), int(size[1])
    raise MobileNetsError(f"image size must be an int or (height, width), got {size!r}")


def _build(name: str, *, width: float, num_classes: int, config: str, reduced_tail: bool | None,
           image_size, bn_eps: float, tf_padding: bool, in_chans: int, dropout) -> SSDLite:
    spec = BACKBONES[name]
    if config not in CONFIGS:
        raise MobileNetsError(f"config must be one of {', '.join(CONFIGS)}, got {config!r}")
    if reduced_tail is None:  # torchvision's model has the halved tail (reduce_tail=True without a pretrained
        reduced_tail = config == "torchvision" and spec.reduced_tail  # backbone, as its COCO weights were trained)
    if not isinstance(reduced_tail, bool):
        raise MobileNetsError(f"reduced_tail must be True, False or None, got {reduced_tail!r}")
    if reduced_tail and not spec.reduced_tail:
        raise MobileNetsError(f"{name}: reduced_tail (V3 section 6.3) exists for the V3 backbones only")
    if not (isinstance(num_classes, int) and not isinstance(num_classes, bool) and 2 <= num_classes <= 100_000):
        raise MobileNetsError(f"num_classes (class slots, background included) must be an integer in "
                              f"[2, 100000], got {num_classes!r}")
    if dropout is not None:
        raise MobileNetsError(f"{name} has no dropout (got dropout={dropout!r})")
    if not isinstance(tf_padding, bool):
        raise MobileNetsError(f"tf_padding must be True or False, got {tf_padding!r}")
    size = _pair(image_size)
    if min(size) < 32 or max(size) > 8192:
        raise MobileNetsError(f"image_size must be between 32 and 8192 pixels, got {image_size!r}")
    model = get_model_entry(spec.model).build(width=width, num_classes=0, in_chans=in_chans, bn_eps=bn_eps,
                                              tf_padding=tf_padding, tail="detection" if reduced_tail else "full")
    if spec.taps == "expansion":
        taps = [downsampling_expansion_tap(model, 32), Tap(len(model.block_info) - 1)]
    else:
        taps = stage_end_taps(model, (16, 32))
    cfg = DetectorConfig(name, float(width), num_classes, config, reduced_tail,
                         size[0] if size[0] == size[1] else size, float(bn_eps), tf_padding, in_chans)
    return SSDLite(model, taps, cfg)


_OPTIONS_DOC = """

    Keyword-only options: ``width`` (the backbone's width multiplier; extra layers scale by it too, never below
    16 channels), ``num_classes`` (class slots incl. background, default 91 = COCO), ``config`` (``"paper"``
    or ``"torchvision"``), ``reduced_tail`` (V3 only: the halved last stage, "†" in V3 Table 6; default
    ``None`` = True for ``config="torchvision"`` on V3, as torchvision builds it, else False), ``image_size``
    (default 320), ``bn_eps`` (1e-3, TF and torchvision), ``tf_padding`` (TF "SAME" padding), ``in_chans``."""


def _doc(text: str):
    def deco(fn):
        fn.__doc__ = text + _OPTIONS_DOC
        return fn
    return deco


@register_model(published_widths=(1.0,), paper="V2 Table 6 (V1 + SSDLite)", task="detection")
@_doc("SSDLite on MobileNetV1 (V2 Table 6's comparison row; TF OD API ssd_mobilenet_v1 taps Conv2d_11 / 13).")
def ssdlite_mobilenet_v1(*, width: float = 1.0, num_classes: int = 91, config: str = "paper",
                         reduced_tail: bool | None = None, image_size: int | tuple[int, int] = 320,
                         bn_eps: float = 1e-3, tf_padding: bool = False, in_chans: int = 3,
                         dropout: float | None = None) -> SSDLite:
    return _build("ssdlite_mobilenet_v1", **locals())


@register_model(published_widths=(1.0,), paper="V2 section 6.2, Tables 5-6", task="detection")
@_doc("SSDLite on MobileNetV2 (V2 section 6.2): taps layer 15's expansion (576) and the last layer (1280).")
def ssdlite_mobilenet_v2(*, width: float = 1.0, num_classes: int = 91, config: str = "paper",
                         reduced_tail: bool | None = None, image_size: int | tuple[int, int] = 320,
                         bn_eps: float = 1e-3, tf_padding: bool = False, in_chans: int = 3,
                         dropout: float | None = None) -> SSDLite:
    return _build("ssdlite_mobilenet_v2", **locals())


@register_model(published_widths=(1.0,), paper="V3 section 6.3, Table 6", task="detection")
@_doc("SSDLite on MobileNetV3-Large (V3 section 6.3): taps the 13th bneck's expansion (672) and the layer "
      "before pooling (960; 480 with the reduced tail).")
def ssdlite_mobilenet_v3_large(*, width: float = 1.0, num_classes: int = 91, config: str = "paper",
                               reduced_tail: bool | None = None, image_size: int | tuple[int, int] = 320,
                               bn_eps: float = 1e-3, tf_padding: bool = False, in_chans: int = 3,
                               dropout: float | None = None) -> SSDLite:
    return _build("ssdlite_mobilenet_v3_large", **locals())


@register_model(published_widths=(1.0,), paper="V3 section 6.3, Table 6", task="detection")
@_doc("SSDLite on MobileNetV3-Small (V3 section 6.3): taps the 9th bneck's expansion (288) and the layer "
      "before pooling (576; 288 with the reduced tail).")
def ssdlite_mobilenet_v3_small(*, width: float = 1.0, num_classes: int = 91, config: str = "paper",
                               reduced_tail: bool | None = None, image_size: int | tuple[int, int] = 320,
                               bn_eps: float = 1e-3, tf_padding: bool = False, in_chans: int = 3,
                               dropout: float | None = None) -> SSDLite:
    return _build("ssdlite_mobilenet_v3_small", **locals())
