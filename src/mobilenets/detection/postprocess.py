"""From raw SSDLite outputs to detections: decode, score, per-class non-maximum suppression.

Two implementations of the same procedure: :func:`postprocess_detections` (torch, ``torchvision.ops``) and
:func:`postprocess_numpy` (numpy only, for use next to onnxruntime / LiteRT outputs of an exported ``forward``).

The procedure (numbers from :mod:`mobilenets.detection.recipes`):

- ``"torchvision"`` = torchvision ``SSD.postprocess_detections``: softmax; decode (clamp log(1000/16)); clip
  to the image; per class 1..K: scores > 0.001, the top 300; ``batched_nms`` IoU 0.55; the best 300.
- ``"paper"`` = TF OD API ``multiclass_non_max_suppression`` as the SSDLite configs call it: sigmoid; decode;
  per class 1..K: scores > 1e-8, NMS IoU 0.6 keeping at most 100 per class; then clip to the image, drop
  boxes left with zero area, the best 100. (Class slot 0, background, is dropped after scoring in both.)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torchvision.ops import batched_nms, clip_boxes_to_image, nms

from .box_coder import decode_boxes
from .recipes import DetectionRecipe, resolve_recipe

__all__ = ["postprocess_detections", "postprocess_numpy", "detect_numpy", "candidates_numpy"]


def _sizes(image_sizes, n: int) -> list[tuple[int, int]]:
    if isinstance(image_sizes, int):
        return [(image_sizes, image_sizes)] * n
    if len(image_sizes) == 2 and all(isinstance(s, (int, np.integer)) for s in image_sizes):
        return [(int(image_sizes[0]), int(image_sizes[1]))] * n
    sizes = [(int(s), int(s)) if isinstance(s, (int, np.integer)) else (int(s[0]), int(s[1])) for s in image_sizes]
    if len(sizes) != n:
        from ..errors import MobileNetsError

        raise MobileNetsError(f"{len(sizes)} image sizes for {n} images")
    return sizes


def _scores(cls_logits: torch.Tensor, recipe: DetectionRecipe) -> torch.Tensor:
    return torch.softmax(cls_logits, dim=-1) if recipe.score == "softmax" else torch.sigmoid(cls_logits)


def _per_class_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, thresh: float) -> torch.Tensor:
    """``nms`` class by class on the boxes' own coordinates (torchvision's ``_batched_nms_vanilla``). The input
    is in decreasing score order, ties broken by position, and ``nms`` sorts stably, so the kept positions come
    back ascending: by decreasing score, ties by position."""
    keep = torch.zeros_like(scores, dtype=torch.bool)
    for c in torch.unique(labels):
        idx = torch.where(labels == c)[0]
        keep[idx[nms(boxes[idx], scores[idx], thresh)]] = True
    return torch.where(keep)[0]


def _rank_within_label(labels: torch.Tensor) -> torch.Tensor:
    """For a list already in decreasing score order: each entry's position among the entries of its label."""
    order = torch.argsort(labels, stable=True)
    grouped = labels[order]
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(labels), device=labels.device) - torch.searchsorted(grouped, grouped)
    return rank


def _best_candidates(flat: torch.Tensor, limit: int, thresh: float) -> torch.Tensor:
    """Indices into ``flat`` (scores, row-major (anchor, class)) of the ``limit`` best scores above ``thresh``
    (and any tied with the last of them), by decreasing score, ties by index: a prefix of the order every
    candidate above the threshold would be sorted in."""
    above = flat > thresh
    if limit < int(above.sum()):
        above &= flat >= flat.topk(limit).values[-1]
    idx = torch.nonzero(above).squeeze(1)
    return idx[flat[idx].argsort(descending=True, stable=True)]


def _detect_one(boxes: torch.Tensor, scores: torch.Tensor, size: tuple[int, int], recipe: DetectionRecipe) -> dict:
    """One image: ``boxes`` (A, 4) decoded, ``scores`` (A, K) over foreground classes 1..K."""
    if recipe.clip_before_nms:
        boxes = clip_boxes_to_image(boxes, size)
    num_classes = scores.shape[1]
    if recipe.topk_candidates is not None:  # torchvision: per class, score > thresh, then its top k
        k = min(recipe.topk_candidates, scores.shape[0])
        top, idx = scores.topk(k, dim=0)  # (k, K), each column by decreasing score
        sel = (top > recipe.score_thresh).T.reshape(-1)  # class-major, as torchvision's loop over labels
        cand_scores = top.T.reshape(-1)[sel]
        cand_boxes = boxes[idx.T.reshape(-1)[sel]]
        cand_labels = torch.arange(1, num_classes + 1, device=boxes.device).repeat_interleave(k)[sel]
        keep = batched_nms(cand_boxes, cand_scores, cand_labels, recipe.nms_thresh)[:recipe.detections_per_img]
        return {"boxes": cand_boxes[keep], "scores": cand_scores[keep], "labels": cand_labels[keep]}
    # Every (box, class) above the threshold is a candidate (with sigmoid scores and TF's 1e-8: all of them).
    # NMS is greedy by score, so the best boxes' fate depends only on better-scored boxes of their class: run it
    # on the best `limit` candidates and grow `limit` until they yield enough detections (exact, and far
    # cheaper than NMS over every candidate).
    flat = scores.reshape(-1)
    total = int((flat > recipe.score_thresh).sum())
    limit = max(8 * recipe.detections_per_img, 1024)
    while True:
        cand = _best_candidates(flat, limit, recipe.score_thresh)
        cand_scores, cand_boxes = flat[cand], boxes[cand // num_classes]
        cand_labels = cand % num_classes + 1
        keep = _per_class_nms(cand_boxes, cand_scores, cand_labels, recipe.nms_thresh)
        if recipe.max_per_class is not None:
            keep = keep[_rank_within_label(cand_labels[keep]) < recipe.max_per_class]
        out_boxes = cand_boxes[keep]
        if not recipe.clip_before_nms:  # TF: clip after NMS, then drop boxes with zero area
            out_boxes = clip_boxes_to_image(out_boxes, size)
            nonzero = (out_boxes[:, 2] - out_boxes[:, 0]) * (out_boxes[:, 3] - out_boxes[:, 1]) > 0
            keep, out_boxes = keep[nonzero], out_boxes[nonzero]
        if len(keep) >= recipe.detections_per_img or len(cand) >= total:
            break
        limit *= 4
    n = recipe.detections_per_img
    return {"boxes": out_boxes[:n], "scores": cand_scores[keep[:n]], "labels": cand_labels[keep[:n]]}


@torch.no_grad()
def postprocess_detections(cls_logits: torch.Tensor, box_regression: torch.Tensor, default_boxes: torch.Tensor,
                           config, image_sizes) -> list[dict[str, torch.Tensor]]:
    """Detections from raw outputs: a list (one per image) of ``{"boxes": (n, 4) XYXY pixels, "scores": (n,),
    "labels": (n,) int64 in 1..K}``, by decreasing score.

    Args:
        cls_logits: (N, A, K + 1) class logits (slot 0 = background).
        box_regression: (N, A, 4) box codes.
        default_boxes: (A, 4) XYXY pixels (:meth:`SSDLite.default_boxes`).
        config: ``"paper"``, ``"torchvision"``, a :class:`DetectionRecipe`, a DetectorConfig or a detector.
        image_sizes: (H, W) for every image, or one (H, W) / int for all: boxes are clipped to it.
    """
    recipe = resolve_recipe(config)
    scores = _scores(cls_logits, recipe)[..., 1:]
    boxes = decode_boxes(box_regression, default_boxes, recipe.box_coder_weights, clamp=recipe.bbox_xform_clip)
    return [_detect_one(b, s, size, recipe)
            for b, s, size in zip(boxes, scores, _sizes(image_sizes, cls_logits.shape[0]))]


# ---------------------------------------------------------------------------------------------------------
# numpy twin


def _np_scores(logits: np.ndarray, recipe: DetectionRecipe) -> np.ndarray:
    if recipe.score == "softmax":
        e = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    return (1.0 / (1.0 + np.exp(-logits))).astype(logits.dtype)


def _np_decode(codes: np.ndarray, default_boxes: np.ndarray, recipe: DetectionRecipe) -> np.ndarray:
    wx, wy, ww, wh = (np.float32(w) for w in recipe.box_coder_weights)
    x1, y1, x2, y2 = (default_boxes[:, i] for i in range(4))
    aw, ah = x2 - x1, y2 - y1
    acx, acy = x1 + np.float32(0.5) * aw, y1 + np.float32(0.5) * ah  # box_coder._centre_size
    dw, dh = codes[..., 2] / ww, codes[..., 3] / wh
    if recipe.bbox_xform_clip is not None:
        dw, dh = np.minimum(dw, np.float32(recipe.bbox_xform_clip)), np.minimum(dh, np.float32(recipe.bbox_xform_clip))
    cx, cy = codes[..., 0] / wx * aw + acx, codes[..., 1] / wy * ah + acy
    with np.errstate(over="ignore"):
        w, h = np.exp(dw) * aw, np.exp(dh) * ah
    return np.stack((cx - np.float32(0.5) * w, cy - np.float32(0.5) * h,
                     cx + np.float32(0.5) * w, cy + np.float32(0.5) * h), axis=-1)


def _np_clip(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    out = boxes.copy()
    out[..., 0::2] = np.clip(boxes[..., 0::2], 0, w)
    out[..., 1::2] = np.clip(boxes[..., 1::2], 0, h)
    return out


def _np_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box with many, in the boxes' dtype, as torchvision's CPU ``nms`` kernel computes it."""
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    w = np.maximum(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0)
    h = np.maximum(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0)
    inter = w * h
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / (area + areas - inter)


def _np_detect_one(boxes: np.ndarray, scores: np.ndarray, size: tuple[int, int], recipe: DetectionRecipe) -> dict:
    if recipe.clip_before_nms:
        boxes = _np_clip(boxes, size)
    num_classes = scores.shape[1]
    if recipe.topk_candidates is not None:
        k = min(recipe.topk_candidates, scores.shape[0])
        idx = np.argsort(-scores, axis=0, kind="stable")[:k]  # (k, K)
        top = np.take_along_axis(scores, idx, axis=0)
        sel = (top > recipe.score_thresh).T.reshape(-1)
        cand_scores, anchors = top.T.reshape(-1)[sel], idx.T.reshape(-1)[sel]
        cand_labels = np.repeat(np.arange(1, num_classes + 1), k)[sel]
    else:
        anchors, label = np.nonzero(scores > recipe.score_thresh)
        cand_scores, cand_labels = scores[anchors, label], label + 1
    cand_boxes = boxes[anchors]
    order = np.argsort(-cand_scores, kind="stable")
    kept: list[int] = []
    out_boxes: list[np.ndarray] = []
    per_class: dict[int, int] = {}
    while order.size and len(kept) < recipe.detections_per_img:
        i, rest = order[0], order[1:]
        label = int(cand_labels[i])
        per_class[label] = per_class.get(label, 0) + 1
        box = cand_boxes[i] if recipe.clip_before_nms else _np_clip(cand_boxes[i], size)
        if recipe.clip_before_nms or (box[2] - box[0]) * (box[3] - box[1]) > 0:  # TF drops zero-area boxes
            kept.append(int(i))
            out_boxes.append(box)
        same = cand_labels[rest] == label
        if recipe.max_per_class is not None and per_class[label] >= recipe.max_per_class:
            drop = same  # this class is full (TF: max_detections_per_class)
        else:
            drop = np.zeros(rest.shape, dtype=bool)
            drop[same] = _np_iou(cand_boxes[i], cand_boxes[rest[same]]) > recipe.nms_thresh
        order = rest[~drop]
    kept_arr = np.asarray(kept, dtype=np.int64)
    return {"boxes": np.asarray(out_boxes, dtype=boxes.dtype).reshape(-1, 4),
            "scores": cand_scores[kept_arr], "labels": cand_labels[kept_arr].astype(np.int64)}


def postprocess_numpy(cls_logits: np.ndarray, box_regression: np.ndarray, default_boxes: np.ndarray, config,
                      image_size: int | Sequence[int] | Sequence[Sequence[int]]) -> list[dict[str, np.ndarray]]:
    """:func:`postprocess_detections` written with numpy only (greedy NMS class by class, on the boxes' own
    coordinates): the same detections from the same outputs, e.g. an exported model's under onnxruntime.

    ``cls_logits`` (N, A, K + 1) or (A, K + 1), ``box_regression`` (N, A, 4) or (A, 4), ``default_boxes``
    (A, 4) XYXY pixels (``model.default_boxes(size).numpy()``), ``config`` as for the torch version,
    ``image_size`` an int, an (H, W) for every image, or one (H, W) per image. Returns one dict of numpy
    arrays per image."""
    recipe = resolve_recipe(config)
    cls_logits = np.asarray(cls_logits, dtype=np.float32)
    box_regression = np.asarray(box_regression, dtype=np.float32)
    if cls_logits.ndim == 2:
        cls_logits, box_regression = cls_logits[None], box_regression[None]
    scores = _np_scores(cls_logits, recipe)[..., 1:]
    boxes = _np_decode(box_regression, np.asarray(default_boxes, dtype=np.float32), recipe)
    return [_np_detect_one(b, s, size, recipe)
            for b, s, size in zip(boxes, scores, _sizes(image_size, cls_logits.shape[0]))]


def detect_numpy(outputs, default_boxes: np.ndarray, config,
                 image_size: int | Sequence[int] | Sequence[Sequence[int]]) -> list[dict[str, np.ndarray]]:
    """:func:`postprocess_numpy` on an exported detector's outputs as its runtime returns them: ``outputs`` =
    ``(cls_logits, box_regression)`` (the tuple :class:`mobilenets.export.Artifact` gives, or onnxruntime's
    output list). ``default_boxes``, ``config`` and ``image_size`` as for :func:`postprocess_numpy`; the file's
    own are in its metadata (:func:`mobilenets.export.dense.default_boxes_from`, ``metadata["postprocess"]``,
    ``metadata["input_size"]``)."""
    from ..errors import MobileNetsError

    if not isinstance(outputs, (tuple, list)) or len(outputs) != 2:
        raise MobileNetsError("a detector's outputs are two arrays: (cls_logits, box_regression)")
    cls_logits, box_regression = (np.asarray(o) for o in outputs)
    if cls_logits.shape[:-1] != box_regression.shape[:-1] or box_regression.shape[-1] != 4:
        raise MobileNetsError(f"cls_logits {cls_logits.shape} and box_regression {box_regression.shape} do not "
                              "pair up as (N, A, K + 1) and (N, A, 4)")
    if cls_logits.shape[-2] != len(default_boxes):
        raise MobileNetsError(f"the outputs have {cls_logits.shape[-2]} boxes, the default boxes number "
                              f"{len(default_boxes)}: use the default boxes of the input size the file was "
                              "exported at")
    return postprocess_numpy(cls_logits, box_regression, default_boxes, config, image_size)


def candidates_numpy(cls_logits: np.ndarray, box_regression: np.ndarray, default_boxes: np.ndarray, config,
                     image_size: int | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Every candidate the post-processing chooses from, before thresholds and NMS: ``(boxes (N, A, 4)`` decoded
    and clipped to ``image_size`` (a detection's final box is always clipped, before or after NMS),
    ``scores (N, A, K))`` for the foreground classes 1..K. Used to tell whether a detection one model made and
    another did not was at least a candidate for the other (an fp32 tie) or not (a real difference)."""
    recipe = resolve_recipe(config)
    cls_logits = np.asarray(cls_logits, dtype=np.float32)
    box_regression = np.asarray(box_regression, dtype=np.float32)
    boxes = _np_decode(box_regression, np.asarray(default_boxes, dtype=np.float32), recipe)
    (size,) = _sizes(image_size, 1)
    return _np_clip(boxes, size), _np_scores(cls_logits, recipe)[..., 1:]
