"""Evaluation of a segmentation checkpoint: mIoU, per-class IoU, pixel accuracy, a row-normalised confusion
matrix PNG and a PNG of validation images with their true and predicted masks overlaid."""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import MobileNetsError

__all__ = ["SegmentationEvalResult", "evaluate_segmenter", "evaluate_segmenter_model", "METRICS_FILE",
           "CONFUSION_FILE", "PICTURE_FILE"]

METRICS_FILE = "segmentation_metrics.json"
CONFUSION_FILE = "segmentation_confusion.png"
PICTURE_FILE = "segmentation_val.png"


@dataclass
class SegmentationEvalResult:
    """mIoU and pixel accuracy in 0..1 (mIoU over the classes present in the truth or the prediction), IoU per
    class name (NaN for a class absent from both), ``confusion[i, j]`` = pixels of class i predicted as j (ignore
    pixels excluded), the number of images, and the files written."""

    miou: float
    pixel_acc: float
    iou: dict[str, float]
    confusion: np.ndarray
    count: int
    class_names: list[str]
    metrics_json: Path
    confusion_png: Path
    png: Path


def _generic(names: list[str]) -> bool:
    """Names a mask folder without classes.txt makes up (background, class 1, class 2...)."""
    return names[1:] == [f"class {i}" for i in range(1, len(names))]


@torch.inference_mode()
def evaluate_segmenter_model(model, meta, dataset, *, batch_size: int = 8, device="cpu", output_dir=".",
                             workers: int = 0, name: str | None = None, pictures: int = 6) -> SegmentationEvalResult:
    """Evaluate the segmenter ``model`` (logits (N, C, H, W)) on ``dataset`` (``(image, mask)`` items, the
    transform already applied, e.g. :func:`~mobilenets.segmentation.data.load_segmentation_dataset` with
    ``train=False``; mask pixels 255 are ignored). Logits of another size than the masks are upsampled
    bilinearly to them. ``meta``: the checkpoint's :class:`~mobilenets.checkpoint.CheckpointMeta` (class names,
    preprocessing for the picture's colours). Writes ``segmentation_metrics.json``,
    ``segmentation_confusion.png`` and ``segmentation_val.png`` (the first ``pictures`` images: image | true
    mask | prediction) into ``output_dir``; ``name`` (e.g. the checkpoint's file name) titles them."""
    from torch.utils.data import DataLoader

    from ..checkpoint import atomic_write
    from ..detection.evaluate import _check_int, _few, dataset_classes
    from ..detection.inference import check_output_dir
    from ..device import resolve_device
    from .data import IGNORE_INDEX
    from .inference import _class_names
    from .metrics import confusion_matrix, segmentation_metrics

    _check_int(batch_size, "batch_size", 1, 65_536)
    _check_int(workers, "workers", 0, 256)
    dev = resolve_device(device)
    out_dir = check_output_dir(output_dir)
    n_cls = model.config.num_classes
    names = _class_names(meta.class_names, n_cls)
    data_names = dataset_classes(dataset)
    # a mask folder without classes.txt names its classes "class i" up to its largest id: fewer is fine
    if data_names is not None and data_names != names and not (_generic(data_names) and len(data_names) <= n_cls):
        raise MobileNetsError(f"the data's classes ({_few(data_names)}) differ from the checkpoint's "
                              f"({_few(names)}); evaluate on the data it was trained for")
    if len(dataset) == 0:
        raise MobileNetsError("no images to evaluate")

    model.to(dev).eval()
    confusion = torch.zeros((n_cls, n_cls), dtype=torch.int64, device=dev)
    count, shown = 0, []
    for x, masks in DataLoader(dataset, batch_size=batch_size, num_workers=workers):
        logits = model(x.to(dev)).float()
        masks = torch.as_tensor(masks).to(dev).long()
        if logits.shape[-2:] != masks.shape[-2:]:
            logits = F.interpolate(logits, size=tuple(masks.shape[-2:]), mode="bilinear", align_corners=False)
        bad = (masks != IGNORE_INDEX) & ((masks < 0) | (masks >= n_cls))
        if bad.any():
            raise MobileNetsError(f"mask value {int(masks[bad][0])} is not a class of this {n_cls}-class model "
                                  f"(0..{n_cls - 1}, 255 = ignore)")
        pred = logits.argmax(1)
        confusion += confusion_matrix(pred, masks, n_cls, ignore_index=IGNORE_INDEX)
        count += len(x)
        for image, mask, p in zip(x, masks, pred):
            if len(shown) < pictures:
                shown.append((image.cpu(), mask.cpu().numpy(), p.cpu().numpy()))
    confusion = confusion.cpu()
    m = segmentation_metrics(confusion, names)
    conf = confusion.numpy()

    json_path = out_dir / METRICS_FILE
    report = {"checkpoint": name, "images": count, "miou": m["miou"], "pixel_acc": m["pixel_acc"],
              "iou": {k: (None if math.isnan(v) else v) for k, v in m["iou"].items()},
              "class_names": names, "confusion": conf.tolist(),
              "note": "IoU in 0..1, null for a class absent from both truth and prediction; confusion[true][pred] "
                      "counts pixels, 255 (ignore) excluded"}
    text = json.dumps(report, indent=2) + "\n"
    atomic_write(json_path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    head = f"{name + ': ' if name else ''}mIoU {m['miou']:.3f}, pixel acc {m['pixel_acc']:.3f} on {count} images"
    confusion_png, png = out_dir / CONFUSION_FILE, out_dir / PICTURE_FILE
    _confusion_png(conf, names, confusion_png, title=head)
    _masks_png(shown, names, meta.preprocessing, png, title=head)
    return SegmentationEvalResult(m["miou"], m["pixel_acc"], m["iou"], conf, count, names, json_path,
                                  confusion_png, png)


def _save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    from ..checkpoint import atomic_write

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))


def _confusion_png(confusion: np.ndarray, names: list[str], path: Path, *, title: str) -> None:
    """The confusion matrix with each row divided by its total (the share of a true class's pixels predicted
    as each class; pixel counts differ by orders of magnitude between background and small classes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    n = len(names)
    rows = confusion.sum(1, keepdims=True)
    norm = confusion / np.maximum(rows, 1)
    size = min(4 + 0.45 * n, 30)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    disp = ConfusionMatrixDisplay(norm, display_labels=names)
    disp.plot(ax=ax, include_values=n <= 30, values_format=".2f", colorbar=True, xticks_rotation="vertical",
              cmap="Blues")
    disp.im_.set_clim(0, 1)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (rows sum to 1)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    _save_figure(fig, path)


def _masks_png(shown, names: list[str], preprocessing, path: Path, *, title: str) -> None:
    """Rows of image | true mask overlay | predicted overlay, with a legend of the classes shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from ..detection.evaluate import denormalise
    from .data import IGNORE_INDEX, voc_palette
    from .inference import tint

    rows = max(1, len(shown))
    fig, axes = plt.subplots(rows, 3, figsize=(9, 3 * rows + 0.9), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, heading in zip(axes[0], ("image", "true mask", "prediction")):
        ax.set_title(heading, fontsize=10)
    present: set[int] = set()
    for row, (image, mask, pred) in zip(axes, shown):
        pixels = (denormalise(image, preprocessing.mean, preprocessing.std) * 255).round().astype(np.uint8)
        row[0].imshow(pixels)
        row[1].imshow(tint(pixels, mask))  # ignore pixels (255) get the palette's cream
        row[2].imshow(tint(pixels, pred))
        present |= set(np.unique(mask).tolist()) | set(np.unique(pred).tolist())
    palette = voc_palette() / 255.0
    handles = [Patch(facecolor=palette[i % 256], edgecolor="black",
                     label=(names[i] if i < len(names) else f"class {i}") + (" (untinted)" if i == 0 else ""))
               for i in sorted(present) if i != IGNORE_INDEX]
    if IGNORE_INDEX in present:
        handles.append(Patch(facecolor=palette[IGNORE_INDEX], edgecolor="black", label="ignore (255)"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5) or 1, frameon=False, fontsize=8)
    fig.suptitle(title, fontsize=10)
    height = fig.get_figheight()  # margins in inches, whatever the number of rows
    fig.tight_layout(rect=(0, (0.1 + 0.25 * math.ceil(len(handles) / 5)) / height, 1, 1 - 0.25 / height))
    _save_figure(fig, path)


def evaluate_segmenter(weights, *, data=None, batch_size: int = 8, device: str = "cpu", output_dir=None,
                       workers: int = 0, strict: bool = False) -> SegmentationEvalResult:
    """Evaluate a segmentation checkpoint on the val split of ``data`` (a Pascal VOC root or a mask folder, see
    :func:`~mobilenets.segmentation.data.load_segmentation_dataset`) or, when ``data`` is None, of the built-in
    shapes set; images are prepared with the checkpoint's preprocessing (size, mean, std) and scored at that
    size. Writes ``segmentation_metrics.json``, ``segmentation_confusion.png`` and ``segmentation_val.png`` into
    ``output_dir`` (default: the checkpoint's folder). ``strict``: a bad image or mask is an error instead of
    being skipped."""
    from ..detection.evaluate import _check_int
    from ..detection.inference import check_output_dir
    from ..device import resolve_device
    from .data import load_segmentation_dataset
    from .inference import load_segmenter

    _check_int(batch_size, "batch_size", 1, 65_536)
    _check_int(workers, "workers", 0, 256)
    resolve_device(device)  # a device this machine lacks fails before any loading
    out_dir = check_output_dir(Path(weights).expanduser().parent if output_dir is None else output_dir)
    model, meta, names = load_segmenter(weights)
    if data is None:
        from ..shapes import SHAPES_CLASSES

        if names != ["background", *SHAPES_CLASSES]:
            raise MobileNetsError(f"{weights}: not a shapes model (classes {', '.join(names[:5])}"
                                  f"{', ...' if len(names) > 5 else ''}); pass the data it was trained on (--data DIR)")
    pre = meta.preprocessing
    dataset = load_segmentation_dataset(data, "val", image_size=pre.crop, mean=pre.mean, std=pre.std, strict=strict,
                                        train=False)
    return evaluate_segmenter_model(model, meta, dataset, batch_size=batch_size, device=device, output_dir=out_dir,
                                    workers=workers, name=Path(weights).name)
