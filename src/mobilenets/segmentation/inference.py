"""Segment image files with a segmentation checkpoint: a class map at each image's own size, its class pixel
shares, a palette PNG of class ids and an overlay PNG.

Images are squashed to the model's square input (``preprocessing.crop``), as the eval transform does; the
logits are upsampled bilinearly to the image's original size before the argmax (in row bands, so a large
photo costs no more than ~64 MB of logits). Outputs derived from an input image are named after its base name
only (``<stem>_classes.png``, ``<stem>_overlay.png``) inside the chosen output folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data import to_rgb
from ..errors import MobileNetsError

__all__ = ["ImageSegmentation", "segment_images", "segment", "load_segmenter", "upsample_argmax", "overlay",
           "class_shares"]

OVERLAY_ALPHA = 0.5


@dataclass
class ImageSegmentation:
    """The segmentation of one image: ``class_map`` (H, W) class ids at the original size (uint8; int64 for
    models with more than 256 classes), ``shares`` {class name: fraction of the pixels} for the classes present,
    largest first (they sum to 1); ``image`` the input path (None for an image passed in memory) and the PNGs
    written (if any)."""

    image: str | None
    class_map: np.ndarray
    shares: dict[str, float]
    classes_png: Path | None = None
    overlay_png: Path | None = None


def upsample_argmax(logits: torch.Tensor, size: tuple[int, int], *, max_elements: int = 1 << 24) -> torch.Tensor:
    """argmax over classes of (C, h, w) ``logits`` upsampled bilinearly (``align_corners=False``, as
    ``F.interpolate``) to ``size`` = (H, W): int64 (H, W). Beyond ``max_elements`` upsampled values it works in
    bands of rows with ``grid_sample`` at the same sample positions, so memory stays bounded."""
    c, _, _ = logits.shape
    h, w = size
    logits = logits.float()
    if c * h * w <= max_elements:
        return F.interpolate(logits[None], size=(h, w), mode="bilinear", align_corners=False)[0].argmax(0)
    # grid_sample (align_corners=False, border padding) samples output pixel i at source (i + 0.5) * in / out - 0.5,
    # clamped to the edge pixels: F.interpolate's positions exactly
    rows = max(1, max_elements // (c * w))
    xs = (torch.arange(w, dtype=torch.float32, device=logits.device) + 0.5) / w * 2 - 1
    out = torch.empty((h, w), dtype=torch.int64, device=logits.device)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        ys = (torch.arange(r0, r1, dtype=torch.float32, device=logits.device) + 0.5) / h * 2 - 1
        grid = torch.stack([xs.expand(r1 - r0, w), ys[:, None].expand(r1 - r0, w)], dim=-1)
        band = F.grid_sample(logits[None], grid[None], mode="bilinear", padding_mode="border", align_corners=False)
        out[r0:r1] = band[0].argmax(0)
    return out


def class_shares(class_map: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """{class name: fraction of the pixels} for the classes present in ``class_map``, largest first."""
    counts = np.bincount(class_map.ravel().astype(np.int64), minlength=len(class_names))
    total = counts.sum()
    order = sorted(np.flatnonzero(counts).tolist(), key=lambda i: (-counts[i], i))
    return {(class_names[i] if i < len(class_names) else f"class {i}"): float(counts[i] / total) for i in order}


@torch.inference_mode()
def segment_images(model, images: Sequence, *, preprocessing, class_names: Sequence[str] | None,
                   device="cpu", batch_size: int = 8) -> list[ImageSegmentation]:
    """Segment RGB PIL ``images`` with ``model`` (logits (N, C, H, W), class 0 = background): each image is
    resized to ``preprocessing.crop`` squared and normalised (the eval transform), the logits upsampled
    bilinearly back to the image's size, then argmax. ``class_names``: one per class, background first."""
    from ..detection.inference import check_batch_size
    from ..device import resolve_device
    from .data import segmentation_eval_transform

    check_batch_size(batch_size)
    dev = resolve_device(device)
    names = _class_names(class_names, model.config.num_classes)
    size = preprocessing.crop
    transform = segmentation_eval_transform(size, mean=preprocessing.mean, std=preprocessing.std)
    model.to(dev).eval()
    dtype = np.uint8 if len(names) <= 256 else np.int64
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        x = torch.stack([transform(to_rgb(im)) for im in chunk]).to(dev)
        logits = model(x)
        for im, lg in zip(chunk, logits):
            w, h = im.size
            class_map = upsample_argmax(lg, (h, w)).cpu().numpy().astype(dtype)
            out.append(ImageSegmentation(None, class_map, class_shares(class_map, names)))
    return out


def _class_names(class_names, num_classes: int) -> list[str]:
    if class_names is None:
        return ["background", *(f"class {i}" for i in range(1, num_classes))]
    if len(class_names) != num_classes:
        raise MobileNetsError(f"{len(class_names)} class names for a model with {num_classes} classes")
    return list(class_names)


def tint(image: np.ndarray, class_map: np.ndarray, *, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """uint8 (H, W, 3) ``image`` blended with the VOC colours of ``class_map`` (weight ``alpha``) where the class
    is not background (0): the photo stays readable instead of being darkened by background's black."""
    from .data import voc_palette

    colours = voc_palette()[class_map.astype(np.int64) % 256]
    fg = class_map != 0
    out = image.astype(np.float32)
    out[fg] = (1 - alpha) * out[fg] + alpha * colours[fg]
    return out.round().clip(0, 255).astype(np.uint8)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size)  # a scalable font on Pillow >= 10.1
    except TypeError:
        return ImageFont.load_default()


def overlay(image, seg: ImageSegmentation, class_names: Sequence[str]):
    """``image`` (PIL) with the classes' colours blended in, above a legend of the classes present (colour,
    name, pixel share; background is listed but left untinted)."""
    from PIL import Image, ImageDraw

    from .data import voc_palette

    pixels = np.asarray(to_rgb(image))
    blended = Image.fromarray(tint(pixels, seg.class_map))
    w, h = blended.size
    font_px = max(12, min(w, 800) // 40)
    font = _font(font_px)
    line = round(font_px * 1.5)
    index = {n: i for i, n in enumerate(class_names)}
    labels = [(index.get(name, 0), f"{name}  {100 * share:.1f}%") for name, share in seg.shares.items()]
    labels = [(i, text + ("  (not tinted)" if i == 0 else "")) for i, text in labels]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max((measure.textlength(text, font=font) for _, text in labels), default=0)
    # a narrow image gets a wider canvas: the legend is never cut off
    canvas = Image.new("RGB", (max(w, int(text_w) + font_px + 16), h + line * len(labels) + font_px // 2),
                       (255, 255, 255))
    canvas.paste(blended, (0, 0))
    draw = ImageDraw.Draw(canvas)
    palette = voc_palette()
    for k, (i, text) in enumerate(labels):
        y = h + font_px // 4 + k * line
        colour = tuple(int(v) for v in palette[i % 256])
        draw.rectangle((4, y + 2, 4 + font_px, y + 2 + font_px), fill=colour, outline=(0, 0, 0))
        draw.text((10 + font_px, y), text, fill=(0, 0, 0), font=font)
    return canvas


def class_png(class_map: np.ndarray):
    """The class map as a PIL image whose pixel values are the class ids: a palette PNG with the VOC colours
    (up to 256 classes), else 16-bit greyscale."""
    from PIL import Image

    from .data import voc_palette

    if class_map.max(initial=0) < 256:
        im = Image.fromarray(class_map.astype(np.uint8))  # mode L; putpalette makes it P, values kept
        im.putpalette(voc_palette().ravel().tolist())
        return im
    return Image.fromarray(class_map.astype(np.uint16))


def load_segmenter(weights):
    """``(model, meta, class names)`` of a segmentation checkpoint; a one-line error for any other."""
    from ..checkpoint import load_checkpoint
    from .deeplabv3 import DeepLabV3
    from .lraspp import LRASPP

    model, meta = load_checkpoint(weights)
    if not isinstance(model, (LRASPP, DeepLabV3)):
        from ..weights.dense import task_of

        task = task_of(meta.config.name)  # the registry says, not a note a checkpoint may lack
        raise MobileNetsError(f"{weights}: a {task} checkpoint ({meta.config.name}), not a segmentation model")
    try:
        names = _class_names(meta.class_names, model.config.num_classes)
    except MobileNetsError as e:
        raise MobileNetsError(f"{weights}: {e}") from None
    return model, meta, names


def segment(weights, images, *, device: str = "cpu", output_dir=".") -> list[ImageSegmentation]:
    """Segment image files with a segmentation checkpoint (``weights``), using its preprocessing and class
    names. Writes ``<image stem>_classes.png`` (palette PNG, pixel value = class id) and
    ``<image stem>_overlay.png`` (image blended with the class colours, alpha 0.5, legend of the classes
    present) per image into ``output_dir`` (default: the current folder). Every image is read before the model
    is loaded: an unreadable one is a one-line error naming it."""
    from ..detection.inference import check_output_dir, derived_output_paths, save_png
    from ..device import resolve_device
    from ..predict import load_image

    if isinstance(images, (str, os.PathLike)):
        images = [images]
    images = list(images)
    if not images:
        raise MobileNetsError("no images given")
    dev = resolve_device(device)
    out_dir = check_output_dir(output_dir)
    pil = [load_image(p) for p in images]
    model, meta, names = load_segmenter(weights)
    if model.config.in_chans != 3:
        raise MobileNetsError(f"{weights}: a model for {model.config.in_chans}-channel inputs; images are RGB")
    results = segment_images(model, pil, preprocessing=meta.preprocessing, class_names=names, device=dev)
    classes_pngs = derived_output_paths(images, out_dir, "_classes.png")
    overlay_pngs = derived_output_paths(images, out_dir, "_overlay.png")
    for path, img, r, cls_png, ov_png in zip(images, pil, results, classes_pngs, overlay_pngs):
        r.image = str(path)
        r.classes_png = save_png(class_png(r.class_map), cls_png)
        r.overlay_png = save_png(overlay(img, r, names), ov_png)
    return results
