"""Datasets for training and evaluation: image folders (torchvision's ImageFolder layout) and the built-in
digits, with bad data caught up front: unreadable images are skipped and counted (or, strict, reported by
name), empty folders and classes and val classes the train set lacks are one-line errors."""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from .errors import MobileNetsError, one_line

__all__ = ["ImageFiles", "DataSplits", "load_image_folders", "load_eval_folder", "train_transform", "open_image",
           "BAD_IMAGE"]

log = logging.getLogger("mobilenets")

# PIL raises these for files that are not (complete, sane) images; DecompressionBombError for a header whose
# pixel count is over Image.MAX_IMAGE_PIXELS x 2 (a few bytes that would decode to gigabytes).
BAD_IMAGE = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error,
             Image.DecompressionBombError)
_BAD_IMAGE = BAD_IMAGE


def image_problem(e: BaseException) -> str:
    """One line on why PIL could not read an image."""
    if isinstance(e, Image.DecompressionBombError):
        return f"refused: {one_line(str(e).split(', could be')[0], 160)} (a decompression bomb?)"
    return f"{type(e).__name__}: {one_line(e, 160)}" if str(e) else type(e).__name__


def to_rgb(im: Image.Image) -> Image.Image:
    """``im`` as 8-bit RGB. PIL's ``convert("RGB")`` clips 16- and 32-bit integer greyscale (modes ``I;16*``,
    ``I``: 16-bit PNGs and TIFFs) at 255, which turns nearly every pixel white: those are scaled from the 16-bit
    range first. 32-bit float pixels (mode ``F``) have no agreed range: a ValueError (an unreadable image)."""
    if im.mode == "I" or im.mode.startswith("I;16"):
        wide = np.asarray(im).astype(np.int64)
        return Image.fromarray((np.clip(wide, 0, 65535) // 257).astype(np.uint8), "L").convert("RGB")
    if im.mode == "F":
        raise ValueError("32-bit floating-point pixels (mode F) have no agreed range; save the image with 8 or 16 "
                         "bits per channel")
    return im.convert("RGB")


def open_image(path) -> Image.Image:
    """The RGB image at ``path``; a :class:`MobileNetsError` naming the file for anything that is not a
    readable image (missing, a folder, truncated, not an image, a decompression bomb)."""
    from .errors import existing_file

    path = existing_file(path, "an image")
    try:
        with Image.open(path) as im:
            return to_rgb(im)
    except BAD_IMAGE as e:
        raise MobileNetsError(f"{path}: not a readable image ({image_problem(e)})") from None


class ImageFiles(Dataset):
    """(path, class index) samples read as RGB PIL images, then ``transform``.

    An image that cannot be decoded at load time (one that passed the up-front check but is truncated deep
    inside) raises :class:`MobileNetsError` naming the file when ``strict``; otherwise it is counted in
    ``self.load_failures`` (per worker process) and replaced by the next sample (training: the batch keeps its
    size), or with ``substitute=False`` (evaluation, where a stand-in would be scored twice) the item is None,
    which :func:`collate_readable` drops.
    """

    def __init__(self, samples: list[tuple[str, int]], classes: list[str], *, transform=None,
                 strict: bool = False, substitute: bool = True) -> None:
        self.samples = samples
        self.targets = [t for _, t in samples]
        self.classes = classes
        self.transform = transform
        self.strict = strict
        self.substitute = substitute
        self.load_failures = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        for k in range(len(self.samples)):
            path, target = self.samples[(i + k) % len(self.samples)]
            try:
                with Image.open(path) as im:
                    img = to_rgb(im)
                break
            except _BAD_IMAGE as e:
                if self.strict:
                    raise MobileNetsError(f"{path}: unreadable image ({image_problem(e)})") from None
                self.load_failures += 1
                log.warning("skipping unreadable image %s (%s)", one_line(path), one_line(e))
                if not self.substitute:
                    return None
        else:
            raise MobileNetsError("no readable image left in the dataset")
        return (img if self.transform is None else self.transform(img)), target


def collate_readable(batch):
    """``default_collate`` of the items that could be read (:class:`ImageFiles` with ``substitute=False`` gives
    None for the others); None when none of the batch could."""
    from torch.utils.data import default_collate

    kept = [item for item in batch if item is not None]
    return default_collate(kept) if kept else None


def _check_image(path: str) -> str | None:
    """None if PIL can identify and verify ``path`` (header and, for PNG, the CRCs), else the reason."""
    try:
        with Image.open(path) as im:
            im.verify()
        return None
    except _BAD_IMAGE as e:
        return image_problem(e)


def _image_files(directory: Path, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    """(path, class index) of every image file under each class folder, in torchvision's ``make_dataset``
    order. Links to folders are followed, but each folder is entered once: a link back into the tree (a
    symlink loop) or to a folder already read is skipped and counted, never walked again."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    seen = {(st.st_dev, st.st_ino) for st in [os.stat(directory)]}
    skipped = []
    samples = []
    for cls in sorted(class_to_idx):
        found = []
        for root, dirs, names in os.walk(directory / cls, followlinks=True):
            st = os.stat(root)
            if (st.st_dev, st.st_ino) in seen:
                skipped.append(root)
                dirs[:] = []
                continue
            seen.add((st.st_dev, st.st_ino))
            found.append((root, [n for n in names if n.lower().endswith(IMG_EXTENSIONS)]))
        for root, names in sorted(found):
            samples += [(os.path.join(root, n), class_to_idx[cls]) for n in sorted(names)]
    if skipped:
        log.warning("%s: skipped %d linked folder(s) already read (a symlink loop?), e.g. %s", directory,
                    len(skipped), skipped[0])
    return samples


def _scan(directory: Path, class_to_idx: dict[str, int], *, strict: bool) -> list[tuple[str, int]]:
    """The readable images of every class folder of ``directory`` (an empty class is an error)."""
    samples = _image_files(directory, class_to_idx)
    good, skipped = [], []
    for path, target in samples:
        reason = _check_image(path)
        if reason is None:
            good.append((path, target))
        elif strict:
            raise MobileNetsError(f"{path}: unreadable image ({reason})")
        else:
            skipped.append(path)
    if skipped:
        log.warning("%s: skipped %d unreadable image(s), e.g. %s", directory, len(skipped), skipped[0])
    counts = {c: 0 for c in class_to_idx}
    idx_to_class = {i: c for c, i in class_to_idx.items()}
    for _, t in good:
        counts[idx_to_class[t]] += 1
    present = {c for c in class_to_idx if (directory / c).is_dir()}
    empty = [c for c in present if counts[c] == 0]
    if empty:
        raise MobileNetsError(f"{directory}: class folder(s) with no readable images: {', '.join(sorted(empty))}")
    return good


def _classes(directory: Path) -> list[str]:
    if not directory.is_dir():
        raise MobileNetsError(f"{directory}: no such directory")
    classes = sorted(e.name for e in directory.iterdir() if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise MobileNetsError(f"{directory}: no class folders (expected {directory}/<class>/<image files>)")
    return classes


@dataclass
class DataSplits:
    """Train and val samples over one class list (val's class indices are the train set's)."""

    classes: list[str]
    train: list[tuple[str, int]]
    val: list[tuple[str, int]]


def load_image_folders(root: Path | str, *, val_split: float = 0.0, split_seed: int = 0,
                       strict: bool = False) -> DataSplits:
    """``root/train/<class>/*`` and ``root/val/<class>/*``; or, with ``val_split`` in (0, 1), the class
    folders of ``root`` itself split stratified (``split_seed`` fixes which images are val)."""
    root = Path(root)
    if not root.is_dir():
        raise MobileNetsError(f"{root}: no such directory")
    if (root / "train").is_dir():
        if val_split:
            raise MobileNetsError(f"{root}: has train/ (and expects val/): --val-split is for a single class folder")
        classes = _classes(root / "train")
        class_to_idx = {c: i for i, c in enumerate(classes)}
        if not (root / "val").is_dir():
            raise MobileNetsError(f"{root}: has train/ but no val/ folder")
        val_classes = _classes(root / "val")
        extra = sorted(set(val_classes) - set(classes))
        if extra:
            raise MobileNetsError(f"{root / 'val'}: classes the train set lacks: {', '.join(extra)}")
        train = _scan(root / "train", class_to_idx, strict=strict)
        val = _scan(root / "val", {c: class_to_idx[c] for c in val_classes}, strict=strict)
        return DataSplits(classes, train, val)
    if not 0.0 < val_split < 1.0:
        raise MobileNetsError(f"{root}: no train/ and val/ folders; pass --val-split (e.g. 0.2) to split its "
                              "class folders")
    classes = _classes(root)
    samples = _scan(root, {c: i for i, c in enumerate(classes)}, strict=strict)
    gen = torch.Generator().manual_seed(split_seed)
    train, val = [], []
    for c in range(len(classes)):  # stratified: val_split of each class, at least one image left to train on
        items = [s for s in samples if s[1] == c]
        perm = torch.randperm(len(items), generator=gen).tolist()
        n_val = min(round(len(items) * val_split), len(items) - 1)
        val += [items[j] for j in perm[:n_val]]
        train += [items[j] for j in perm[n_val:]]
    if not val:
        raise MobileNetsError(f"{root}: --val-split {val_split:g} leaves no validation images")
    return DataSplits(classes, sorted(train), sorted(val))


def load_eval_folder(root: Path | str, class_names: list[str], *, strict: bool = False) -> list[tuple[str, int]]:
    """Evaluation samples from ``root/val/<class>/*`` (if there is a val/) or ``root/<class>/*``, labelled with
    the indices of ``class_names`` (the model's classes)."""
    root = Path(root)
    directory = root / "val" if (root / "val").is_dir() else root
    classes = _classes(directory)
    unknown = sorted(set(classes) - set(class_names))
    if unknown:
        raise MobileNetsError(f"{directory}: classes the model was not trained on: {', '.join(unknown)}")
    return _scan(directory, {c: class_names.index(c) for c in classes}, strict=strict)


def train_transform(resolution: int, *, mean, std, crop_scale: tuple[float, float], hflip: float, augment: str):
    """torchvision transforms v2: RandomResizedCrop, horizontal flip, RandAugment/TrivialAugment, normalise."""
    from torchvision.transforms import v2

    ops = [v2.ToImage(), v2.RandomResizedCrop(resolution, scale=crop_scale, antialias=True)]
    if hflip > 0:
        ops.append(v2.RandomHorizontalFlip(hflip))
    if augment == "trivialaugment":
        ops.append(v2.TrivialAugmentWide())
    elif augment == "randaugment":
        ops.append(v2.RandAugment())
    elif augment != "none":
        raise MobileNetsError(f"augment must be none, randaugment or trivialaugment, got {augment!r}")
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(ops)
