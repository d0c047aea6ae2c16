"""Images for int8 calibration and for the accuracy check: an image folder, or the built-in digits data.

``calib`` / ``eval_data`` accept:

- ``"digits"``: the built-in digits dataset (:mod:`mobilenets.digits`): calibration from its train split,
  evaluation on its val split (359 labelled images);
- a folder of images. A folder whose images sit in one sub-folder per class (torchvision's ``ImageFolder``
  layout) is labelled: the folder names are the class names of the checkpoint (``class_names``), or class
  indices when the checkpoint has no names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import MobileNetsError
from ..preprocess import Preprocessing

__all__ = ["ImageSet", "load_images", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


@dataclass
class ImageSet:
    """Preprocessed images (N, 3, H, W) float32 and their labels (None when the source is unlabelled)."""

    images: np.ndarray
    labels: np.ndarray | None
    source: str


def _class_index(name: str, class_names: list[str] | None, folder: Path) -> int:
    if class_names is not None:
        if name not in class_names:
            raise MobileNetsError(f"{folder}: sub-folder {name!r} is not one of the model's class names")
        return class_names.index(name)
    if name.isdigit():
        return int(name)
    raise MobileNetsError(f"{folder}: sub-folder {name!r} is not a class index, and the model has no class names")


def _pick(n: int, limit: int | None, select: str) -> np.ndarray:
    """Which of ``n`` items to take, at most ``limit``: an even spread (deterministic), or a random sample
    (seed 0: the same on every run)."""
    if limit is None or limit >= n:
        return np.arange(n)
    if select == "random":
        return np.sort(np.random.default_rng(0).choice(n, size=limit, replace=False))
    return np.linspace(0, n - 1, limit).round().astype(int)


def _folder(folder: Path, prep: Preprocessing, class_names: list[str] | None, limit: int | None,
            select: str = "spread") -> ImageSet:
    from ..predict import load_image

    if not folder.is_dir():
        raise MobileNetsError(f"{folder}: no such folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise MobileNetsError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    labelled = all(p.parent != folder for p in files)
    files = [files[i] for i in _pick(len(files), limit, select)]
    tf = prep.transform()
    images, labels = [], []
    for p in files:
        images.append(tf(load_image(p)).numpy())  # a one-line error naming the file if it is not an image
        if labelled:
            labels.append(_class_index(p.relative_to(folder).parts[0], class_names, folder))
    return ImageSet(np.stack(images).astype(np.float32), np.array(labels) if labelled else None, str(folder))


def _digits(split: str, prep: Preprocessing, limit: int | None, select: str = "spread") -> ImageSet:
    from ..digits import DigitsDataset

    ds = DigitsDataset(split, image_size=prep.crop, transform=prep.transform())
    idx = _pick(len(ds), limit, select)
    items = [ds[int(i)] for i in idx]
    return ImageSet(torch.stack([x for x, _ in items]).numpy(), np.array([y for _, y in items]), f"digits:{split}")


def load_images(source: str | Path, *, preprocessing: Preprocessing, role: str,
                class_names: list[str] | None = None, limit: int | None = None, select: str = "spread") -> ImageSet:
    """Load and preprocess images from ``source`` ("digits" or a folder) for ``role`` "calib" or "eval"
    (for "digits": the train split calibrates, the val split evaluates), at most ``limit`` of them, chosen by
    ``select``: "spread" (evenly over the source's sorted order) or "random" (a sample, seed 0)."""
    if str(source) == "digits":
        return _digits("train" if role == "calib" else "val", preprocessing, limit, select)
    return _folder(Path(source), preprocessing, class_names, limit, select)
