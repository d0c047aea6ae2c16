"""The two SSDLite configurations as typed tables: ``"paper"`` (the TensorFlow Object Detection API's SSDLite
configs, which the V3 paper's Table 6 models were trained with) and ``"torchvision"`` (torchvision 0.29's
``ssdlite320_mobilenet_v3_large``).

Everything here is plain Python (no torch, no numpy), so the numpy post-processing twin can read the same
numbers as the torch code.

Sources:

- TF: ``research/object_detection/samples/configs/ssdlite_mobilenet_v3_{large,small}_320x320_coco.config``
  (the fields quoted in the comments below), ``anchor_generators/multiple_grid_anchor_generator.py``
  (``create_ssd_anchors``), ``core/post_processing.py`` (``multiclass_non_max_suppression``),
  ``meta_architectures/ssd_meta_arch.py`` (loss normalisation, background column).
- torchvision: ``models/detection/ssdlite.py`` (``ssdlite320_mobilenet_v3_large``: the ``defaults`` dict and the
  ``DefaultBoxGenerator([[2, 3]] * 6, min_ratio=0.2, max_ratio=0.95)``), ``models/detection/ssd.py``
  (``SSD.__init__`` defaults, ``compute_loss``, ``postprocess_detections``), ``models/detection/anchor_utils.py``
  (``DefaultBoxGenerator``), ``models/detection/_utils.py`` (``BoxCoder``, ``SSDMatcher``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import MobileNetsError

__all__ = ["DetectionRecipe", "RECIPES", "CONFIGS", "resolve_recipe", "BoxShape"]


@dataclass(frozen=True)
class BoxShape:
    """One default box shape at a feature-map location: width and height as fractions of the image side
    (``"torchvision"``: of the width / height respectively; ``"paper"``: of the shorter side, so boxes stay
    square in pixels on non-square inputs, TF's ``base_anchor_size`` normalisation)."""

    w: float
    h: float


def torchvision_box_shapes(aspect_ratios: tuple[tuple[float, ...], ...], min_ratio: float, max_ratio: float,
                           clip: bool = True) -> tuple[tuple[BoxShape, ...], ...]:
    """torchvision ``DefaultBoxGenerator`` (anchor_utils.py, ``_generate_wh_pairs``), with the same float
    arithmetic: scales ``min + (max - min) * k / (m - 1)`` plus 1.0; per map (s_k, s_k), (s'_k, s'_k) with
    s'_k = sqrt(s_k * s_k+1), then (s_k sqrt(a), s_k / sqrt(a)) and its transpose for every ratio a.
    ``clip`` (the generator's default, which ``ssdlite320_mobilenet_v3_large`` keeps) clamps w and h to
    [0, 1]: the ratio-3 boxes of the last four maps (s_k sqrt(3) = 0.97 .. 1.65) become image-wide."""
    m = len(aspect_ratios)
    scales = [min_ratio + (max_ratio - min_ratio) * k / (m - 1.0) for k in range(m)] + [1.0]
    maps = []
    for k in range(m):
        s_k, s_prime = scales[k], math.sqrt(scales[k] * scales[k + 1])
        pairs = [BoxShape(s_k, s_k), BoxShape(s_prime, s_prime)]
        for ar in aspect_ratios[k]:
            sq = math.sqrt(ar)
            w, h = scales[k] * sq, scales[k] / sq
            pairs += [BoxShape(w, h), BoxShape(h, w)]
        if clip:
            pairs = [BoxShape(min(max(p.w, 0.0), 1.0), min(max(p.h, 0.0), 1.0)) for p in pairs]
        maps.append(tuple(pairs))
    return tuple(maps)


def tf_ssd_box_shapes(num_layers: int, min_scale: float, max_scale: float, aspect_ratios: tuple[float, ...],
                      interpolated_scale_aspect_ratio: float = 1.0,
                      reduce_boxes_in_lowest_layer: bool = True) -> tuple[tuple[BoxShape, ...], ...]:
    """TF OD API ``create_ssd_anchors`` (multiple_grid_anchor_generator.py): box specs (scale, aspect ratio),
    height = scale / sqrt(ratio), width = scale * sqrt(ratio) (``grid_anchor_generator.tile_anchors``). The
    lowest layer gets the fixed three (0.1, 1.0), (min_scale, 2.0), (min_scale, 0.5) when
    ``reduce_boxes_in_lowest_layer`` (its default, which the SSDLite configs keep); every other layer one box
    per ratio plus one of scale sqrt(s_k * s_k+1) at ``interpolated_scale_aspect_ratio``."""
    scales = [min_scale + (max_scale - min_scale) * i / (num_layers - 1) for i in range(num_layers)] + [1.0]
    maps = []
    for layer, (scale, scale_next) in enumerate(zip(scales[:-1], scales[1:])):
        if layer == 0 and reduce_boxes_in_lowest_layer:
            specs = [(0.1, 1.0), (scale, 2.0), (scale, 0.5)]
        else:
            specs = [(scale, ar) for ar in aspect_ratios]
            if interpolated_scale_aspect_ratio > 0.0:
                specs.append((math.sqrt(scale * scale_next), interpolated_scale_aspect_ratio))
        maps.append(tuple(BoxShape(s * math.sqrt(r), s / math.sqrt(r)) for s, r in specs))
    return tuple(maps)


@dataclass(frozen=True)
class DetectionRecipe:
    """Every number of one SSDLite configuration outside the network itself: default boxes, matching, loss,
    box coding and post-processing. See :data:`RECIPES`."""

    name: str
    # default boxes (one tuple of shapes per feature map, finest first)
    box_shapes: tuple[tuple[BoxShape, ...], ...]
    square_boxes: bool  # sizes relative to the shorter image side (TF) instead of to each side (torchvision)
    # box coder: (x, y, w, h) weights of the Faster R-CNN coder, and the clamp on dw, dh before exp (None: none)
    box_coder_weights: tuple[float, float, float, float]
    bbox_xform_clip: float | None
    # matching: IoU >= iou_threshold is positive, below it negative; each ground-truth box's best default box
    # is forced positive. Where one default box is the best of several ground-truth boxes, "last" gives it
    # to the last of them (torchvision SSDMatcher's index assignment), "first" to the first (TF
    # ArgMaxMatcher's argmax over a one-hot).
    iou_threshold: float
    force_match_tiebreak: str
    # loss
    cls_loss: str  # "softmax_hard_negative" or "sigmoid_focal"
    neg_pos_ratio: float | None
    focal_alpha: float | None
    focal_gamma: float | None
    loc_loss_per_coordinate: bool  # TF normalize_loc_loss_by_codesize: box loss also divided by 4
    # head initialisation
    init: str  # "normal" (torchvision _normal_init) or "truncated_normal" (TF truncated_normal_initializer)
    init_std: float
    cls_bias_init: float
    # post-processing
    score: str  # "softmax" or "sigmoid" (over all class slots; slot 0, background, is then dropped)
    score_thresh: float
    topk_candidates: int | None  # per class, before NMS (None: every box above the threshold)
    nms_thresh: float
    clip_before_nms: bool  # torchvision clips, then NMS; TF runs NMS, then clips and drops zero-area boxes
    max_per_class: int | None
    detections_per_img: int

    @property
    def boxes_per_location(self) -> tuple[int, ...]:
        return tuple(len(s) for s in self.box_shapes)


RECIPES: dict[str, DetectionRecipe] = {
    "paper": DetectionRecipe(
        name="paper",
        # anchor_generator { ssd_anchor_generator { num_layers: 6 min_scale: 0.2 max_scale: 0.95
        #   aspect_ratios: 1.0 2.0 0.5 3.0 0.3333 } }  (reduce_boxes_in_lowest_layer: default true)
        box_shapes=tf_ssd_box_shapes(6, 0.2, 0.95, (1.0, 2.0, 0.5, 3.0, 0.3333)),
        square_boxes=True,
        # box_coder { faster_rcnn_box_coder { y_scale: 10 x_scale: 10 height_scale: 5 width_scale: 5 } }
        # (TF orders codes (ty, tx, th, tw); ours are (tx, ty, tw, th) like torchvision.) TF's decode has no clamp.
        box_coder_weights=(10.0, 10.0, 5.0, 5.0),
        bbox_xform_clip=None,
        # matcher { argmax_matcher { matched_threshold: 0.5 unmatched_threshold: 0.5
        #   force_match_for_each_row: true } }
        iou_threshold=0.5,
        force_match_tiebreak="first",
        # loss { classification_loss { weighted_sigmoid_focal { alpha: 0.75 gamma: 2.0 } }
        #   localization_loss { weighted_smooth_l1 { delta: 1.0 } } }
        # normalize_loss_by_num_matches: true; normalize_loc_loss_by_codesize: true
        cls_loss="sigmoid_focal",
        neg_pos_ratio=None,
        focal_alpha=0.75,
        focal_gamma=2.0,
        loc_loss_per_coordinate=True,
        # feature_extractor conv_hyperparams: truncated_normal_initializer { stddev: 0.03 };
        # box_predictor: random_normal_initializer { stddev: 0.03 }, class_prediction_bias_init: -4.6
        init="truncated_normal",
        init_std=0.03,
        cls_bias_init=-4.6,
        # post_processing { batch_non_max_suppression { score_threshold: 1e-8 iou_threshold: 0.6
        #   max_detections_per_class: 100 max_total_detections: 100 } score_converter: SIGMOID }
        score="sigmoid",
        score_thresh=1e-8,
        topk_candidates=None,
        nms_thresh=0.6,
        clip_before_nms=False,
        max_per_class=100,
        detections_per_img=100,
    ),
    "torchvision": DetectionRecipe(
        name="torchvision",
        # DefaultBoxGenerator([[2, 3] for _ in range(6)], min_ratio=0.2, max_ratio=0.95) (default clip=True)
        box_shapes=torchvision_box_shapes(((2, 3),) * 6, 0.2, 0.95, clip=True),
        square_boxes=False,
        # SSD.__init__: BoxCoder(weights=(10.0, 10.0, 5.0, 5.0)), default bbox_xform_clip=log(1000 / 16)
        box_coder_weights=(10.0, 10.0, 5.0, 5.0),
        bbox_xform_clip=math.log(1000.0 / 16),
        # SSDMatcher(iou_thresh=0.5)
        iou_threshold=0.5,
        force_match_tiebreak="last",
        # compute_loss: smooth-L1 (beta 1) + cross-entropy with hard negatives; positive_fraction=0.25 -> 3:1
        cls_loss="softmax_hard_negative",
        neg_pos_ratio=3.0,
        focal_alpha=None,
        focal_gamma=None,
        loc_loss_per_coordinate=False,
        # ssdlite.py _normal_init: normal_(std=0.03), bias 0 (backbone too when no pretrained backbone)
        init="normal",
        init_std=0.03,
        cls_bias_init=0.0,
        # ssdlite320_mobilenet_v3_large defaults: score_thresh 0.001, nms_thresh 0.55, detections_per_img 300,
        # topk_candidates 300
        score="softmax",
        score_thresh=0.001,
        topk_candidates=300,
        nms_thresh=0.55,
        clip_before_nms=True,
        max_per_class=None,
        detections_per_img=300,
    ),
}

CONFIGS = tuple(RECIPES)


def resolve_recipe(config) -> DetectionRecipe:
    """The :class:`DetectionRecipe` for ``config``: a recipe, a name (``"paper"`` / ``"torchvision"``), or
    anything with a ``config`` attribute naming one (a detector's :class:`~mobilenets.detection.DetectorConfig`,
    or the detector itself)."""
    if isinstance(config, DetectionRecipe):
        return config
    name = config
    if not isinstance(name, str):
        name = getattr(config, "config", None)
        if not isinstance(name, str):  # a model: its DetectorConfig
            name = getattr(name, "config", None)
    if name not in RECIPES:
        raise MobileNetsError(f"config must be one of {', '.join(CONFIGS)} (or a detector / DetectorConfig), "
                              f"got {config!r}")
    return RECIPES[name]
