"""COCO-style evaluation with pycocotools (the evaluator COCO users trust): AP, AP50, AP75, AP small / medium /
large, and AP per class."""

from __future__ import annotations

import contextlib
import io

import numpy as np

__all__ = ["coco_metrics", "to_coco_results", "METRIC_NAMES"]

# COCOeval.stats[0:6], in order (pycocotools cocoeval.py, summarize()).
METRIC_NAMES = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large")


def to_coco_results(image_id: int, detections: dict) -> list[dict]:
    """One image's detections (``boxes`` XYXY, ``scores``, ``labels``: tensors or arrays) as COCO result
    entries (``bbox`` = [x, y, w, h], ``category_id`` = label)."""
    boxes = np.asarray(detections["boxes"], dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(detections["scores"], dtype=np.float64).reshape(-1)
    labels = np.asarray(detections["labels"]).reshape(-1)
    return [{"image_id": int(image_id), "category_id": int(c), "score": float(s),
             "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
            for b, s, c in zip(boxes, scores, labels)]


def coco_metrics(ground_truth: dict, results: list[dict], *, per_class: bool = False) -> dict:
    """pycocotools' COCOeval (bbox) of ``results`` against ``ground_truth`` (a COCO-format dict).

    Returns the six summary APs under :data:`METRIC_NAMES` (0..1; -1 where a size range has no ground truth),
    and with ``per_class`` also ``"per_class"``: {category name: AP (IoU .50:.95, all areas)}. No detections at
    all give AP 0 (pycocotools itself refuses an empty result list)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = ground_truth
        gt.createIndex()
        if not results or not gt.getAnnIds():
            out = {k: (0.0 if results is not None else -1.0) for k in METRIC_NAMES}
            if per_class:
                out["per_class"] = {c["name"]: 0.0 for c in ground_truth.get("categories", [])}
            return out
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out = {k: float(v) for k, v in zip(METRIC_NAMES, ev.stats[:6])}
    if per_class:
        # precision: [T iou thresholds, R recall points, K classes, A area ranges, M max dets]; all areas, 100 dets
        precision = ev.eval["precision"][:, :, :, 0, -1]
        names = {c["id"]: c["name"] for c in ground_truth.get("categories", [])}
        out["per_class"] = {}
        for k, cat_id in enumerate(ev.params.catIds):
            p = precision[:, :, k]
            p = p[p > -1]
            out["per_class"][names.get(cat_id, str(cat_id))] = float(p.mean()) if p.size else -1.0
    return out
