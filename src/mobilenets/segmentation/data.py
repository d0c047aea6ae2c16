"""Semantic segmentation data: Pascal VOC segmentation, a generic folder of image/mask pairs, the built-in
shapes set, and joint image+mask transforms (torchvision transforms v2 with ``tv_tensors.Mask``).

Conventions (every segmentation dataset here):

- ``classes`` lists every class, ``"background"`` (id 0) first; masks hold class ids 0..K-1 and
  :data:`IGNORE_INDEX` (255) for pixels that count for nothing (VOC's object borders, padding);
- ``dataset[i]`` is ``(image, mask)``: ``image`` float32 (3, H, W) (normalised by the transform; in [0, 1]
  without one), ``mask`` int64 (H, W).

Bad input never ends in a traceback: an image without a mask, a missing or unreadable image or mask, or a mask
whose size differs from its image is skipped and counted in ``dataset.skipped`` (reason -> count, one warning
per reason on the ``"mobilenets"`` logger), or with ``strict=True`` a one-line
:class:`~mobilenets.errors.MobileNetsError` naming the file. A mask with values outside the class range (other
than 255), or a colour (RGB) mask that cannot be read as class ids, is always such an error.

Every mask is decoded once when the dataset is built (to check its values and size against its image):
about 1-2 ms per 500x375 PNG, so a few seconds for VOC's 2,913 masks.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ..detection.data import (BAD_IMAGE, VOC_CLASSES, SkipCounter, bad_image_reason, image_size, one_line,
                              stays_inside)
from ..errors import MobileNetsError

__all__ = [
    "VOC_SEG_CLASSES", "IGNORE_INDEX", "SegmentationDataset", "VocSegmentation", "MaskFolder",
    "load_segmentation_dataset", "segmentation_train_transform", "segmentation_eval_transform", "voc_palette",
]

log = logging.getLogger("mobilenets")

VOC_SEG_CLASSES = ("background", *VOC_CLASSES)
IGNORE_INDEX = 255
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def voc_palette() -> np.ndarray:
    """The Pascal VOC colour map (256, 3) uint8: colour of class id ``i`` is row ``i`` (255 = border, cream).
    Built like the VOC devkit's ``labelcolormap.m``: the bits of ``i`` spread over the high bits of R, G, B."""
    pal = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = r, g, b
    return pal


def _rgb_to_voc_ids(rgb: np.ndarray, path: Path) -> np.ndarray:
    """An RGB rendering of a VOC mask back to class ids (exact palette colours of ids 0..20 and 255 only)."""
    pal = voc_palette().astype(np.int32)
    ids = list(range(len(VOC_SEG_CLASSES))) + [IGNORE_INDEX]
    code_of = {int((pal[i, 0] << 16) | (pal[i, 1] << 8) | pal[i, 2]): i for i in ids}
    packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    colours, inverse = np.unique(packed, return_inverse=True)
    unknown = [c for c in colours.tolist() if c not in code_of]
    if unknown:
        c = unknown[0]
        raise MobileNetsError(f"{path}: RGB mask with colours that are not VOC palette colours, e.g. "
                              f"{(c >> 16, (c >> 8) & 255, c & 255)} ({len(unknown)} such); expected a palette "
                              "(P) or single-channel PNG of class ids")
    return np.asarray([code_of[c] for c in colours.tolist()], np.uint8)[inverse.reshape(packed.shape)]


def decode_mask(path: Path, *, voc_colours: bool = False) -> np.ndarray:
    """A mask file as an integer (H, W) array of class ids: palette (P) PNGs give their palette indices,
    single-channel ones their values. An RGB mask is read only when its colours are exactly VOC palette
    colours (``voc_colours``) or it is grey (R = G = B); otherwise a one-line MobileNetsError. Raises one of
    PIL's errors (:data:`BAD_IMAGE`) for a file that does not decode."""
    with Image.open(path) as m:
        mode = m.mode
        if mode in ("P", "L", "I", "I;16", "I;16L", "I;16B"):
            return np.array(m)
        if mode == "1":
            return np.array(m).astype(np.uint8)
        if mode in ("RGB", "RGBA"):
            rgb = np.array(m.convert("RGB"))
        else:
            raise MobileNetsError(f"{path}: mask image mode {mode} is not supported (expected a palette (P) or "
                                  "single-channel PNG of class ids)")
    if voc_colours:
        return _rgb_to_voc_ids(rgb, path)
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return rgb[..., 0].copy()
    raise MobileNetsError(f"{path}: RGB mask; expected a single-channel or palette (P) PNG whose values are class "
                          f"ids (0 background, 255 ignore)")


def _values(mask: np.ndarray) -> np.ndarray:
    """The distinct values of a mask (bincount for uint8: ~10x faster than np.unique)."""
    if mask.dtype == np.uint8:
        return np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
    return np.unique(mask)


def _check_values(values: np.ndarray, num_classes: int, path: Path) -> None:
    bad = [int(v) for v in values if (v < 0 or v >= num_classes) and v != IGNORE_INDEX]
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        raise MobileNetsError(f"{path}: mask values outside the class range 0..{num_classes - 1} "
                              f"(255 = ignore): {shown}")


class SegmentationDataset(SkipCounter, Dataset):
    """Base of the segmentation datasets: subclasses give ``__len__`` and ``_load(i)`` (``(uint8 (H, W, 3)
    image, uint8 (H, W) class-id mask)``, or None for a sample that failed to decode)."""

    def __init__(self, *, classes: list[str], transform=None, strict: bool = False) -> None:
        self.classes = list(classes)
        self.transform = transform
        self._init_skips(strict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray] | None:
        raise NotImplementedError

    def __getitem__(self, i: int):
        n = len(self)
        if not -n <= i < n:
            raise IndexError(i)
        for k in range(n):  # a sample that fails to decode is replaced by the next one
            loaded = self._load((i + k) % n)
            if loaded is not None:
                return self._apply(*loaded)
        raise MobileNetsError("no readable sample left in the dataset")

    def _apply(self, image: np.ndarray, mask: np.ndarray):
        img = tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1))
        m = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(mask, dtype=np.uint8)))
        if self.transform is None:
            img, m = F.to_dtype(img, torch.float32, scale=True), m.to(torch.int64)
        else:
            img, m = self.transform(img, m)
        return img.as_subclass(torch.Tensor), m.as_subclass(torch.Tensor).to(torch.int64)


class _PairDataset(SegmentationDataset):
    """Image/mask file pairs, checked when built (see the module docstring)."""

    voc_colours = False  # whether an RGB mask may be VOC palette colours

    def _scan(self, candidates, num_classes: int | None) -> int:
        """Keep the good ``(name, image path, mask path)`` candidates in ``self.pairs``; check mask values
        against ``num_classes`` (if given); return the largest class id seen (255 aside)."""
        self.pairs: list[tuple[Path, Path]] = []
        top = 0
        for name, img_path, mask_path in candidates:
            if not img_path.is_file():
                self._skip("missing image", f"{img_path}: image file not found ({name})")
                continue
            if not mask_path.is_file():
                self._skip("image without mask", f"{img_path}: no mask {mask_path}")
                continue
            try:
                size = image_size(img_path)
            except BAD_IMAGE as e:
                self._skip(bad_image_reason(e), f"{img_path}: {bad_image_reason(e)} ({one_line(e)})")
                continue
            try:
                mask = decode_mask(mask_path, voc_colours=self.voc_colours)
            except BAD_IMAGE as e:
                self._skip("unreadable mask", f"{mask_path}: unreadable mask ({one_line(e)})")
                continue
            if mask.shape != size:
                self._skip("mask size differs from image", f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]}, "
                                                           f"its image {img_path.name} is {size[1]}x{size[0]}")
                continue
            values = _values(mask)
            if num_classes is not None:
                _check_values(values, num_classes, mask_path)
            else:  # ids must fit uint8 with 255 for ignore
                _check_values(values, IGNORE_INDEX, mask_path)
            fg = values[values != IGNORE_INDEX]
            top = max(top, int(fg.max()) if len(fg) else 0)
            self.pairs.append((img_path, mask_path))
        return top

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, i: int):
        img_path, mask_path = self.pairs[i]
        image = self._read_or_skip(img_path)
        if image is None:
            return None
        try:
            mask = decode_mask(mask_path, voc_colours=self.voc_colours)
        except BAD_IMAGE as e:
            self._skip("unreadable mask", f"{mask_path}: unreadable mask ({one_line(e)})")
            log.warning("%s: unreadable mask (%s); using the next sample instead", mask_path, one_line(e))
            return None
        if mask.shape != image.shape[:2]:
            self._skip("mask size differs from image", f"{mask_path}: mask size differs from its image")
            return None
        return image, mask.astype(np.uint8)

    def _finish(self, source) -> None:
        self._report_skips(source)
        if not self.pairs:
            counts = ", ".join(f"{n} {r}" for r, n in self.skipped.items()) or "none listed"
            raise MobileNetsError(f"{source}: no usable image/mask pairs (skipped: {counts})")


class VocSegmentation(_PairDataset):
    """Pascal VOC segmentation: ``root/ImageSets/Segmentation/{split}.txt`` lists ids; images
    ``root/JPEGImages/{id}.jpg``, masks ``root/SegmentationClass/{id}.png`` (palette PNGs: palette index =
    class id of :data:`VOC_SEG_CLASSES`, 255 = border/ignore). An RGB mask drawn in exactly the VOC palette's
    colours is mapped back to ids."""

    voc_colours = True

    def __init__(self, root, split: str = "train", *, transform=None, strict: bool = False) -> None:
        root = Path(root).expanduser()
        for sub in ("JPEGImages", "SegmentationClass"):
            if not (root / sub).is_dir():
                raise MobileNetsError(f"{root}: no {sub}/ folder (expected a Pascal VOC root, e.g. "
                                      "VOCdevkit/VOC2012)")
        list_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not list_file.is_file():
            folder = root / "ImageSets" / "Segmentation"
            have = sorted(p.stem for p in folder.glob("*.txt")) if folder.is_dir() else []
            raise MobileNetsError(f"{list_file}: no such split list (splits here: {', '.join(have) or 'none'})")
        super().__init__(classes=list(VOC_SEG_CLASSES), transform=transform, strict=strict)
        self.root, self.split = root, split
        try:
            ids = [line.split()[0] for line in list_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise MobileNetsError(f"{list_file}: cannot read ({one_line(e)})") from None
        if not ids:
            raise MobileNetsError(f"{list_file}: no image ids")
        kept = []
        for i in ids:
            if stays_inside(i, folders=False):
                kept.append(i)
            else:
                self._skip("id outside the dataset", f"{list_file}: id {i[:80]!a} is not a plain file name")
        ids = kept
        self._scan([(i, root / "JPEGImages" / f"{i}.jpg", root / "SegmentationClass" / f"{i}.png") for i in ids],
                   len(VOC_SEG_CLASSES))
        self._finish(list_file)


def _image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder`` (no recursion, so no symlinked directory is ever followed)."""
    with os.scandir(folder) as it:
        return sorted(Path(e.path) for e in it if not e.name.startswith(".") and e.is_file()
                      and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS)


def _largest_id(masks_dir: Path) -> int:
    """The largest class id (255 aside) over the PNG masks of another split (unreadable ones left to that split)."""
    top = 0
    for p in _image_files(masks_dir):
        try:
            v = _values(decode_mask(p))
        except (MobileNetsError, *BAD_IMAGE):
            continue
        v = v[v != IGNORE_INDEX]
        top = max(top, int(v.max()) if len(v) else 0)
    return top


class MaskFolder(_PairDataset):
    """Generic image/mask pairs: ``root/{split}/images/X.jpg`` (or .png, ...) with ``root/{split}/masks/X.png``
    (``root/images`` and ``root/masks`` when ``split`` is None). Masks are single-channel or palette PNGs of class
    ids (0 background, 255 ignore). Class names: ``classes``, else ``root/classes.txt`` (one per line, background
    first), else ``["background", "class 1", ...]`` with K = the largest id + 1 over the masks of every split
    folder of ``root`` (so train and val agree; those masks are all decoded once, ~1-2 ms each)."""

    def __init__(self, root, split: str | None = None, *, classes=None, transform=None, strict: bool = False) -> None:
        root = Path(root).expanduser()
        folder = root / split if split else root
        images_dir, masks_dir = folder / "images", folder / "masks"
        for d in (images_dir, masks_dir):
            if not d.is_dir():
                raise MobileNetsError(f"{d}: no such directory (expected {folder}/images/ and {folder}/masks/)")
        if classes is None and (root / "classes.txt").is_file():
            try:
                text = (root / "classes.txt").read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise MobileNetsError(f"{root / 'classes.txt'}: cannot read ({one_line(e)})") from None
            classes = [line.strip() for line in text.splitlines() if line.strip()]
            if len(classes) < 2:
                raise MobileNetsError(f"{root / 'classes.txt'}: needs at least 2 class names (background first)")
        if classes is not None:
            classes = list(classes)
        super().__init__(classes=classes or [], transform=transform, strict=strict)
        self.root, self.split = root, split

        files = _image_files(images_dir)
        stems: dict[str, Path] = {}
        for p in files:
            if p.stem in stems:
                raise MobileNetsError(f"{images_dir}: two images for one mask name: {stems[p.stem].name}, {p.name}")
            stems[p.stem] = p
        if not stems:
            raise MobileNetsError(f"{images_dir}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
        top = self._scan([(s, p, masks_dir / f"{s}.png") for s, p in stems.items()],
                         len(classes) if classes is not None else None)
        self._finish(folder)
        if classes is None:
            if split:  # the other splits' masks too, so every split gets the same class count
                for other in sorted(root.iterdir()):
                    if other != folder and not other.is_symlink() and (other / "masks").is_dir() \
                            and not (other / "masks").is_symlink():
                        top = max(top, _largest_id(other / "masks"))
            if top < 1:
                raise MobileNetsError(f"{masks_dir}: the masks hold only class 0 (background) and 255 (ignore): "
                                      "foreground classes need ids 1..K-1 (a 0/255 binary mask marks nothing)")
            self.classes = ["background", *(f"class {i}" for i in range(1, top + 1))]


# ---------------------------------------------------------------------------------------------------------
# transforms

def _fills(mean, ignore_index: int) -> dict:
    # padding: the mean colour for the image (normalises to ~0), ignore for the mask
    return {tv_tensors.Image: [round(255 * m) for m in mean], tv_tensors.Mask: ignore_index}


def _to_float():
    return v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64, "others": None}, scale=True)


def segmentation_train_transform(size: int, *, mean, std, scale=(0.5, 2.0), ignore_index: int = IGNORE_INDEX,
                                 geometric: bool = True):
    """Joint image+mask augmentation (torchvision's segmentation reference recipe, transforms v2): the shorter side
    resized to a random ``scale`` x ``size`` (masks nearest), a random ``size`` x ``size`` crop (padded with the
    mean colour and ``ignore_index``), horizontal flip, colour jitter, float conversion, normalisation.
    ``geometric=False``: resize to ``size`` x ``size`` instead of the random scale and crop (the built-in shapes
    set, whose generator already varies scale and placement)."""
    lo, hi = round(size * scale[0]), round(size * scale[1])
    scale_crop = [v2.RandomResize(lo, max(hi, lo) + 1, antialias=True),  # max_size is exclusive
                  v2.RandomCrop(size, pad_if_needed=True, fill=_fills(mean, ignore_index))] if geometric else [
        v2.Resize((size, size), antialias=True)]
    return v2.Compose([
        v2.ToImage(),
        *scale_crop,
        v2.RandomHorizontalFlip(),
        v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3),
        _to_float(),
        v2.Normalize(list(mean), list(std)),
    ])


def segmentation_eval_transform(size: int, *, mean, std):
    """Resize image and mask (nearest) to ``size`` x ``size`` and normalise."""
    return v2.Compose([v2.ToImage(), v2.Resize((size, size), antialias=True), _to_float(),
                       v2.Normalize(list(mean), list(std))])


# ---------------------------------------------------------------------------------------------------------
# the one entry point

def load_segmentation_dataset(path_or_none, split: str, *, image_size: int, mean, std, strict: bool = False,
                              train: bool = True, augment: str = "full",
                              num_samples: int | None = None) -> SegmentationDataset:
    """The segmentation dataset for ``split`` with the train (``train=True``) or eval transform attached.

    Accepted ``path_or_none``:

    - None: the built-in shapes set (``num_samples`` of them; default 2000 train / 200 val)
      (:class:`mobilenets.shapes.ShapesSegmentation`, generated at ``image_size``);
    - a Pascal VOC root (has ``SegmentationClass/``): ``JPEGImages/``, ``SegmentationClass/``,
      ``ImageSets/Segmentation/{split}.txt``;
    - a mask folder: ``DIR/{split}/images/`` and ``DIR/{split}/masks/`` (optional ``DIR/classes.txt``).
    """
    if train:  # augment "full": random scale + crop + flip + colour; "light": flip + colour
        transform = segmentation_train_transform(image_size, mean=mean, std=std, geometric=augment == "full")
    else:
        transform = segmentation_eval_transform(image_size, mean=mean, std=std)
    if path_or_none is None:
        from ..shapes import ShapesSegmentation

        return ShapesSegmentation(split, image_size=image_size, transform=transform, num_samples=num_samples)
    root = Path(path_or_none).expanduser()
    if not root.is_dir():
        raise MobileNetsError(f"{root}: no such directory")
    if (root / "SegmentationClass").is_dir():
        return VocSegmentation(root, split, transform=transform, strict=strict)
    if (root / split / "images").is_dir() and (root / split / "masks").is_dir():
        return MaskFolder(root, split, transform=transform, strict=strict)
    raise MobileNetsError(
        f"{root}: not a segmentation dataset for split {split!r}: expected Pascal VOC (JPEGImages/, "
        f"SegmentationClass/, ImageSets/Segmentation/{split}.txt) or a mask folder ({split}/images/ and "
        f"{split}/masks/, optional classes.txt)")
