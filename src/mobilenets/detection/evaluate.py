"""Evaluation of a detection checkpoint with pycocotools: AP, AP50, AP75, AP small / medium / large and AP per
class, saved as JSON, and a PNG of validation images with their true and predicted boxes."""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import MobileNetsError

__all__ = ["DetectionEvalResult", "evaluate_detector", "evaluate_detector_model", "METRICS_FILE", "PICTURE_FILE"]

METRICS_FILE = "detection_metrics.json"
PICTURE_FILE = "detections_val.png"
TRUE_COLOUR, PRED_COLOUR = "#00c853", "#ff1744"  # green truth, red predictions: tell apart on any photo


@dataclass
class DetectionEvalResult:
    """COCO box APs in 0..1 (IoU .50:.95 unless named; -1 where pycocotools finds no ground truth, e.g. no small
    objects), AP per class name (IoU .50:.95, all sizes), the number of images, and the files written."""

    ap: float
    ap50: float
    ap75: float
    ap_small: float
    ap_medium: float
    ap_large: float
    per_class: dict[str, float]
    count: int
    metrics_json: Path
    png: Path


def _check_int(value, what: str, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise MobileNetsError(f"{what} must be an integer in [{lo}, {hi}], got {value!r}")


def _few(names: list[str], n: int = 6) -> str:
    """The first ``n`` names, comma-separated, "..." if there are more."""
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


def dataset_classes(dataset) -> list[str] | None:
    """The class names of a dataset or of the dataset behind a Subset (None if it names none)."""
    classes = getattr(dataset, "classes", None)
    if classes is None:
        classes = getattr(getattr(dataset, "dataset", None), "classes", None)
    return list(classes) if classes is not None else None


def denormalise(x: torch.Tensor, mean, std) -> np.ndarray:
    """A normalised (3, H, W) image tensor back to a float (H, W, 3) array in [0, 1] for display."""
    mean = torch.tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
    std = torch.tensor(std, dtype=torch.float32).reshape(-1, 1, 1)
    return (x.float().cpu() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


@torch.inference_mode()
def evaluate_detector_model(model, meta, dataset, *, batch_size: int = 16, device="cpu", output_dir=".",
                            workers: int = 0, score_threshold: float = 0.3, name: str | None = None,
                            pictures: int = 8) -> DetectionEvalResult:
    """COCO-evaluate the detector ``model`` on ``dataset`` (a detection dataset whose transform already resizes
    and normalises, e.g. :func:`~mobilenets.detection.data.load_detection_dataset` with ``train=False``).
    ``meta``: the checkpoint's :class:`~mobilenets.checkpoint.CheckpointMeta` (class names, preprocessing for
    the picture's colours). Writes ``detection_metrics.json`` and ``detections_val.png`` (the first
    ``pictures`` images: true boxes green, predictions scoring >= ``score_threshold`` red) into ``output_dir``;
    ``name`` (e.g. the checkpoint's file name) titles them."""
    from torch.utils.data import DataLoader

    from ..checkpoint import atomic_write
    from ..device import resolve_device
    from .data import detection_collate, to_coco
    from .inference import _check_threshold, _foreground_names, check_output_dir
    from .metrics import METRIC_NAMES, coco_metrics, to_coco_results

    _check_int(batch_size, "batch_size", 1, 65_536)
    _check_int(workers, "workers", 0, 256)
    threshold = _check_threshold(score_threshold)
    dev = resolve_device(device)
    out_dir = check_output_dir(output_dir)
    names = _foreground_names(meta.class_names, model.config.num_classes)
    data_names = dataset_classes(dataset)
    if data_names is not None and data_names != names:
        raise MobileNetsError(f"the data's classes ({_few(data_names)}) differ from the checkpoint's "
                              f"({_few(names)}); evaluate on the data it was trained for")
    if len(dataset) == 0:
        raise MobileNetsError("no images to evaluate")

    model.to(dev).eval()
    results, shown = [], []
    for x, targets in DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=detection_collate):
        cls_logits, box_regression = model(x.to(dev))
        detections = model.postprocess(cls_logits.float(), box_regression.float(), input_size=tuple(x.shape[-2:]))
        for image, t, d in zip(x, targets, detections):
            d = {k: v.cpu() for k, v in d.items()}
            results += to_coco_results(t["image_id"], d)
            if len(shown) < pictures:
                keep = d["scores"] >= threshold
                shown.append((image, torch.as_tensor(t["boxes"]).cpu(), t["labels"].cpu(), d["boxes"][keep],
                              d["scores"][keep], d["labels"][keep]))
    ground_truth = to_coco(dataset)
    metrics = coco_metrics(ground_truth, results, per_class=True)
    count = len(ground_truth["images"])

    json_path, png_path = out_dir / METRICS_FILE, out_dir / PICTURE_FILE
    report = {"checkpoint": name, "images": count, "input_size": list(x.shape[-2:]),
              **{k: metrics[k] for k in METRIC_NAMES}, "per_class": metrics["per_class"],
              "note": "COCO box AP (pycocotools) in 0..1; -1: no ground truth in that size range / class"}
    text = json.dumps(report, indent=2) + "\n"
    atomic_write(json_path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    title = (f"{name + ': ' if name else ''}AP {metrics['ap']:.3f}, AP50 {metrics['ap50']:.3f} on {count} images")
    _detections_png(shown, names, meta.preprocessing, png_path, title=title, threshold=threshold)
    return DetectionEvalResult(*(metrics[k] for k in METRIC_NAMES), per_class=metrics["per_class"], count=count,
                               metrics_json=json_path, png=png_path)


def _detections_png(shown, names, preprocessing, path: Path, *, title: str, threshold: float) -> None:
    """A grid of images: true boxes (green, class name) and predictions (red, dashed, "name score")."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    from ..checkpoint import atomic_write

    cols = min(4, max(1, len(shown)))
    rows = max(1, math.ceil(len(shown) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows + 0.8), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")

    def name_of(label: int) -> str:
        return names[label - 1] if 1 <= label <= len(names) else f"class {label}"

    for ax, (image, gt_boxes, gt_labels, boxes, scores, labels) in zip(axes.flat, shown):
        ax.imshow(denormalise(image, preprocessing.mean, preprocessing.std))
        for (x1, y1, x2, y2), label in zip(gt_boxes.tolist(), gt_labels.tolist()):
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=TRUE_COLOUR, linewidth=1.5))
            ax.text(x1, y2, name_of(label), color="white", fontsize=6, va="top",
                    bbox={"facecolor": TRUE_COLOUR, "pad": 0.5, "linewidth": 0})
        for (x1, y1, x2, y2), score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=PRED_COLOUR, linewidth=1.2,
                                   linestyle="--"))
            ax.text(x1, y1, f"{name_of(label)} {score:.2f}", color="white", fontsize=6, va="bottom",
                    bbox={"facecolor": PRED_COLOUR, "pad": 0.5, "linewidth": 0})
    fig.legend(handles=[Line2D([], [], color=TRUE_COLOUR, linewidth=2, label="true box"),
                        Line2D([], [], color=PRED_COLOUR, linewidth=2, linestyle="--",
                               label=f"predicted, score >= {threshold:g}")],
               loc="lower center", ncol=2, frameon=False)
    fig.suptitle(title)
    height = fig.get_figheight()  # margins in inches, whatever the number of rows
    fig.tight_layout(rect=(0, 0.4 / height, 1, 1 - 0.3 / height))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))


def evaluate_detector(weights, *, data=None, batch_size: int = 16, device: str = "cpu", output_dir=None,
                      workers: int = 0, strict: bool = False) -> DetectionEvalResult:
    """COCO-evaluate a detection checkpoint on the val split of ``data`` (a Pascal VOC or COCO root, see
    :func:`~mobilenets.detection.data.load_detection_dataset`) or, when ``data`` is None, of the built-in shapes
    set; images are prepared with the checkpoint's preprocessing (size, mean, std). Writes
    ``detection_metrics.json`` and ``detections_val.png`` into ``output_dir`` (default: the checkpoint's folder).
    ``strict``: a bad annotation or image is an error instead of being skipped."""
    from ..device import resolve_device
    from .data import load_detection_dataset
    from .inference import check_output_dir, load_detector

    _check_int(batch_size, "batch_size", 1, 65_536)
    _check_int(workers, "workers", 0, 256)
    resolve_device(device)  # a device this machine lacks fails before any loading
    out_dir = check_output_dir(Path(weights).expanduser().parent if output_dir is None else output_dir)
    model, meta, names = load_detector(weights)
    if data is None:
        from ..shapes import SHAPES_CLASSES

        if names != list(SHAPES_CLASSES):
            raise MobileNetsError(f"{weights}: not a shapes model (classes {', '.join(names[:5])}"
                                  f"{', ...' if len(names) > 5 else ''}); pass the data it was trained on (--data DIR)")
    pre = meta.preprocessing
    dataset = load_detection_dataset(data, "val", image_size=pre.crop, mean=pre.mean, std=pre.std, strict=strict,
                                     train=False)
    return evaluate_detector_model(model, meta, dataset, batch_size=batch_size, device=device, output_dir=out_dir,
                                   workers=workers, name=Path(weights).name)
