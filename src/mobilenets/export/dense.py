"""Detectors and segmenters in the deployment path: what differs from classifiers, as small per-task functions
that :func:`mobilenets.export.export_model` calls (one export path for every task).

- **What is exported**: the tensor-only ``forward``. A detector's file has two outputs, ``cls_logits``
  (N, A, K + 1) and ``box_regression`` (N, A, 4), per default box; a segmenter's one, ``logits`` (N, C, H, W).
- **What travels with the file** (a classifier's too): a JSON document (:func:`metadata_document`) stored
  inside the file (:mod:`mobilenets.export.runtimes`: ONNX ``metadata_props``, TFLite ``metadata``, an
  ExecuTorch constant method, a TorchScript extra file) with the task, model name, input size, output names,
  preprocessing (also spelled out: layout, RGB order, resize / crop, scaling) and class names;
  for a detector also its post-processing configuration (``"paper"`` / ``"torchvision"``) and its default
  boxes for the exported input size: (A, 4) XYXY pixels, float32, little-endian, row-major, base64-encoded.
  :func:`default_boxes_from` reads them back; :func:`detect_artifact` turns a loaded file's outputs into
  detections with them and :func:`mobilenets.detection.postprocess.detect_numpy`.
- **How the file is verified** (a failed check is an error and nothing is written):

  - every output within ``FP32_RTOL`` (1e-4) x that output's scale (max |PyTorch value|), on random inputs
    and the val images;
  - detectors: the file's outputs + the numpy post-processing, with the default boxes *read back from the
    written file*, give PyTorch's ``model.postprocess`` detections on the val images (:func:`match_detections`:
    labels equal, scores within ``SCORE_TOL``, boxes within ``BOX_RTOL`` x the input side in pixels);
  - segmenters: the per-pixel argmax equals PyTorch's on at least ``MIN_PIXEL_AGREEMENT`` of the val images'
    pixels.

The val images are the first ``limit`` (default 32) of the val split of ``data``: the built-in shapes set when
``data`` is None, else a Pascal VOC / COCO root (detection) or a VOC / mask-folder root (segmentation), each
prepared with the model's preprocessing (resize to the input size, normalise).
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from ..errors import MobileNetsError
from ..preprocess import IMAGENET, Preprocessing
from .data import ImageSet
from .options import DEFAULT_CHECK_IMAGES

__all__ = ["task_of", "output_names", "default_size", "default_preprocessing", "load_val_images",
           "metadata_document", "default_boxes_from", "detect_artifact", "torch_outputs", "OutputDiff",
           "match_detections", "DetectionAgreement", "pixel_agreement", "check_detections", "DETECTION_OUTPUTS",
           "SCORE_TOL", "BOX_RTOL", "MIN_PIXEL_AGREEMENT", "DEFAULT_CHECK_IMAGES", "METADATA_FORMAT"]

METADATA_FORMAT = "mobilenets.export/1"
DETECTION_OUTPUTS = ("cls_logits", "box_regression")
SEGMENTATION_OUTPUTS = ("logits",)
MIN_PIXEL_AGREEMENT = 0.995  # segmenters: fraction of pixels whose argmax must equal PyTorch's (issue 10)
SCORE_TOL = 1e-4  # detections: |score difference| (scores are probabilities in [0, 1])
# Detections: boxes within BOX_RTOL x the input side, in pixels (0.032 px at 320). A box is decoded from codes
# divided by the coder weights (10, 10, 5, 5): centre error = code error x anchor side / 10, size error = side x
# exp(code) x code error / 5; fp32 runtimes give code errors ~1e-5 (box errors ~1e-4 px measured at 96-320 px),
# so this bound leaves two orders of magnitude for larger or trained models and still is far below a pixel.
BOX_RTOL = 1e-4
IOU_EPS = 1e-3  # an IoU this close to the NMS threshold can fall either side of it in fp32


# ----------------------------------------------------------------------------------------------- what

def task_of(model: nn.Module) -> str:
    """``"detection"``, ``"segmentation"`` or ``"classification"`` for a model about to be exported. A module
    may name its task with an ``export_task`` attribute (the benchmark's tensor-only wrappers of torchvision's
    detector and segmenter do: their outputs are checked, their post-processing is not ours)."""
    task = getattr(model, "export_task", None)
    if task is not None:
        return task
    from ..detection.ssdlite import SSDLite
    from ..segmentation.deeplabv3 import DeepLabV3
    from ..segmentation.lraspp import LRASPP

    if isinstance(model, SSDLite):
        return "detection"
    if isinstance(model, (LRASPP, DeepLabV3)):
        return "segmentation"
    return "classification"


def output_names(model: nn.Module) -> list[str]:
    """The names the exported file gives ``model``'s outputs (ONNX output names, the metadata's list)."""
    return list(DETECTION_OUTPUTS if task_of(model) == "detection" else SEGMENTATION_OUTPUTS)


def default_size(model: nn.Module) -> int | None:
    """The input side a dense model is exported at when neither ``input_size`` nor a checkpoint's
    preprocessing says: a detector's configured ``image_size`` (its default boxes' size)."""
    size = getattr(getattr(model, "config", None), "image_size", None)
    if isinstance(size, (tuple, list)):
        if size[0] != size[1]:
            raise MobileNetsError(f"the detector is configured for {size[0]}x{size[1]} inputs; exports are square: "
                                  "pass input_size")
        size = size[0]
    return size if isinstance(size, int) else None


def default_preprocessing(task: str, size: int) -> Preprocessing:
    """What a dense model object (no checkpoint) is assumed to take: detectors RGB scaled to [-1, 1] (both
    SSDLite configurations), segmenters ImageNet mean / std."""
    if task == "detection":
        return Preprocessing(size, size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    return IMAGENET.with_size(size)


def load_val_images(task: str, data, prep: Preprocessing, limit: int) -> ImageSet:
    """The first ``limit`` images of the val split of ``data`` (None: the built-in shapes set), resized to
    ``prep.crop`` and normalised with its mean / std."""
    if task == "detection":
        from ..detection.data import load_detection_dataset as load
    else:
        from ..segmentation.data import load_segmentation_dataset as load
    ds = load(data, "val", image_size=prep.crop, mean=prep.mean, std=prep.std, train=False)
    if len(ds) == 0:
        raise MobileNetsError(f"{data}: the val split has no images")
    images = np.stack([ds[i][0].numpy() for i in range(min(limit, len(ds)))]).astype(np.float32)
    source = "shapes:val" if data is None else f"{data}:val"
    return ImageSet(images, None, source)


# ------------------------------------------------------------------------------------------- metadata

def input_description(task: str, prep: Preprocessing, size: int, in_chans: int = 3) -> dict:
    """How an application turns an image into the exported file's input, spelled out for a reader of the
    metadata who has not seen this library: layout, channel order, the resize / crop and the scaling."""
    prep = prep.with_size(size)
    if task == "classification":
        resize = (f"resize the shorter side to {prep.resize} ({prep.interpolation}), then centre-crop "
                  f"{size}x{size}")
    else:
        resize = f"resize to {size}x{size} ({prep.interpolation}), no crop"
    lo = [round((0 - m) / s, 6) for m, s in zip(prep.mean, prep.std)]
    hi = [round((1 - m) / s, 6) for m, s in zip(prep.mean, prep.std)]
    scaling = "[-1, 1]: x / 127.5 - 1" if prep.mean == prep.std == (0.5, 0.5, 0.5) else \
        "x / 255, then (x - mean) / std per channel"
    return {"name": "input", "layout": "NCHW", "channels": in_chans, "channel_order": "RGB" if in_chans == 3 else
            None, "dtype": "float32", "resize": resize, "scaling": scaling, "mean": list(prep.mean),
            "std": list(prep.std), "value_range": [lo, hi]}


def metadata_document(model: nn.Module, *, name: str, size: int, prep: Preprocessing,
                      class_names: list[str] | None) -> str:
    """The JSON document stored in an exported file (every task): the task, model, input size, output names,
    preprocessing (the checkpoint's fields, and spelled out in ``input``: :func:`input_description`) and class
    names; a detector's also holds its post-processing configuration and the default boxes for ``size`` x
    ``size`` inputs (see the module doc)."""
    task = task_of(model)
    in_chans = getattr(getattr(model, "config", None), "in_chans", 3)
    doc = {"format": METADATA_FORMAT, "task": task, "model": name, "input_size": [size, size],
           "outputs": output_names(model), "preprocessing": prep.with_size(size).to_dict(),
           "input": input_description(task, prep, size, in_chans), "class_names": class_names}
    num_classes = getattr(getattr(model, "config", None), "num_classes", None)
    if num_classes is not None:
        doc["num_classes"] = num_classes
    from ..detection.ssdlite import SSDLite

    if isinstance(model, SSDLite):
        boxes = model.default_boxes(size).detach().cpu().numpy().astype("<f4")
        doc["postprocess"] = model.config.config  # "paper" / "torchvision": mobilenets.detection.recipes
        doc["default_boxes"] = {"shape": list(boxes.shape), "dtype": "float32", "layout": "XYXY pixels",
                                "encoding": "base64, little-endian, row-major",
                                "data": base64.b64encode(boxes.tobytes()).decode("ascii")}
    return json.dumps(doc)


def default_boxes_from(metadata: dict) -> np.ndarray:
    """The (A, 4) float32 default boxes stored in an exported detector's metadata."""
    entry = metadata.get("default_boxes") if isinstance(metadata, dict) else None
    if not isinstance(entry, dict):
        raise MobileNetsError("the file's metadata has no default boxes (not a mobilenets detector export)")
    try:
        boxes = np.frombuffer(base64.b64decode(entry["data"], validate=True), dtype="<f4")
        boxes = boxes.reshape(entry["shape"]).astype(np.float32)
    except (KeyError, TypeError, ValueError) as e:
        raise MobileNetsError(f"the file's default boxes are malformed ({e})") from None
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.isfinite(boxes).all():
        raise MobileNetsError(f"the file's default boxes are malformed (shape {tuple(boxes.shape)}, expected "
                              "(A, 4) finite values)")
    return boxes


def detect_artifact(artifact, x: np.ndarray, *, image_size=None, outputs=None) -> list[dict[str, np.ndarray]]:
    """Detections (one dict of numpy arrays per image, as :func:`~mobilenets.detection.postprocess.
    postprocess_numpy`) of an exported detector (:func:`~mobilenets.export.load_artifact`) on the preprocessed
    batch ``x``, using the default boxes and post-processing configuration stored in the file.
    ``image_size``: each image's (H, W) to clip to (default the input size); ``outputs``: the file's outputs
    on ``x`` if already computed."""
    from ..detection.postprocess import detect_numpy

    meta = artifact.metadata
    if meta.get("task") != "detection":
        raise MobileNetsError(f"{artifact.path}: not an exported mobilenets detector")
    outputs = artifact(x) if outputs is None else outputs
    if "postprocess" not in meta or (image_size is None and "input_size" not in meta):
        raise MobileNetsError(f"{artifact.path}: its metadata lacks the post-processing or input size of a detector")
    size = tuple(meta["input_size"]) if image_size is None else image_size
    return detect_numpy(outputs, default_boxes_from(meta), meta["postprocess"], size)


# --------------------------------------------------------------------------------------------- checks

def torch_outputs(model: nn.Module, x: np.ndarray, batch: int = 32) -> list[np.ndarray]:
    """``model``'s outputs on ``x`` as numpy arrays (a list, one per output), in batches of ``batch``."""
    parts = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            y = model(torch.from_numpy(x[i:i + batch]))
            parts.append([t.numpy() for t in y] if isinstance(y, (tuple, list)) else [y.numpy()])
    return [np.concatenate(p) for p in zip(*parts)]


class OutputDiff:
    """Per output, the max |difference| between an artifact's and PyTorch's values and the scale (max |PyTorch
    value|), accumulated over batches (a segmenter's full-resolution logits for every check image at once would
    take gigabytes)."""

    def __init__(self, names: list[str], fmt: str) -> None:
        self.names, self.fmt = list(names), fmt
        self.diff, self.scale = [0.0] * len(names), [0.0] * len(names)

    def update(self, ref: list[np.ndarray], out) -> list[np.ndarray]:
        """Add one batch; returns the artifact's outputs as a list. Raises on a wrong output count or shape or
        a non-finite value."""
        out = list(out) if isinstance(out, (tuple, list)) else [out]
        if len(out) != len(ref):
            raise MobileNetsError(f"{self.fmt} check failed: {len(out)} outputs, PyTorch has {len(ref)}")
        for k, (name, r, o) in enumerate(zip(self.names, ref, out)):
            if o.shape != r.shape or not np.isfinite(o).all():
                raise MobileNetsError(f"{self.fmt} check failed: output {name} has shape {o.shape} (PyTorch "
                                      f"{r.shape}) or non-finite values")
            if len(r):
                self.diff[k] = max(self.diff[k], float(np.abs(o - r).max()))
                self.scale[k] = max(self.scale[k], float(np.abs(r).max()))
        return out

    def rows(self, rtol: float | None) -> list[dict]:
        """``{"output", "max_abs_diff", "scale", "bound"}`` per output; raises when (``rtol`` given) a
        difference exceeds ``rtol`` x its output's scale."""
        rows = []
        for name, diff, scale in zip(self.names, self.diff, self.scale):
            bound = None if rtol is None else rtol * max(scale, 1e-12)
            if bound is not None and diff > bound:
                raise MobileNetsError(f"{self.fmt} check failed: output {name}: max |diff| vs PyTorch {diff:.3g} "
                                      f"exceeds {rtol:g} x its scale {scale:.3g}")
            rows.append({"output": name, "max_abs_diff": diff, "scale": scale, "bound": bound})
        return rows


def pixel_agreement(ref_logits: np.ndarray, logits: np.ndarray) -> float:
    """Fraction of pixels whose argmax over classes (axis 1) is the same in both."""
    return float((ref_logits.argmax(1) == logits.argmax(1)).mean())


@dataclass
class DetectionAgreement:
    """How an artifact's detections compare with PyTorch's on a set of images.

    ``matched``: PyTorch detections with a partner in the artifact's (same label, score within ``score_tol``,
    every box coordinate within ``box_tol`` px; one to one). A detection without a partner is an fp32 *tie*
    when the other side had it as a candidate (a default box whose decoded box and class score agree with it
    within the same tolerances) and it sits on a decision boundary that a rounding difference can move
    (``ties``, by reason: its score at the threshold, at the per-image or per-class cap, at the per-class
    candidate cut; an IoU at the NMS threshold; or a same-label overlapping partner of near-equal score that
    NMS kept instead); any other is ``unexplained`` (the export check fails)."""

    images: int
    reference: int  # PyTorch detections
    artifact: int  # the artifact's detections
    matched: int
    same_count_images: int
    max_box_diff: float  # px, over matched pairs
    max_score_diff: float
    box_tol: float
    score_tol: float
    ties: dict = field(default_factory=dict)
    unexplained: int = 0  # detections without a partner and not at a tie: the check fails
    examples: list = field(default_factory=list)  # the first few of those, described

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        text = (f"{self.matched} of {self.reference} PyTorch detections matched (labels equal, boxes within "
                f"{self.box_tol:.2g} px: max {self.max_box_diff:.2g}, scores within {self.score_tol:g}: max "
                f"{self.max_score_diff:.2g}); same count on {self.same_count_images} of {self.images} images")
        if self.ties:
            text += "; unmatched at fp32 ties: " + ", ".join(f"{k} {v}" for k, v in self.ties.items())
        if self.unexplained:
            text += f"; {self.unexplained} unexplained"
        return text


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = w * h
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.nan_to_num(inter / (area + areas - inter))


def _as_numpy(det: dict) -> dict:
    return {k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in det.items()}


def _is_candidate(box: np.ndarray, score: float, label: int, candidates, box_tol: float, tol: float) -> bool:
    """Whether ``candidates`` (decoded boxes (A, 4), scores (A, K)) hold this detection."""
    boxes, scores = candidates
    near = np.abs(boxes - box).max(-1) <= box_tol
    return bool((np.abs(scores[near, label - 1] - score) <= tol).any())


def _tie_reason(i: int, mine: dict, other: dict, other_unmatched: np.ndarray, recipe, kth: np.ndarray | None,
                tol: float) -> str | None:
    """Why detection ``i`` of ``mine``, a candidate on the other side too, may be missing from ``other``'s
    detections (an fp32 tie), or None."""
    score, label, box = float(mine["scores"][i]), int(mine["labels"][i]), mine["boxes"][i]
    if abs(score - recipe.score_thresh) <= tol:
        return "score threshold"
    if len(other["scores"]) >= recipe.detections_per_img and score <= float(other["scores"].min()) + tol:
        return "per-image cap"
    same = other["labels"] == label
    if recipe.max_per_class is not None and same.sum() >= recipe.max_per_class and \
            score <= float(other["scores"][same].min()) + tol:
        return "per-class cap"
    if kth is not None and abs(score - float(kth[label - 1])) <= tol:
        return "candidate cut"
    for boxes, labels in ((mine["boxes"], mine["labels"]), (other["boxes"], other["labels"])):
        near = labels == label
        if near.any() and (np.abs(_iou(box, boxes[near]) - recipe.nms_thresh) <= IOU_EPS).any():
            return "IoU at the NMS threshold"
    partners = other_unmatched & same & (np.abs(other["scores"] - score) <= tol)
    if partners.any() and (_iou(box, other["boxes"][partners]) > recipe.nms_thresh - IOU_EPS).any():
        return "NMS tie"
    return None


def _kth(scores: np.ndarray, recipe) -> np.ndarray | None:
    """Each class's k-th best score over the default boxes (k = the recipe's per-class ``topk_candidates``;
    None when it keeps every box)."""
    k = recipe.topk_candidates
    if k is None or k >= scores.shape[0]:
        return None
    return -np.partition(-scores, k - 1, axis=0)[k - 1]


def match_detections(reference: list[dict], detections: list[dict], recipe, *, box_tol: float,
                     score_tol: float = SCORE_TOL, candidates: tuple[list, list] | None = None) -> DetectionAgreement:
    """Compare two lists of per-image detections (``{"boxes", "scores", "labels"}``, torch or numpy) made by
    the post-processing ``recipe`` from nearly equal outputs: order-independent one-to-one matching, then
    every detection left over on either side is checked against the decision boundaries fp32 rounding can move
    (see :class:`DetectionAgreement`). ``candidates``: per image, ``(boxes (A, 4), scores (A, K))`` of each side
    (:func:`~mobilenets.detection.postprocess.candidates_numpy` on the reference's and the artifact's outputs):
    a left-over detection is then a tie only if the other side had it as a candidate."""
    agg = DetectionAgreement(len(reference), 0, 0, 0, 0, 0.0, 0.0, box_tol, score_tol)
    for n, (ref, got) in enumerate(zip(reference, detections)):
        ref, got = _as_numpy(ref), _as_numpy(got)
        nr, ng = len(ref["scores"]), len(got["scores"])
        agg.reference += nr
        agg.artifact += ng
        agg.same_count_images += nr == ng
        ok = (ref["labels"][:, None] == got["labels"][None, :]) & \
             (np.abs(ref["scores"][:, None] - got["scores"][None, :]) <= score_tol)
        box_diff = np.abs(ref["boxes"][:, None, :] - got["boxes"][None, :, :]).max(-1) if nr and ng else \
            np.zeros((nr, ng))
        ok &= box_diff <= box_tol
        ref_done, got_done = np.zeros(nr, bool), np.zeros(ng, bool)
        for i in range(nr):  # the closest free partner; candidates are few (same label, near-equal score)
            cand = np.flatnonzero(ok[i] & ~got_done)
            if cand.size:
                j = cand[np.argmin(box_diff[i, cand])]
                ref_done[i] = got_done[j] = True
                agg.max_box_diff = max(agg.max_box_diff, float(box_diff[i, j]))
                agg.max_score_diff = max(agg.max_score_diff, float(abs(ref["scores"][i] - got["scores"][j])))
        agg.matched += int(ref_done.sum())
        sides = ((ref, got, ref_done, got_done, "PyTorch", 1), (got, ref, got_done, ref_done, "artifact", 0))
        for mine, other, done, other_done, side, other_index in sides:
            other_cands = None if candidates is None else candidates[other_index][n]
            kth = None if other_cands is None else _kth(other_cands[1], recipe)
            for i in np.flatnonzero(~done):
                box, score, label = mine["boxes"][i], float(mine["scores"][i]), int(mine["labels"][i])
                reason = None
                if other_cands is None or _is_candidate(box, score, label, other_cands, box_tol, score_tol):
                    reason = _tie_reason(i, mine, other, ~other_done, recipe, kth, score_tol)
                if reason is None:
                    agg.unexplained += 1
                    if len(agg.examples) < 3:
                        agg.examples.append(f"image {n}: {side} detection label {label} score {score:.6g} box "
                                            f"{np.round(box, 3).tolist()} has no counterpart")
                else:
                    agg.ties[reason] = agg.ties.get(reason, 0) + 1
    return agg


def check_detections(model: nn.Module, artifact, images: np.ndarray, ref: list[np.ndarray], out, *, size: int,
                     fmt: str) -> DetectionAgreement:
    """PyTorch's detections (``model.postprocess`` on its own outputs ``ref``) against the artifact's (its
    outputs ``out`` + the default boxes and configuration read back from the file + numpy post-processing) on
    ``images``; raises when a detection differs beyond an fp32 tie."""
    from ..detection.postprocess import candidates_numpy

    reference = model.postprocess(*(torch.from_numpy(r) for r in ref), input_size=size)
    stored = default_boxes_from(artifact.metadata)
    expected = model.default_boxes(size).detach().cpu().numpy()
    if stored.shape != expected.shape or not np.array_equal(stored, expected):
        raise MobileNetsError(f"{fmt} check failed: the default boxes stored in the file are not the model's")
    got = detect_artifact(artifact, images, outputs=out)
    candidates = tuple(list(zip(*candidates_numpy(*o, expected, model.recipe, size))) for o in (ref, out))
    agreement = match_detections(reference, got, model.recipe, box_tol=BOX_RTOL * size, candidates=candidates)
    if agreement.unexplained:
        raise MobileNetsError(f"{fmt} check failed: detections differ from PyTorch's: {agreement.examples[0]} "
                              f"({agreement.unexplained} of {agreement.reference} such)")
    return agreement
