"""Detect objects in image files with an SSDLite checkpoint: boxes in each image's own pixels, annotated PNGs.

Images are squashed to the model's square input (``preprocessing.crop``), as the eval transform does, and the
boxes scaled back to each image's original width and height. Outputs derived from an input image are named
after its base name only (``<stem>_detections.png``) inside the chosen output folder: an input path never
decides where a file is written.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ..data import to_rgb
from ..errors import MobileNetsError, output_file

__all__ = ["DetectedBox", "ImageDetections", "detect_images", "detect", "load_detector", "derived_output_paths",
           "check_output_dir", "class_colour"]

# Box colours by class (matplotlib's tab10, as RGB): label i gets colour (i - 1) % 10.
_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
            (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


class DetectedBox(NamedTuple):
    """One detection: class name, score (0..1) and the box (x1, y1, x2, y2) in the original image's pixels."""

    name: str
    score: float
    box: tuple[float, float, float, float]


@dataclass
class ImageDetections:
    """The detections of one image, best first. ``size`` is (height, width) of the original image;
    ``image`` the input path (None for an image passed in memory); ``annotated`` the PNG written (if any)."""

    image: str | None
    size: tuple[int, int]
    boxes: list[DetectedBox]
    annotated: Path | None = None


def class_colour(label: int) -> tuple[int, int, int]:
    """The RGB colour boxes of foreground label ``label`` (1..K) are drawn in."""
    return _COLOURS[(int(label) - 1) % len(_COLOURS)]


def _check_threshold(score_threshold) -> float:
    if isinstance(score_threshold, bool) or not isinstance(score_threshold, (int, float)) \
            or not 0.0 <= score_threshold <= 1.0:
        raise MobileNetsError(f"score_threshold must be a number in [0, 1], got {score_threshold!r}")
    return float(score_threshold)


def _foreground_names(class_names, num_slots: int) -> list[str]:
    """K names for a detector with K + 1 class slots: the checkpoint's, without a leading background name if
    it kept one, else "class i"."""
    k = num_slots - 1
    if class_names is None:
        return [f"class {i}" for i in range(1, k + 1)]
    names = list(class_names)
    if len(names) == k + 1 and names[0].lower() in ("background", "__background__"):
        names = names[1:]
    if len(names) != k:
        raise MobileNetsError(f"{len(names)} class names for a detector with {k} foreground classes")
    return names


@torch.inference_mode()
def detect_images(model, images: Sequence, *, preprocessing, class_names: Sequence[str] | None,
                  score_threshold: float = 0.3, device="cpu", batch_size: int = 8) -> list[ImageDetections]:
    """Run the detector ``model`` (an :class:`~mobilenets.detection.ssdlite.SSDLite`) on RGB PIL ``images``.

    Each image is resized to ``preprocessing.crop`` x ``preprocessing.crop`` and normalised with its mean/std
    (the eval transform); the detections scoring at least ``score_threshold`` come back with boxes scaled to
    the image's original size. ``class_names``: the K foreground names (label i is ``class_names[i - 1]``).
    """
    from ..detection.data import detection_eval_transform
    from ..device import resolve_device

    threshold = _check_threshold(score_threshold)
    check_batch_size(batch_size)
    dev = resolve_device(device)
    names = _foreground_names(class_names, model.config.num_classes)
    size = preprocessing.crop
    transform = detection_eval_transform(size, mean=preprocessing.mean, std=preprocessing.std)
    model.to(dev).eval()
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        x = torch.stack([transform(to_rgb(im)) for im in chunk]).to(dev)
        cls_logits, box_regression = model(x)
        detections = model.postprocess(cls_logits.float(), box_regression.float(), input_size=size)
        for im, d in zip(chunk, detections):
            w, h = im.size
            keep = d["scores"].float().cpu() >= threshold
            # the input was squashed to size x size: x scales by w / size, y by h / size
            scale = torch.tensor([w / size, h / size, w / size, h / size], dtype=torch.float64)
            boxes = d["boxes"].cpu().double()[keep] * scale
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
            found = []
            for box, score, label in zip(boxes.tolist(), d["scores"].cpu()[keep].tolist(),
                                         d["labels"].cpu()[keep].tolist()):
                name = names[label - 1] if 1 <= label <= len(names) else f"class {label}"
                found.append(DetectedBox(name, float(score), tuple(float(v) for v in box)))
            out.append(ImageDetections(None, (h, w), found))
    return out


def _label_font() -> str | None:
    """matplotlib's bundled DejaVu Sans (a scalable font, so labels grow with the image), if present."""
    try:
        import matplotlib
    except ImportError:
        return None
    path = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    return str(path) if path.is_file() else None


def annotate(image, detections: ImageDetections, class_names: Sequence[str]):
    """``image`` (PIL) with the boxes drawn in their class's colour and labelled "name 0.87"."""
    import inspect

    from PIL import Image
    from torchvision.utils import draw_bounding_boxes

    if not detections.boxes:
        return image.copy()
    label_of = {n: i + 1 for i, n in enumerate(class_names)}
    pixels = torch.from_numpy(np.array(to_rgb(image))).permute(2, 0, 1)
    boxes = torch.tensor([b.box for b in detections.boxes], dtype=torch.float32)
    side = min(detections.size)
    font = _label_font()
    options = {"font": font, "font_size": max(10, round(side / 30))} if font else {}
    if "fill_labels" in inspect.signature(draw_bounding_boxes).parameters:  # torchvision >= 0.20
        options.update(fill_labels=True, label_colors="white")  # white text on the box colour: readable on photos
    drawn = draw_bounding_boxes(pixels, boxes, labels=[f"{b.name} {b.score:.2f}" for b in detections.boxes],
                                colors=[class_colour(label_of.get(b.name, 1)) for b in detections.boxes],
                                width=max(1, round(side / 160)), **options)  # lines stay visible on large photos
    return Image.fromarray(drawn.permute(1, 2, 0).numpy())


def check_batch_size(batch_size) -> int:
    """``batch_size`` as a positive integer, else a one-line :class:`MobileNetsError` (a negative one once gave
    no results and no error)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 65_536:
        raise MobileNetsError(f"batch_size must be an integer in [1, 65536], got {batch_size!r}")
    return batch_size


def check_output_dir(output_dir) -> Path:
    """``output_dir`` as a Path a folder can be (or is) at; a one-line error if it is a file or lies under one."""
    d = Path(output_dir).expanduser()
    if d.exists() and not d.is_dir():
        raise MobileNetsError(f"{d}: not a folder (the output folder)")
    output_file(d / "probe", "output folder")  # its nearest existing ancestor must be a folder
    return d


def derived_output_paths(inputs: Sequence, output_dir, suffix: str) -> list[Path]:
    """``output_dir / (<input's base name without extension> + suffix)`` for each input: only the base name of an
    input path is used, so no input (``../x/../img.png``, an absolute path) can make a file land elsewhere.
    Inputs sharing a base name (``a/img.png``, ``b/img.jpg``) get ``img-2``, ``img-3``... so that no output
    overwrites another."""
    out_dir = Path(output_dir).expanduser()
    taken: set[str] = set()
    paths = []
    for p in inputs:
        stem = Path(os.fspath(p)).stem
        if stem in ("", ".", ".."):
            stem = "image"
        name, k = stem, 1
        while name.lower() in taken:  # case-insensitive: two names must not meet on macOS / Windows either
            k += 1
            name = f"{stem}-{k}"
        taken.add(name.lower())
        paths.append(out_dir / f"{name}{suffix}")
    return paths


def save_png(image, path: Path) -> Path:
    """Write the PIL ``image`` to ``path`` as PNG, atomically."""
    from ..checkpoint import atomic_write

    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
    return Path(path)


def load_detector(weights):
    """``(model, meta, foreground class names)`` of a detection checkpoint; a one-line error for any other."""
    from ..checkpoint import load_checkpoint
    from .ssdlite import SSDLite

    model, meta = load_checkpoint(weights)
    if not isinstance(model, SSDLite):
        from ..weights.dense import task_of

        task = task_of(meta.config.name)  # the registry says, not a note a checkpoint may lack
        raise MobileNetsError(f"{weights}: a {task} checkpoint ({meta.config.name}), not a detector")
    try:
        names = _foreground_names(meta.class_names, model.config.num_classes)
    except MobileNetsError as e:
        raise MobileNetsError(f"{weights}: {e}") from None
    return model, meta, names


def detect(weights, images, *, score_threshold: float = 0.3, device: str = "cpu",
           output_dir=".") -> list[ImageDetections]:
    """Detect objects in image files with a detection checkpoint (``weights``), using its preprocessing and
    class names. Writes ``<image stem>_detections.png`` (the boxes drawn on the image) per image into
    ``output_dir`` (default: the current folder) and returns the detections, boxes in original-image pixels.
    Every image is read before the model is loaded: an unreadable one is a one-line error naming it."""
    from ..device import resolve_device
    from ..predict import load_image

    if isinstance(images, (str, os.PathLike)):
        images = [images]
    images = list(images)
    if not images:
        raise MobileNetsError("no images given")
    _check_threshold(score_threshold)
    dev = resolve_device(device)
    out_dir = check_output_dir(output_dir)
    pil = [load_image(p) for p in images]
    model, meta, names = load_detector(weights)
    if model.config.in_chans != 3:
        raise MobileNetsError(f"{weights}: a model for {model.config.in_chans}-channel inputs; images are RGB")
    results = detect_images(model, pil, preprocessing=meta.preprocessing, class_names=names,
                            score_threshold=score_threshold, device=dev)
    for path, img, r, png in zip(images, pil, results, derived_output_paths(images, out_dir, "_detections.png")):
        r.image = str(path)
        r.annotated = save_png(annotate(img, r, names), png)
    return results
