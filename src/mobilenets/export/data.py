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


def _folder(folder: Path, prep: Preprocessing, class_names: list[str] | None, limit: int | None) -> ImageSet:
    from ..predict import load_image

    if not folder.is_dir():
        raise MobileNetsError(f"{folder}: no such folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise MobileNetsError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    labelled = all(p.parent != folder for p in files)
    if limit is not None and len(files) > limit:  # an even spread over the folder, deterministic
        files = [files[i] for i in np.linspace(0, len(files) - 1, limit).round().astype(int)]
    tf = prep.transform()
    images, labels = [], []
    for p in files:
        images.append(tf(load_image(p)).numpy())  # a one-line error naming the file if it is not an image
        if labelled:
            labels.append(_class_index(p.relative_to(folder).parts[0], class_names, folder))
    return ImageSet(np.stack(images).astype(np.float32), np.array(labels) if labelled else None, str(folder))


def _digits(split: str, prep: Preprocessing, limit: int | None) -> ImageSet:
    from ..digits import DigitsDataset

    ds = DigitsDataset(split, image_size=prep.crop, transform=prep.transform())
    idx = range(len(ds)) if limit is None or limit >= len(ds) else \
        np.linspace(0, len(ds) - 1, limit).round().astype(int)
    items = [ds[int(i)] for i in idx]
    return ImageSet(torch.stack([x for x, _ in items]).numpy(), np.array([y for _, y in items]), f"digits:{split}")


def load_images(source: str | Path, *, preprocessing: Preprocessing, role: str,
                class_names: list[str] | None = None, limit: int | None = None) -> ImageSet:
    """Load and preprocess images from ``source`` ("digits" or a folder) for ``role`` "calib" or "eval"
    (for "digits": the train split calibrates, the val split evaluates), at most ``limit`` of them."""
    if str(source) == "digits":
        return _digits("train" if role == "calib" else "val", preprocessing, limit)
    return _folder(Path(source), preprocessing, class_names, limit)
