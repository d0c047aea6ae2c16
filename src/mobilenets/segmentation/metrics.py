"""Segmentation metrics from a confusion matrix: mIoU, per-class IoU, pixel accuracy."""

from __future__ import annotations

import torch

__all__ = ["confusion_matrix", "segmentation_metrics"]


def confusion_matrix(logits_or_pred: torch.Tensor, target: torch.Tensor, num_classes: int, *,
                     ignore_index: int = 255) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts, ``[true, predicted]``, over the pixels whose target is not
    ``ignore_index``, on the inputs' device. ``logits_or_pred``: (N, C, H, W) logits or (N, H, W) class ids.
    Target values are checked where masks are read (the datasets, ``evaluate_segmenter_model``): here every
    value other than ``ignore_index`` must be a class id.

    No host sync, so a GPU evaluation loop queues the next batch while this one runs: the ignored pixels are
    counted in one extra bin that is dropped (boolean indexing and CUDA ``bincount`` would both wait for the
    device to learn an output size)."""
    pred = logits_or_pred.argmax(1) if logits_or_pred.dim() == 4 else logits_or_pred
    k = num_classes
    idx = torch.where(target == ignore_index, k * k, target.long() * k + pred.long()).flatten()
    counts = torch.zeros(k * k + 1, dtype=torch.int64, device=idx.device)
    return counts.scatter_add_(0, idx, torch.ones_like(idx))[:-1].reshape(k, k)


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
