"""Segmentation metrics from a confusion matrix: mIoU, per-class IoU, pixel accuracy."""

from __future__ import annotations

import torch

__all__ = ["confusion_matrix", "segmentation_metrics"]


def confusion_matrix(logits_or_pred: torch.Tensor, target: torch.Tensor, num_classes: int, *,
                     ignore_index: int = 255) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts, ``[true, predicted]``, over the pixels whose target is not
    ``ignore_index``. ``logits_or_pred``: (N, C, H, W) logits or (N, H, W) class ids."""
    pred = logits_or_pred.argmax(1) if logits_or_pred.dim() == 4 else logits_or_pred
    valid = target != ignore_index
    t, p = target[valid].long(), pred[valid].long()
    return torch.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(num_classes, num_classes).cpu()


def segmentation_metrics(confusion: torch.Tensor, class_names=None) -> dict:
    """``miou`` (mean over the classes present in the target or the prediction), ``pixel_acc`` and
    ``iou`` (per class; NaN for a class absent from both)."""
    c = confusion.double()
    tp = c.diag()
    union = c.sum(0) + c.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    present = union > 0
    names = class_names or [str(i) for i in range(len(tp))]
    return {
        "miou": float(iou[present].mean()) if present.any() else 0.0,
        "pixel_acc": float(tp.sum() / c.sum().clamp(min=1)),
        "iou": {n: float(v) for n, v in zip(names, iou.tolist())},
    }
