"""Evaluation of a trained checkpoint: top-1/top-5, per-class accuracy and a confusion-matrix PNG."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoint import atomic_write, load_checkpoint
from .errors import MobileNetsError, output_file

__all__ = ["EvalResult", "evaluate"]


@dataclass
class EvalResult:
    """Accuracies in %; ``confusion[i, j]`` counts images of class i predicted as class j."""

    top1: float
    top5: float
    count: int
    class_names: list[str]
    per_class: dict[str, float]  # top-1 per class present in the data
    confusion: np.ndarray
    confusion_png: Path | None


def evaluate(weights: Path | str, *, data: Path | str | None = None, batch_size: int = 64, workers: int = 0,
             device: str = "cpu", confusion_png: Path | str | None = None, strict: bool = False,
             inference=None) -> EvalResult:
    """Evaluate a mobilenets checkpoint on ``data`` (``DIR/val/<class>/*`` or ``DIR/<class>/*``, classes named
    as the checkpoint's) or, when ``data`` is None, on the built-in digits' validation split. Images are
    prepared with the checkpoint's own preprocessing. Writes a confusion-matrix PNG to ``confusion_png``
    (default: ``confusion_matrix.png`` next to the checkpoint). ``device``: ``cpu``, ``cuda``, ``auto``...
    (a device this machine lacks is a one-line error). ``inference``: an :class:`~mobilenets.fast.InferenceOptions`
    (BN folded, bf16/fp16, channels_last, torch.compile, CUDA graphs); None runs the eager model."""
    from torch.utils.data import DataLoader

    from .data import collate_readable
    from .device import resolve_device

    for value, what, lo, hi in ((batch_size, "batch_size", 1, 65_536), (workers, "workers", 0, 256)):
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise MobileNetsError(f"{what} must be an integer in [{lo}, {hi}], got {value!r}")
    dev = resolve_device(device)
    png = output_file(confusion_png if confusion_png else Path(weights).parent / "confusion_matrix.png",
                      "confusion matrix")
    model, meta = load_checkpoint(weights)
    from .weights.dense import task_of

    task = task_of(meta.config.name)
    if task != "classification":  # mobilenets eval dispatches; the API says where to go
        where = {"detection": "mobilenets.detection.evaluate.evaluate_detector",
                 "segmentation": "mobilenets.segmentation.evaluate.evaluate_segmenter"}[task]
        raise MobileNetsError(f"{weights}: a {task} checkpoint ({meta.config.name}): evaluate it with {where}")
    classes = meta.class_names or [str(i) for i in range(meta.config.num_classes)]
    if len(classes) != meta.config.num_classes:
        raise MobileNetsError(f"{weights}: {len(classes)} class names for {meta.config.num_classes} outputs")
    transform = meta.preprocessing.transform()
    if data is None:
        from .digits import DIGITS_CLASSES, DigitsDataset

        if classes != DIGITS_CLASSES:
            raise MobileNetsError(f"{weights}: not a digits model (classes {classes[:5]}...); pass --data DIR")
        dataset = DigitsDataset("val", image_size=meta.preprocessing.resize, transform=transform)
    else:
        from .data import ImageFiles, load_eval_folder

        samples = load_eval_folder(data, classes, strict=strict)
        dataset = ImageFiles(samples, classes, transform=transform, strict=strict, substitute=False)
    if len(dataset) == 0:
        raise MobileNetsError(f"{data}: no images to evaluate")

    model.to(dev).eval()
    if inference is not None:
        from .fast import prepare_for_inference

        model = prepare_for_inference(model, dev, inference)
    n_cls = len(classes)
    k = min(5, n_cls)
    tops, labels = [], []  # the top-k class ids stay on the device until the last batch: no sync per batch
    with torch.inference_mode():
        for batch in DataLoader(dataset, batch_size=batch_size, num_workers=workers, pin_memory=dev.type == "cuda",
                                collate_fn=collate_readable):
            if batch is None:  # no image of this batch could be decoded (each logged)
                continue
            x, y = batch
            tops.append(model(x.to(dev, non_blocking=True)).float().topk(k, dim=1).indices)
            labels.append(y)
    if not tops:
        raise MobileNetsError(f"{data}: no image could be decoded")
    top, y = torch.cat(tops).cpu(), torch.cat(labels)
    top5_hits = (top == y[:, None]).any(1).sum().item()
    confusion = np.zeros((n_cls, n_cls), dtype=np.int64)
    np.add.at(confusion, (y.numpy(), top[:, 0].numpy()), 1)
    total = int(confusion.sum())
    rows = confusion.sum(1)
    per_class = {classes[i]: 100.0 * confusion[i, i] / rows[i] for i in range(n_cls) if rows[i]}
    _confusion_png(confusion, classes, png, title=f"{Path(weights).name}: top-1 "
                                                  f"{100.0 * np.trace(confusion) / total:.2f}% on {total} images")
    return EvalResult(100.0 * np.trace(confusion) / total, 100.0 * top5_hits / total, total, classes, per_class,
                      confusion, png)


def _confusion_png(confusion: np.ndarray, classes: list[str], path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    n = len(classes)
    size = min(4 + 0.4 * n, 30)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(confusion, display_labels=classes).plot(ax=ax, include_values=n <= 30, colorbar=False,
                                                                   xticks_rotation="vertical")
    ax.set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))
