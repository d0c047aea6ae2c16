"""The SSD multibox loss, in both configurations.

Matching (both): IoU between every ground-truth box and every default box (``torchvision.ops.box_iou``); a
default box is positive for its best ground truth when their IoU >= 0.5, and every ground-truth box's best
default box is positive for it whatever the IoU (torchvision ``SSDMatcher``; TF ``ArgMaxMatcher`` with
``force_match_for_each_row``).

- ``"torchvision"`` = torchvision ``SSD.compute_loss``: smooth-L1 (beta 1) on the positives' box codes, summed;
  softmax cross-entropy on the positives plus the 3x as many highest-loss negatives of each image (hard
  negative mining); both divided by the batch's number of positives.
- ``"paper"`` = TF OD API SSD with the SSDLite configs: sigmoid focal loss (alpha 0.75, gamma 2) over every
  default box and every class slot (targets one-hot for positives, all zeros -- background slot included -- for
  negatives: ``encode_background_as_zeros``), summed and divided by the number of positives
  (``normalize_loss_by_num_matches``); smooth-L1 on the positives divided by the number of positives x 4
  (``normalize_loc_loss_by_codesize``).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.ops import box_iou, sigmoid_focal_loss
from torchvision.transforms.v2.functional import convert_bounding_box_format

from ..errors import MobileNetsError
from .box_coder import encode_boxes
from .recipes import DetectionRecipe, resolve_recipe

__all__ = ["multibox_loss", "match_default_boxes", "check_labels"]


def match_default_boxes(gt_boxes: torch.Tensor, default_boxes: torch.Tensor, config="torchvision") -> torch.Tensor:
    """For each default box the index of its ground-truth box, or -1 (negative). ``gt_boxes`` (G, 4) and
    ``default_boxes`` (A, 4) XYXY in the same pixels."""
    recipe = resolve_recipe(config)
    num_anchors = default_boxes.shape[0]
    if gt_boxes.numel() == 0:
        return torch.full((num_anchors,), -1, dtype=torch.int64, device=default_boxes.device)
    iou = box_iou(gt_boxes, default_boxes)  # (G, A)
    best_iou, matches = iou.max(dim=0)
    matches = torch.where(best_iou < recipe.iou_threshold, torch.full_like(matches, -1), matches)
    best_anchor = iou.max(dim=1).indices  # each ground truth's best default box
    gt_index = torch.arange(gt_boxes.shape[0], device=matches.device)
    if recipe.force_match_tiebreak == "last":  # torchvision SSDMatcher: matches[best] = arange (last one wins)
        matches[best_anchor] = gt_index
    else:  # TF ArgMaxMatcher: an anchor that is the best of several ground truths goes to the first of them
        forced = torch.full_like(matches, gt_boxes.shape[0]).scatter_reduce(0, best_anchor, gt_index, "amin")
        matches = torch.where(forced < gt_boxes.shape[0], forced, matches)
    return matches


def check_labels(labels: torch.Tensor, num_classes: int) -> None:
    """Target labels must be object class slots, 1..num_classes - 1 (0 is background): a one-line error
    otherwise. Reads the values: call it while they are on the CPU (on a GPU that waits for the device)."""
    if labels.numel() == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 1 or hi >= num_classes:
        bad = hi if hi >= num_classes else lo
        raise MobileNetsError(f"a target label is {bad}, the detector has {num_classes} class slots "
                              f"(labels 1..{num_classes - 1}; 0 is the background)")


def _as_tensor(boxes) -> torch.Tensor:
    """Target boxes as a plain XYXY tensor (a ``tv_tensors.BoundingBoxes`` in another format is converted)."""
    if isinstance(boxes, tv_tensors.BoundingBoxes):
        if boxes.format != tv_tensors.BoundingBoxFormat.XYXY:
            boxes = convert_bounding_box_format(boxes, new_format=tv_tensors.BoundingBoxFormat.XYXY)
        return boxes.as_subclass(torch.Tensor)
    return boxes if isinstance(boxes, torch.Tensor) else torch.as_tensor(boxes)


def multibox_loss(cls_logits: torch.Tensor, box_regression: torch.Tensor, targets: Sequence[dict],
                  default_boxes: torch.Tensor, config) -> dict[str, torch.Tensor]:
    """The SSD loss of a batch: ``{"loss": cls + box, "cls": ..., "box": ...}`` (scalars).

    Args:
        cls_logits: (N, A, K + 1) from the detector's ``forward``.
        box_regression: (N, A, 4) from the detector's ``forward``.
        targets: one dict per image with ``"boxes"`` (G, 4) in pixels of the input (a
            ``tv_tensors.BoundingBoxes`` in any format, or an XYXY tensor; G may be 0) and ``"labels"`` (G,)
            int64 in 1..K: checked (a one-line error) when they come on the CPU, then moved to the logits' device
            (the training task leaves them there for this; labels already on a GPU are taken as they are).
        default_boxes: (A, 4) XYXY pixels of the same input size (``model.default_boxes(size)``).
        config: ``"paper"``, ``"torchvision"``, a :class:`DetectionRecipe`, a DetectorConfig or a detector.
    """
    recipe = resolve_recipe(config)
    n, num_anchors, num_classes = cls_logits.shape
    if len(targets) != n or box_regression.shape[:2] != (n, num_anchors) or default_boxes.shape[0] != num_anchors:
        raise MobileNetsError(f"multibox_loss: {len(targets)} targets, class logits {tuple(cls_logits.shape)}, box "
                              f"regression {tuple(box_regression.shape)}, {default_boxes.shape[0]} default boxes")
    default_boxes = default_boxes.to(box_regression)
    labels, gt_per_anchor = [], []
    for t in targets:  # matching, image by image
        boxes = _as_tensor(t["boxes"]).to(box_regression).reshape(-1, 4)
        matches = match_default_boxes(boxes, default_boxes, recipe)
        positive = matches >= 0
        safe = matches.clamp(min=0)
        image_labels = torch.as_tensor(t["labels"], dtype=torch.int64).reshape(-1)
        if image_labels.device.type == "cpu":  # free here; labels already on a GPU were the caller's to check
            check_labels(image_labels, num_classes)
        image_labels = image_labels.to(cls_logits.device, non_blocking=True)
        labels.append(torch.where(positive, image_labels[safe] if len(image_labels) else safe, 0))
        gt_per_anchor.append(boxes[safe] if len(boxes) else default_boxes)
    labels_t = torch.stack(labels)  # (N, A): 0 = background
    positive = labels_t > 0
    # no host sync below (no boolean indexing, no count read back): on a GPU the next step queues behind this one.
    # Negatives are encoded against themselves (codes 0, finite whatever their matched box) and masked out.
    gt = torch.where(positive[..., None], torch.stack(gt_per_anchor), default_boxes)  # (N, A, 4) XYXY
    normalizer = positive.sum().clamp(min=1)
    target_codes = encode_boxes(gt, default_boxes.expand(n, -1, -1), recipe.box_coder_weights)
    box_loss = torch.where(positive[..., None],
                           F.smooth_l1_loss(box_regression, target_codes, beta=1.0, reduction="none"), 0).sum()
    if recipe.loc_loss_per_coordinate:
        box_loss = box_loss / 4

    if recipe.cls_loss == "softmax_hard_negative":
        ce = F.cross_entropy(cls_logits.reshape(-1, num_classes), labels_t.reshape(-1), reduction="none")
        ce = ce.view(n, num_anchors)
        num_negative = recipe.neg_pos_ratio * positive.sum(1, keepdim=True)
        _, idx = ce.detach().masked_fill(positive, -float("inf")).sort(1, descending=True)
        hard_negative = idx.sort(1)[1] < num_negative  # each box's rank among its image's negatives
        cls_loss = torch.where(positive, ce, 0).sum() + torch.where(hard_negative, ce, 0).sum()
    else:
        one_hot = F.one_hot(labels_t, num_classes).to(cls_logits.dtype)
        one_hot[..., 0] = 0  # encode_background_as_zeros: negatives are all zeros, background slot included
        cls_loss = sigmoid_focal_loss(cls_logits, one_hot, alpha=recipe.focal_alpha, gamma=recipe.focal_gamma,
                                      reduction="sum")
    cls_loss = cls_loss / normalizer
    box_loss = box_loss / normalizer
    return {"loss": cls_loss + box_loss, "cls": cls_loss, "box": box_loss}
