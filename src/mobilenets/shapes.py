"""The built-in default detection and segmentation set: solid-colour shapes over crops of real photographs.

Nothing is downloaded: the backgrounds are photographs that ship inside the scikit-image wheel
(:data:`PHOTOS`, read straight from the installed ``skimage/data`` folder, never through its pooch fetcher),
and the shapes are drawn with :mod:`skimage.draw`, so every box and mask is exact:

- a sample is a random square crop of a random photo (random position, 25%..100% of the photo's shorter
  side, mirrored half the time), resized to ``image_size`` (default 160);
- 1..``max_shapes`` shapes (:data:`SHAPES_CLASSES`: rectangle, circle, triangle, ellipse = labels 1..4) are
  composited over it in random solid colours, each at least ``MIN_CONTRAST`` away (RGB distance) from the
  mean colour under it and from the colour of each shape it overlaps, 12%..60% of the image side across;
- shapes may overlap, but a shape is redrawn elsewhere when it would hide more than 70% of an earlier one,
  so every shape stays visible; a box is the tight box of the shape's *visible* pixels.

Sample ``i`` of a split is a pure function of ``(seed, split, i)`` (``np.random.default_rng([seed, split_id,
i])``), so DataLoader workers and resumed runs see identical data, and train and val never share a sample.

Speed (measured on this project's 2-core CPU machine, one idle core, 160x160, ``max_shapes=4``): 1.7 ms per
sample for :func:`generate`, well under the 5 ms budget; the photos are decoded once per process (~0.07 s) and
cached at module level (DataLoader workers forked after the first sample inherit them).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .detection.data import DetectionDataset, DetectionRecord
from .errors import MobileNetsError
from .segmentation.data import SegmentationDataset

__all__ = ["SHAPES_CLASSES", "PHOTOS", "ShapesSample", "generate", "ShapesDetection", "ShapesSegmentation",
           "DEFAULT_NUM_SAMPLES"]

SHAPES_CLASSES = ("rectangle", "circle", "triangle", "ellipse")

# The skimage.data photographs used as backgrounds: all are files inside the scikit-image wheel (checked on
# scikit-image 0.26: other skimage.data images, e.g. cat/eagle/lily, are fetched through pooch and are not
# used). Licences as scikit-image's docstrings state them.
PHOTOS = {
    "astronaut.png": "NASA, public domain (no known copyright restrictions)",
    "camera.png": "CC0, Lav Varshney",
    "chelsea.png": "CC0, Stefan van der Walt",
    "coffee.png": "CC0, Rachel Michetti",
    "rocket.jpg": "SpaceX, released into the public domain",
    "hubble_deep_field.jpg": "NASA/HubbleSite, public domain",
    "clock_motion.png": "public domain, Stefan van der Walt",
    "brick.png": "CC0 (CC0Textures)",
    "grass.png": "CC0 (DeviantArt, linolafett)",
    "gravel.png": "CC0 (CC0Textures)",
}

SPLITS = {"train": 0, "val": 1}  # the split id is part of the random stream's seed
DEFAULT_NUM_SAMPLES = {"train": 2000, "val": 200}
SIZE_RANGE = (0.12, 0.60)  # a shape's extent, as a fraction of the image side
CROP_RANGE = (0.25, 1.0)  # the photo crop's side, as a fraction of the photo's shorter side
MIN_CONTRAST = 100.0  # RGB distance (0..441) from the mean colour under a shape and from shapes it overlaps
MIN_VISIBLE = 0.3  # a later shape may hide at most 70% of an earlier one
MAX_PHOTO_SIDE = 512  # photos are downscaled once so the shorter side is at most this (keeps crops cheap)
_TRIES = 10  # placements tried per shape before it is left out


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[Image.Image, ...]:
    """The :data:`PHOTOS` as RGB PIL images (grey ones converted), decoded once per process."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    out = []
    for name in PHOTOS:
        path = folder / name
        if not path.is_file():
            raise MobileNetsError(f"{path}: missing from the installed scikit-image (the shapes set needs its "
                                  "bundled photos; reinstall scikit-image)")
        with Image.open(path) as im:
            im = im.convert("RGB")
        scale = MAX_PHOTO_SIDE / min(im.size)
        if scale < 1:
            im = im.resize((round(im.width * scale), round(im.height * scale)), Image.BILINEAR)
        im.load()
        out.append(im)
    return tuple(out)


@dataclass
class ShapesSample:
    """One generated sample: ``image`` uint8 (H, W, 3); ``instances`` uint8 (H, W), 0 for the photo and k for
    the k-th shape's visible pixels; ``labels`` int64 (n,) in 1..4; ``boxes`` float32 (n, 4) XYXY, the tight
    box of each shape's visible pixels in pixel-edge coordinates (a pixel (r, c) covers [c, c+1) x [r, r+1))."""

    image: np.ndarray
    instances: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray

    def masks(self) -> np.ndarray:
        """bool (n, H, W): each shape's visible pixels."""
        return self.instances[None] == np.arange(1, len(self.labels) + 1, dtype=np.uint8)[:, None, None]

    def semantic(self) -> np.ndarray:
        """uint8 (H, W) class mask: 0 background, 1..4 the shape classes (later shapes on top)."""
        lut = np.zeros(256, np.uint8)
        lut[1:len(self.labels) + 1] = self.labels
        return lut[self.instances]


def _shape_pixels(cls: int, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of one shape of class index ``cls`` (0..3) at a random size, place and angle."""
    from skimage import draw

    extent = rng.uniform(*SIZE_RANGE) * size
    half = extent / 2
    # the centre keeps the shape's nominal extent inside the image
    cy, cx = rng.uniform(half, size - half, 2)
    if cls == 0:  # rectangle, axis-aligned, aspect 1:1 .. 2:1 either way
        h, w = half, half * rng.uniform(0.5, 1.0)
        if rng.random() < 0.5:
            h, w = w, h
        rr, cc = draw.rectangle((round(cy - h), round(cx - w)), (round(cy + h) - 1, round(cx + w) - 1),
                                shape=(size, size))
        return rr.ravel(), cc.ravel()
    if cls == 1:  # circle
        return draw.disk((cy, cx), half, shape=(size, size))
    if cls == 2:  # triangle: vertices on the circumcircle, 120 degrees apart +- 15
        angles = rng.uniform(0, 2 * np.pi) + np.radians([0, 120, 240] + rng.uniform(-15, 15, 3))
        return draw.polygon(cy + half * np.sin(angles), cx + half * np.cos(angles), shape=(size, size))
    # ellipse: minor axis 40%..70% of the major one (clearly not a circle), any orientation
    return draw.ellipse(cy, cx, half, half * rng.uniform(0.4, 0.7), shape=(size, size),
                        rotation=rng.uniform(0, np.pi))


def _colour(rng: np.random.Generator, avoid: np.ndarray) -> np.ndarray:
    """A random solid colour at least MIN_CONTRAST from every colour of ``avoid`` (m, 3) (else the one of the
    tries farthest from its nearest)."""
    candidates = rng.integers(0, 256, (8, 3))
    dist = np.linalg.norm(candidates[:, None, :] - avoid[None], axis=2).min(axis=1)
    ok = np.flatnonzero(dist >= MIN_CONTRAST)
    return candidates[ok[0] if len(ok) else int(dist.argmax())].astype(np.uint8)


def generate(seed: int, split: str, index: int, *, image_size: int = 160, max_shapes: int = 4) -> ShapesSample:
    """Sample ``index`` of ``split`` ("train" or "val"): a pure function of its arguments."""
    rng = np.random.default_rng([seed, SPLITS[split], index])
    photos = _photos()
    photo = photos[rng.integers(len(photos))]
    side = min(photo.size) * rng.uniform(*CROP_RANGE)
    x0, y0 = rng.uniform(0, photo.width - side), rng.uniform(0, photo.height - side)
    crop = photo.resize((image_size, image_size), Image.BILINEAR, box=(x0, y0, x0 + side, y0 + side))
    image = np.array(crop)  # a writable copy
    if rng.random() < 0.5:
        image = np.ascontiguousarray(image[:, ::-1])

    instances = np.zeros((image_size, image_size), np.uint8)
    areas: list[int] = []  # each placed shape's full (drawn) area
    colours = np.zeros((max_shapes, 3), np.float64)
    labels: list[int] = []
    for _ in range(rng.integers(1, max_shapes + 1)):
        cls = int(rng.integers(len(SHAPES_CLASSES)))  # drawn once per shape, so a retry does not bias classes
        for _try in range(_TRIES):
            rr, cc = _shape_pixels(cls, rng, image_size)
            if len(rr) == 0:
                continue
            k = len(labels) + 1
            # how much of each earlier shape stays visible under this one
            visible = np.bincount(instances.ravel(), minlength=k)[1:k]
            hidden = np.bincount(instances[rr, cc], minlength=k)[1:k]
            if np.all(visible - hidden >= MIN_VISIBLE * np.asarray(areas, dtype=np.int64)):
                break
        else:
            continue  # no placement kept the others visible: leave this shape out
        # unlike the mean colour under it, and unlike each shape it overlaps (so touching shapes stay apart)
        avoid = np.concatenate([image[rr, cc].mean(axis=0, keepdims=True), colours[:k - 1][hidden > 0]])
        colours[k - 1] = _colour(rng, avoid)
        image[rr, cc] = colours[k - 1]
        instances[rr, cc] = k
        areas.append(len(rr))
        labels.append(cls + 1)

    boxes = np.zeros((len(labels), 4), np.float32)
    for k in range(len(labels)):
        m = instances == k + 1
        rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        boxes[k] = cols[0], rows[0], cols[-1] + 1, rows[-1] + 1
    return ShapesSample(image, instances, np.asarray(labels, np.int64), boxes)


def _check(split: str, num_samples: int | None) -> int:
    if split not in SPLITS:
        raise MobileNetsError(f"the shapes set has splits 'train' and 'val', not {split!r}")
    n = DEFAULT_NUM_SAMPLES[split] if num_samples is None else int(num_samples)
    if n < 1:
        raise MobileNetsError(f"num_samples must be at least 1, got {num_samples}")
    return n


class _Generated:
    """What the detection and segmentation views of the set share: split, size, seed, and the generator call."""

    def _setup(self, split: str, image_size: int, num_samples: int | None, seed: int, max_shapes: int) -> None:
        self.split, self.image_size, self.seed, self.max_shapes = split, image_size, seed, max_shapes
        self.num_samples = _check(split, num_samples)

    def __len__(self) -> int:
        return self.num_samples

    def sample(self, i: int) -> ShapesSample:
        """The generated sample ``i`` (no transform)."""
        if not 0 <= i < self.num_samples:
            raise IndexError(i)
        return generate(self.seed, self.split, i, image_size=self.image_size, max_shapes=self.max_shapes)


class ShapesDetection(_Generated, DetectionDataset):
    """The shapes set for detection: items are ``(image, target)`` as every detection dataset's (see
    :class:`mobilenets.detection.data.DetectionDataset`); ``transform=None`` gives a float image in [0, 1].
    ``num_samples`` defaults to 2000 for train and 200 for val; ``image_size`` is the generated size."""

    def __init__(self, split: str = "train", *, image_size: int = 160, num_samples: int | None = None,
                 seed: int = 0, transform=None, max_shapes: int = 4) -> None:
        super().__init__(classes=list(SHAPES_CLASSES), transform=transform)
        self._setup(split, image_size, num_samples, seed, max_shapes)

    def raw(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(image uint8 (H, W, 3), boxes float32 (n, 4) XYXY, labels int64 (n,), masks bool (n, H, W))``."""
        s = self.sample(i)
        return s.image, s.boxes, s.labels, s.masks()

    def _record_of(self, i: int, s: ShapesSample) -> DetectionRecord:
        return DetectionRecord(image_id=i, size=(self.image_size, self.image_size), boxes=s.boxes, labels=s.labels)

    def _record(self, i: int) -> DetectionRecord:
        return self._record_of(i, self.sample(i))

    def _load(self, i: int):
        s = self.sample(i)
        return s.image, self._record_of(i, s)


class ShapesSegmentation(_Generated, SegmentationDataset):
    """The shapes set for semantic segmentation: items are ``(image, mask)``, the mask int64 (H, W) with 0 for
    background and 1..4 for :data:`SHAPES_CLASSES` (later-drawn shapes on top). ``classes`` is
    ``["background", *SHAPES_CLASSES]``. Same samples as :class:`ShapesDetection` for the same arguments."""

    def __init__(self, split: str = "train", *, image_size: int = 160, num_samples: int | None = None,
                 seed: int = 0, transform=None, max_shapes: int = 4) -> None:
        super().__init__(classes=["background", *SHAPES_CLASSES], transform=transform)
        self._setup(split, image_size, num_samples, seed, max_shapes)

    def raw(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(image uint8 (H, W, 3), class mask uint8 (H, W))``."""
        s = self.sample(i)
        return s.image, s.semantic()

    def _load(self, i: int):
        return self.raw(i)
