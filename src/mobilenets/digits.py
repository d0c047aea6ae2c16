"""The built-in default dataset: scikit-learn's handwritten digits (1,797 8x8 grey images, 10 classes),
upscaled to RGB images, with a fixed stratified train/val split. It ships inside an installed package, so the
default training run and the int8 calibration need no download."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .errors import MobileNetsError

__all__ = ["DigitsDataset", "DIGITS_CLASSES"]

DIGITS_CLASSES = [str(i) for i in range(10)]
VAL_FRACTION = 0.2
SPLIT_SEED = 0  # the split is fixed: the same images are validation images in every run


def _split_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SPLIT_SEED)
    train, val = [], []
    for c in np.unique(labels):  # stratified: 20% of each class
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = round(len(idx) * VAL_FRACTION)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return {"train": np.sort(np.concatenate(train)), "val": np.sort(np.concatenate(val))}


class DigitsDataset(Dataset):
    """``split`` is "train" (1,438 images) or "val" (359). Items are (PIL RGB image of ``image_size``, label),
    or (transform(image), label) when ``transform`` is given. Pixel values 0..16 are scaled to 0..255 and
    the 8x8 image is upscaled bilinearly."""

    classes = DIGITS_CLASSES

    def __init__(self, split: str = "train", *, image_size: int = 64, transform=None) -> None:
        from sklearn.datasets import load_digits

        if split not in ("train", "val"):
            raise MobileNetsError(f"split must be 'train' or 'val', got {split!r}")
        if not isinstance(image_size, int) or isinstance(image_size, bool) or not 8 <= image_size <= 8192:
            raise MobileNetsError(f"image_size must be an integer in [8, 8192], got {image_size!r}")
        digits = load_digits()
        idx = _split_indices(digits.target)[split]
        self.images = (digits.images[idx] * (255.0 / 16.0)).round().astype(np.uint8)
        self.targets = digits.target[idx].astype(np.int64)
        self.image_size = image_size
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def image(self, i: int) -> Image.Image:
        """Image ``i`` as an upscaled RGB PIL image (no transform)."""
        img = Image.fromarray(self.images[i], mode="L")
        return img.resize((self.image_size,) * 2, Image.BILINEAR).convert("RGB")

    def __getitem__(self, i: int):
        img = self.image(i)
        return (img if self.transform is None else self.transform(img)), int(self.targets[i])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images as a uint8 (N, 3, H, W) tensor and the labels (N,), for fast in-memory use."""
        imgs = np.stack([np.asarray(self.image(i)) for i in range(len(self))])
        return torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(self.targets)
