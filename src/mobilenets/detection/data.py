"""Detection data: COCO (instances JSON) and Pascal VOC (XML) datasets, the built-in shapes set, box-aware
transforms (torchvision transforms v2), the collate function and COCO-format ground truth for pycocotools.

Conventions (every detection dataset here):

- labels are 1..K for the K foreground ``classes`` (``classes[i]`` is label ``i + 1``); 0 is background, so a
  detector has K + 1 class slots (torchvision's convention);
- ``dataset[i]`` is ``(image, target)``: ``image`` float32 (3, H, W) (normalised by the transform; in [0, 1]
  without one), ``target`` a dict: ``"boxes"`` :class:`torchvision.tv_tensors.BoundingBoxes` XYXY float32
  (n, 4) in pixels of the transformed image (n may be 0: images without boxes are kept as negatives),
  ``"labels"`` int64 (n,), ``"image_id"`` int, ``"orig_size"`` (h, w) of the source image;
- boxes use pixel-edge coordinates: a box covering pixel columns a..b (inclusive) is x1 = a, x2 = b + 1.

Bad input never ends in a traceback: each problem is either skipped and counted in ``dataset.skipped``
(reason -> count, with one logged warning per reason on the ``"mobilenets"`` logger) or, with
``strict=True`` or for a file that cannot be read at all, a one-line :class:`~mobilenets.errors.MobileNetsError`
naming the file (and the entry). Images are checked (opened, header only) when the dataset is built; one that
fails to decode later (truncated deep inside) is replaced by the next sample and counted under
"unreadable image" (per DataLoader worker process).
"""

from __future__ import annotations

import json
import logging
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers import expat

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Subset
from torchvision import tv_tensors
from torchvision.ops import box_iou
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ..data import to_rgb
from ..errors import MobileNetsError, existing_file

__all__ = [
    "VOC_CLASSES", "DetectionDataset", "DetectionRecord", "CocoDetection", "VocDetection",
    "load_detection_dataset", "detection_collate", "to_coco", "detection_train_transform",
    "detection_eval_transform", "FastRandomIoUCrop",
]

log = logging.getLogger("mobilenets")

# Pascal VOC's 20 classes, in the devkit's order (labels 1..20).
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

# What PIL raises for a file that is not a (complete, sane) image.
BAD_IMAGE = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


# ---------------------------------------------------------------------------------------------------------
# shared helpers (the segmentation data module uses them too)

def one_line(e: BaseException) -> str:
    """An exception's message on one line (or its type's name)."""
    return " ".join(str(e).split()) or type(e).__name__


def bad_image_reason(e: BaseException) -> str:
    """The skip reason for a PIL failure: decompression bombs are named as such."""
    return "decompression bomb" if isinstance(e, Image.DecompressionBombError) else "unreadable image"


def image_size(path: Path) -> tuple[int, int]:
    """(h, w) from the image header (no decoding); raises one of :data:`BAD_IMAGE`."""
    with Image.open(path) as im:
        return im.height, im.width


def read_rgb(path: Path) -> np.ndarray:
    """The image as a writable uint8 (H, W, 3) array; raises one of :data:`BAD_IMAGE`."""
    with Image.open(path) as im:
        return np.array(to_rgb(im))


class SkipCounter:
    """Mixin: ``skipped`` (reason -> count), ``strict`` (every skip becomes an error) and the summary warning."""

    strict: bool = False

    def _init_skips(self, strict: bool) -> None:
        self.strict = strict
        self.skipped: dict[str, int] = {}
        self._skip_examples: dict[str, str] = {}

    def _skip(self, reason: str, message: str) -> None:
        """Count one skip under ``reason`` (``message`` names the file and entry), or raise it when strict."""
        if self.strict:
            raise MobileNetsError(message)
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self._skip_examples.setdefault(reason, message)

    def _report_skips(self, source) -> None:
        for reason, n in self.skipped.items():
            log.warning("%s: skipped %d x %s, e.g. %s", source, n, reason, self._skip_examples[reason])

    def _read_or_skip(self, path: Path) -> np.ndarray | None:
        """Decode ``path`` as RGB; on failure count (or, strict, raise) and return None."""
        try:
            return read_rgb(path)
        except BAD_IMAGE as e:
            reason = bad_image_reason(e)
            self._skip(reason, f"{path}: {reason} ({one_line(e)})")
            log.warning("%s: %s (%s); using the next sample instead", path, reason, one_line(e))
            return None


# ---------------------------------------------------------------------------------------------------------
# the dataset base class

def _no_boxes() -> np.ndarray:
    return np.zeros((0, 4), np.float32)


def _no_labels() -> np.ndarray:
    return np.zeros((0,), np.int64)


@dataclass
class DetectionRecord:
    """One image's annotation, in the source image's pixels: ``boxes`` float32 (n, 4) XYXY and ``labels`` int64
    (n,) to train on; ``ignore_boxes``/``ignore_labels`` (COCO iscrowd, VOC difficult) are not trained on and
    are ignore regions (iscrowd=1) in :meth:`DetectionDataset.coco_ground_truth`."""

    image_id: int
    size: tuple[int, int]  # (h, w)
    boxes: np.ndarray = field(default_factory=_no_boxes)
    labels: np.ndarray = field(default_factory=_no_labels)
    ignore_boxes: np.ndarray = field(default_factory=_no_boxes)
    ignore_labels: np.ndarray = field(default_factory=_no_labels)
    path: Path | None = None


class DetectionDataset(SkipCounter, Dataset):
    """Base of the detection datasets: subclasses give ``__len__``, ``_record(i)`` (annotation only) and
    ``_load(i)`` (``(uint8 (H, W, 3) image, record)``, or None for an image that failed to decode)."""

    def __init__(self, *, classes: list[str], transform=None, strict: bool = False) -> None:
        self.classes = list(classes)
        self.transform = transform
        self._init_skips(strict)

    def _record(self, i: int) -> DetectionRecord:
        raise NotImplementedError

    def _load(self, i: int) -> tuple[np.ndarray, DetectionRecord] | None:
        raise NotImplementedError

    def __getitem__(self, i: int):
        n = len(self)
        if not -n <= i < n:
            raise IndexError(i)
        for k in range(n):  # an image that fails to decode is replaced by the next one
            loaded = self._load((i + k) % n)
            if loaded is not None:
                return self._apply(*loaded)
        raise MobileNetsError("no readable image left in the dataset")

    def _apply(self, image: np.ndarray, rec: DetectionRecord):
        img = tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1))
        target = {
            "boxes": tv_tensors.BoundingBoxes(torch.as_tensor(rec.boxes, dtype=torch.float32).reshape(-1, 4),
                                              format="XYXY", canvas_size=rec.size),
            "labels": torch.as_tensor(rec.labels, dtype=torch.int64),
            "image_id": rec.image_id,
            "orig_size": tuple(rec.size),
        }
        if self.transform is None:
            img = F.to_dtype(img, torch.float32, scale=True)
        else:
            img, target = self.transform(img, target)
        return img.as_subclass(torch.Tensor), target

    def _eval_geometry(self, size: tuple[int, int], boxes: np.ndarray):
        """What the transform makes of an image of ``size`` with ``boxes``, without decoding the image:
        ``((h, w) after, boxes after, indices of the boxes kept)``. Meant for a deterministic (eval) transform."""
        keep = np.arange(len(boxes))
        if self.transform is None:
            return tuple(size), boxes, keep
        bb = tv_tensors.BoundingBoxes(torch.from_numpy(boxes), format="XYXY", canvas_size=tuple(size))
        try:  # boxes alone carry the canvas size: v2 transforms them without an image (~0.2 ms)
            out = self.transform({"boxes": bb})["boxes"]
            if isinstance(out, tv_tensors.BoundingBoxes) and len(out) == len(boxes):
                return tuple(out.canvas_size), out.as_subclass(torch.Tensor).numpy(), keep
        except Exception:  # noqa: BLE001 - a transform that needs an image: give it a blank one below
            pass
        blank = tv_tensors.Image(torch.zeros((3, *size), dtype=torch.uint8))
        img, t = self.transform(blank, {"boxes": bb, "labels": torch.arange(len(boxes))})
        return tuple(img.shape[-2:]), t["boxes"].as_subclass(torch.Tensor).numpy(), t["labels"].numpy()

    def coco_ground_truth(self, indices=None) -> dict:
        """The annotations as a COCO-format dict (``images``, ``annotations``, ``categories`` with ids = labels),
        boxes in the coordinates of the *transformed* images (what the model is evaluated on), ignore boxes
        (COCO iscrowd, VOC difficult) as ``iscrowd: 1``. Load it with ``c = pycocotools.coco.COCO();
        c.dataset = d; c.createIndex()``. ``indices`` restricts it to some items (a Subset's)."""
        images, annotations = [], []
        for i in range(len(self)) if indices is None else indices:
            rec = self._record(int(i))
            boxes = np.concatenate([rec.boxes.reshape(-1, 4), rec.ignore_boxes.reshape(-1, 4)]).astype(np.float32)
            labels = np.concatenate([rec.labels, rec.ignore_labels])
            crowd = np.arange(len(boxes)) >= len(rec.boxes)
            (h, w), out, keep = self._eval_geometry(rec.size, boxes)
            images.append({"id": int(rec.image_id), "height": int(h), "width": int(w),
                           "file_name": rec.path.name if rec.path is not None else f"{rec.image_id}"})
            for (x1, y1, x2, y2), k in zip(np.asarray(out, dtype=np.float64).tolist(), keep.tolist()):
                bw, bh = x2 - x1, y2 - y1
                if bw <= 0 or bh <= 0:
                    continue
                annotations.append({"id": len(annotations) + 1,  # COCOeval treats id 0 as "unmatched"
                                    "image_id": int(rec.image_id), "category_id": int(labels[k]),
                                    "bbox": [x1, y1, bw, bh], "area": bw * bh, "iscrowd": int(crowd[k])})
        return _coco_dict(self.classes, images, annotations)


def _coco_dict(classes, images, annotations) -> dict:
    return {
        "info": {"description": "ground truth from mobilenets.detection.data"}, "licenses": [],
        "images": images, "annotations": annotations,
        "categories": [{"id": i + 1, "name": c, "supercategory": "none"} for i, c in enumerate(classes)],
    }


def to_coco(dataset) -> dict:
    """COCO-format ground truth of any detection dataset (see :meth:`DetectionDataset.coco_ground_truth`): fast
    for ours and Subsets of ours; any other dataset of ``(image, target)`` items is read item by item."""
    if isinstance(dataset, DetectionDataset):
        return dataset.coco_ground_truth()
    if isinstance(dataset, Subset) and isinstance(dataset.dataset, DetectionDataset):
        return dataset.dataset.coco_ground_truth(dataset.indices)
    images, annotations = [], []
    for i in range(len(dataset)):
        image, t = dataset[i]
        images.append({"id": int(t["image_id"]), "height": int(image.shape[-2]), "width": int(image.shape[-1])})
        for (x1, y1, x2, y2), label in zip(torch.as_tensor(t["boxes"]).tolist(), torch.as_tensor(t["labels"]).tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": int(t["image_id"]), "category_id": label,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    classes = getattr(dataset, "classes", None) or getattr(getattr(dataset, "dataset", None), "classes", [])
    return _coco_dict(classes, images, annotations)


def detection_collate(batch):
    """``[(image, target), ...]`` -> ``(images (B, 3, H, W), [target, ...])``; the transform must have made
    the images one size (the train and eval transforms resize to size x size)."""
    images = [b[0] for b in batch]
    if len({tuple(im.shape) for im in images}) > 1:
        raise MobileNetsError("detection_collate: images of different sizes in one batch; use a transform that "
                              "resizes (detection_train_transform / detection_eval_transform)")
    return torch.stack([im.as_subclass(torch.Tensor) for im in images]), [b[1] for b in batch]


# ---------------------------------------------------------------------------------------------------------
# transforms

def _mean_fill(mean) -> list[int]:
    """The dataset mean as a uint8 fill colour (padding then normalises to ~0)."""
    return [round(255 * m) for m in mean]


class FastRandomIoUCrop(v2.RandomIoUCrop):
    """torchvision's RandomIoUCrop (SSD's crop) with its crop search vectorised: the same distribution (per
    randomly chosen IoU option, the first of ``trials`` random crops that passes), ~0.6 ms instead of ~6-9 ms per
    160x160 image (measured on this project's CPU: torchvision tries its crops one by one in Python, and on an
    image without boxes loops until the "keep as is" option comes up). The crop itself is torchvision's."""

    def make_params(self, flat_inputs):
        bboxes = next(x for x in flat_inputs if isinstance(x, tv_tensors.BoundingBoxes))
        h, w = bboxes.canvas_size
        boxes = F.convert_bounding_box_format(bboxes.as_subclass(torch.Tensor), old_format=bboxes.format,
                                              new_format=tv_tensors.BoundingBoxFormat.XYXY)
        if len(boxes) == 0:  # no crop can hold a box centre: only the "keep as is" option ends the search
            return {}
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        while True:
            min_iou = self.options[int(torch.randint(0, len(self.options), (1,)))]
            if min_iou >= 1.0:  # the "keep as is" option
                return {}
            n = self.trials
            scale = self.min_scale + (self.max_scale - self.min_scale) * torch.rand(n, 2)
            new_w, new_h = (w * scale[:, 0]).long(), (h * scale[:, 1]).long()
            aspect = new_w / new_h.clamp(min=1)
            pos = torch.rand(n, 2)
            left, top = ((w - new_w) * pos[:, 0]).long(), ((h - new_h) * pos[:, 1]).long()
            right, bottom = left + new_w, top + new_h
            within = ((left[:, None] < cx) & (cx < right[:, None]) & (top[:, None] < cy)
                      & (cy < bottom[:, None]))  # (trials, boxes): box centres inside each crop
            crops = torch.stack([left, top, right, bottom], 1).to(boxes.dtype)
            iou = torch.where(within, box_iou(crops, boxes), torch.zeros(()))
            ok = ((aspect >= self.min_aspect_ratio) & (aspect <= self.max_aspect_ratio) & (new_w > 0) & (new_h > 0)
                  & within.any(1) & (iou.max(1).values >= min_iou))
            if ok.any():
                k = int(ok.nonzero()[0])
                return dict(top=int(top[k]), left=int(left[k]), height=int(new_h[k]), width=int(new_w[k]),
                            is_within_crop_area=within[k])

    _get_params = make_params  # torchvision < 0.21 calls it this


def detection_train_transform(size: int, *, mean, std, geometric: bool = True):
    """Box-aware augmentation (SSD's recipe, torchvision transforms v2): random zoom-out (p=0.5, canvas up to
    4x, filled with the mean), random IoU crop (:class:`FastRandomIoUCrop`), horizontal flip, resize to ``size``
    x ``size``, photometric distortion, dropping degenerate boxes, float conversion and normalisation (~3.5 ms
    per 160x160 shapes image on one core, measured). ``geometric=False`` leaves out the zoom-out and the crop
    (flip and photometric only): for the built-in shapes set, whose generator already varies scale and placement.

    The photometric distortion runs after the resize (SSD runs it first): colour operations commute with the
    geometry, and on ``size`` x ``size`` they cost a fraction of what they cost on a zoomed-out canvas. Images
    without boxes pass through (RandomIoUCrop leaves them as they are)."""
    crop = [v2.RandomZoomOut(fill={tv_tensors.Image: _mean_fill(mean), "others": 0}, side_range=(1.0, 4.0), p=0.5),
            FastRandomIoUCrop()] if geometric else []
    return v2.Compose([
        v2.ToImage(),
        *crop,
        v2.RandomHorizontalFlip(),
        v2.Resize((size, size), antialias=True),
        v2.RandomPhotometricDistort(p=0.5),
        v2.SanitizeBoundingBoxes(),  # drops boxes the crop cut to < 1 px, and their labels
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std)),
    ])


def detection_eval_transform(size: int, *, mean, std):
    """Resize to ``size`` x ``size`` (boxes with it) and normalise."""
    return v2.Compose([v2.ToImage(), v2.Resize((size, size), antialias=True), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(list(mean), list(std))])


# ---------------------------------------------------------------------------------------------------------
# file-backed datasets

class _FileDetection(DetectionDataset):
    """A detection dataset of :class:`DetectionRecord` with image paths."""

    records: list[DetectionRecord]
    clipped: int = 0  # boxes clipped to their image (not skipped)

    def __len__(self) -> int:
        return len(self.records)

    def _record(self, i: int) -> DetectionRecord:
        return self.records[i]

    def _load(self, i: int):
        rec = self.records[i]
        image = self._read_or_skip(rec.path)
        if image is None:
            return None
        if image.shape[:2] != tuple(rec.size):  # the file changed since the dataset was built
            self._skip("image size changed", f"{rec.path}: image is now {image.shape[1]}x{image.shape[0]}, was "
                                              f"{rec.size[1]}x{rec.size[0]} when the dataset was built")
            return None
        return image, rec

    def _box(self, x1: float, y1: float, x2: float, y2: float, size: tuple[int, int], where: str):
        """The box clipped to the image (counted in ``self.clipped``), or None (skipped and counted) when it
        has no area or nothing of it is inside the image."""
        if not (x2 > x1 and y2 > y1):
            self._skip("zero-area box", f"{where}: zero-area box {[x1, y1, x2, y2]}")
            return None
        h, w = size
        c = [min(max(x1, 0.0), w), min(max(y1, 0.0), h), min(max(x2, 0.0), w), min(max(y2, 0.0), h)]
        if not (c[2] > c[0] and c[3] > c[1]):
            self._skip("box outside the image", f"{where}: box {[x1, y1, x2, y2]} is outside the {w}x{h} image")
            return None
        if c != [x1, y1, x2, y2]:
            self.clipped += 1
        return c

    def _image_size_or_skip(self, path: Path, where: str) -> tuple[int, int] | None:
        if not path.is_file():
            self._skip("missing image", f"{where}: image file {path} not found")
            return None
        try:
            return image_size(path)
        except BAD_IMAGE as e:
            reason = bad_image_reason(e)
            self._skip(reason, f"{path}: {reason} ({one_line(e)})")
            return None

    def _finish(self, source) -> None:
        self._report_skips(source)
        if self.clipped:
            log.warning("%s: clipped %d box(es) to their image", source, self.clipped)
        if not self.records:
            counts = ", ".join(f"{n} {r}" for r, n in self.skipped.items()) or "none listed"
            raise MobileNetsError(f"{source}: no usable images (skipped: {counts})")


def stays_inside(name: str, *, folders: bool = True) -> bool:
    """Whether a file name a dataset's annotations give (a COCO ``file_name``, a VOC id) stays inside the folder
    it is joined to: relative, no ``..`` part, no drive; with ``folders=False`` a plain name, no separator."""
    posix = name.replace("\\", "/")
    parts = posix.split("/")
    return bool(name) and not posix.startswith("/") and ":" not in parts[0] and ".." not in parts and \
        (folders or len(parts) == 1)


def _read_json(path: Path):
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except json.JSONDecodeError as e:
        raise MobileNetsError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except UnicodeDecodeError:
        raise MobileNetsError(f"{path}: not UTF-8 text (expected a COCO instances JSON file)") from None
    except OSError as e:
        raise MobileNetsError(f"{path}: cannot read ({one_line(e)})") from None


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class CocoDetection(_FileDetection):
    """A COCO ``instances_*.json`` with its images folder. Category ids (sorted) map to labels 1..K;
    ``cat_ids[label - 1]`` is the original category id (to report predictions in COCO's ids), ``classes`` the
    category names. iscrowd annotations are not trained on (they are ignore regions in
    :meth:`coco_ground_truth`); ``image_id`` is the COCO image id. Images are checked (header only) here:
    about 0.1 ms each."""

    def __init__(self, images_dir, annotation_json, *, transform=None, strict: bool = False) -> None:
        path = existing_file(annotation_json, "a COCO annotation JSON file")
        images_dir = Path(images_dir).expanduser()
        if not images_dir.is_dir():
            raise MobileNetsError(f"{images_dir}: no such directory (the images of {path.name})")
        data = _read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("images"), list) or \
                not isinstance(data.get("categories"), list):
            raise MobileNetsError(f"{path}: not a COCO instances file (expected an object with 'images', "
                                  "'annotations' and 'categories' lists)")
        anns = data.get("annotations", [])
        if not isinstance(anns, list):
            raise MobileNetsError(f"{path}: 'annotations' is not a list")

        cats = {}
        for k, c in enumerate(data["categories"]):
            if not isinstance(c, dict) or not _is_int(c.get("id")) or not isinstance(c.get("name"), str):
                raise MobileNetsError(f"{path}: categories[{k}]: expected {{'id': int, 'name': str}}")
            if c["id"] in cats:
                raise MobileNetsError(f"{path}: categories[{k}]: duplicate category id {c['id']}")
            cats[c["id"]] = c["name"]
        if not cats:
            raise MobileNetsError(f"{path}: no categories")
        super().__init__(classes=[cats[i] for i in sorted(cats)], transform=transform, strict=strict)
        self.cat_ids = sorted(cats)
        label_of = {cid: i + 1 for i, cid in enumerate(self.cat_ids)}
        self.annotation_json, self.images_dir, self.clipped = path, images_dir, 0

        entries = {}
        for k, im in enumerate(data["images"]):
            if not isinstance(im, dict) or not _is_int(im.get("id")) or not isinstance(im.get("file_name"), str):
                raise MobileNetsError(f"{path}: images[{k}]: expected {{'id': int, 'file_name': str, ...}}")
            if im["id"] in entries:
                raise MobileNetsError(f"{path}: images[{k}]: duplicate image id {im['id']}")
            entries[im["id"]] = im
        if not entries:
            raise MobileNetsError(f"{path}: no images (and so no annotations)")

        by_image: dict[int, list[tuple[int, dict]]] = {i: [] for i in entries}
        for k, a in enumerate(anns):
            where = f"{path}: annotations[{k}]"
            if not isinstance(a, dict):
                raise MobileNetsError(f"{where}: not an object")
            bbox = a.get("bbox")
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_num(v) for v in bbox)):
                raise MobileNetsError(f"{where}: bbox must be 4 finite numbers [x, y, w, h], got {str(bbox)[:60]}")
            if a.get("image_id") not in entries:
                self._skip("annotation of an unknown image", f"{where}: image_id {a.get('image_id')!r} is not in "
                                                              "'images'")
            elif a.get("category_id") not in label_of:
                self._skip("unknown category", f"{where}: category_id {a.get('category_id')!r} is not in "
                                               "'categories'")
            else:
                by_image[a["image_id"]].append((k, a))

        self.records = []
        for image_id, im in entries.items():
            where = f"{path}: image id {image_id}"
            if not stays_inside(im["file_name"]):
                self._skip("file name outside the image folder",
                           f"{where}: file_name {im['file_name'][:80]!a} leaves {images_dir}")
                continue
            file = images_dir / im["file_name"]
            size = self._image_size_or_skip(file, where)
            if size is None:
                continue
            rec = DetectionRecord(image_id=image_id, size=size, path=file)
            boxes, labels, crowd, crowd_labels = [], [], [], []
            for k, a in by_image[image_id]:
                x, y, w, h = (float(v) for v in a["bbox"])
                box = self._box(x, y, x + w, y + h, size, f"{path}: annotations[{k}]")
                if box is None:
                    continue
                is_crowd = bool(a.get("iscrowd", 0))
                (crowd if is_crowd else boxes).append(box)
                (crowd_labels if is_crowd else labels).append(label_of[a["category_id"]])
            rec.boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
            rec.labels = np.asarray(labels, np.int64)
            rec.ignore_boxes = np.asarray(crowd, np.float32).reshape(-1, 4)
            rec.ignore_labels = np.asarray(crowd_labels, np.int64)
            self.records.append(rec)
        self._finish(path)


class _Forbidden(ValueError):
    pass


def _expat_fromstring(data: bytes):
    """ElementTree from XML bytes through expat, refusing any DOCTYPE or entity declaration (the billion-laughs
    and external-entity attacks need one): what defusedxml does, for when it is not installed."""
    def forbid(*_):
        raise _Forbidden("DOCTYPE/ENTITY declarations are not allowed (XML bomb guard)")

    builder = ET.TreeBuilder()
    p = expat.ParserCreate()
    p.StartDoctypeDeclHandler = forbid
    p.EntityDeclHandler = forbid
    p.ExternalEntityRefHandler = forbid
    p.StartElementHandler = builder.start
    p.EndElementHandler = builder.end
    p.CharacterDataHandler = builder.data
    p.buffer_text = True
    p.Parse(data, True)
    return builder.close()


def parse_xml(path: Path):
    """The root element of an untrusted XML file, DTDs and entities refused (defusedxml when installed);
    a one-line MobileNetsError naming the file if it is not well-formed or declares any."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MobileNetsError(f"{path}: cannot read ({one_line(e)})") from None
    try:
        from defusedxml import DefusedXmlException
        from defusedxml.ElementTree import fromstring
    except ImportError:
        DefusedXmlException, fromstring = _Forbidden, None
    try:
        return fromstring(data, forbid_dtd=True) if fromstring is not None else _expat_fromstring(data)
    except (_Forbidden, DefusedXmlException):
        raise MobileNetsError(f"{path}: refused: DOCTYPE/ENTITY declarations are not allowed in an annotation "
                              "(XML bomb guard)") from None
    except (ET.ParseError, expat.ExpatError, ValueError) as e:
        raise MobileNetsError(f"{path}: not a valid XML annotation ({one_line(e)})") from None


class VocDetection(_FileDetection):
    """Pascal VOC detection: ``root/ImageSets/Main/{split}.txt`` lists image ids; ``root/Annotations/{id}.xml``
    and ``root/JPEGImages/{id}.jpg`` (or the XML's ``<filename>``). VOC's 1-based inclusive pixel coordinates
    become ``(xmin - 1, ymin - 1, xmax, ymax)`` (as torchvision's and detectron's readers do). Objects whose
    name is not in ``classes`` are skipped and counted; "difficult" objects are ignore regions unless
    ``keep_difficult``. ``image_id`` is the index in ``ids`` (the kept VOC ids)."""

    def __init__(self, root, split: str = "train", *, classes=VOC_CLASSES, transform=None, strict: bool = False,
                 keep_difficult: bool = False) -> None:
        root = Path(root).expanduser()
        for sub in ("Annotations", "JPEGImages"):
            if not (root / sub).is_dir():
                raise MobileNetsError(f"{root}: no {sub}/ folder (expected a Pascal VOC root, e.g. "
                                      "VOCdevkit/VOC2012)")
        list_file = root / "ImageSets" / "Main" / f"{split}.txt"
        if not list_file.is_file():
            have = sorted(p.stem for p in (root / "ImageSets" / "Main").glob("*.txt") if "_" not in p.stem) \
                if (root / "ImageSets" / "Main").is_dir() else []
            raise MobileNetsError(f"{list_file}: no such split list (splits here: {', '.join(have) or 'none'})")
        classes = list(classes)
        if len(set(classes)) != len(classes) or not classes:
            raise MobileNetsError(f"classes must be distinct names, got {classes}")
        super().__init__(classes=classes, transform=transform, strict=strict)
        label_of = {c: i + 1 for i, c in enumerate(classes)}
        self.root, self.split, self.clipped, self.keep_difficult = root, split, 0, keep_difficult

        try:
            ids = [line.split()[0] for line in list_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise MobileNetsError(f"{list_file}: cannot read ({one_line(e)})") from None
        if not ids:
            raise MobileNetsError(f"{list_file}: no image ids (and so no annotations)")

        self.records, self.ids = [], []
        for voc_id in ids:
            if not stays_inside(voc_id, folders=False):
                self._skip("id outside the dataset", f"{list_file}: id {voc_id[:80]!a} is not a plain file name")
                continue
            xml = root / "Annotations" / f"{voc_id}.xml"
            if not xml.is_file():
                self._skip("missing annotation", f"{list_file}: {voc_id}: no {xml}")
                continue
            ann = parse_xml(xml)
            file = root / "JPEGImages" / f"{voc_id}.jpg"
            name = (ann.findtext("filename") or "").strip()
            if not file.is_file() and stays_inside(name, folders=False):
                file = root / "JPEGImages" / name
            size = self._image_size_or_skip(file, str(xml))
            if size is None:
                continue
            boxes, labels, hard, hard_labels = [], [], [], []
            for k, obj in enumerate(ann.findall("object")):
                where = f"{xml}: object {k}"
                cls = (obj.findtext("name") or "").strip()
                bnd = obj.find("bndbox")
                try:
                    coords = [float(bnd.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax")]
                    difficult = int(float(obj.findtext("difficult") or 0))
                except (AttributeError, TypeError, ValueError):
                    raise MobileNetsError(f"{where}: needs <bndbox> with numeric xmin, ymin, xmax, ymax") from None
                if cls not in label_of:
                    self._skip("unknown class", f"{where}: class {cls!r} is not one of the {len(classes)} classes")
                    continue
                x1, y1, x2, y2 = coords
                box = self._box(x1 - 1, y1 - 1, x2, y2, size, where)
                if box is None:
                    continue
                if difficult and not keep_difficult:
                    hard.append(box)
                    hard_labels.append(label_of[cls])
                else:
                    boxes.append(box)
                    labels.append(label_of[cls])
            self.records.append(DetectionRecord(
                image_id=len(self.records), size=size, path=file,
                boxes=np.asarray(boxes, np.float32).reshape(-1, 4), labels=np.asarray(labels, np.int64),
                ignore_boxes=np.asarray(hard, np.float32).reshape(-1, 4),
                ignore_labels=np.asarray(hard_labels, np.int64)))
            self.ids.append(voc_id)
        self._finish(list_file)


# ---------------------------------------------------------------------------------------------------------
# the one entry point

def _coco_layout(root: Path, split: str) -> tuple[Path, Path] | None:
    """``(images_dir, annotation_json)`` if ``root`` holds ``annotations/instances_{split}*.json`` with images in
    ``{split}*/`` or ``images/``; None if it has no such annotation file."""
    anns = sorted((root / "annotations").glob(f"instances_{split}*.json")) if (root / "annotations").is_dir() else []
    if not anns:
        return None
    if len(anns) > 1:
        raise MobileNetsError(f"{root / 'annotations'}: several annotation files for split {split!r}: "
                              f"{', '.join(p.name for p in anns)}")
    dirs = sorted(d for d in root.glob(f"{split}*") if d.is_dir())
    if len(dirs) > 1:
        raise MobileNetsError(f"{root}: several image folders for split {split!r}: {', '.join(d.name for d in dirs)}")
    if dirs:
        return dirs[0], anns[0]
    if (root / "images").is_dir():
        return root / "images", anns[0]
    raise MobileNetsError(f"{root}: {anns[0].name} but no {split}*/ or images/ folder for its images")


def load_detection_dataset(path_or_none, split: str, *, image_size: int, mean, std, strict: bool = False,
                           train: bool = True, augment: str = "full",
                           num_samples: int | None = None) -> DetectionDataset:
    """The detection dataset for ``split`` with the train (``train=True``) or eval transform attached.

    Accepted ``path_or_none``:

    - None: the built-in shapes set (``num_samples`` of them; default 2000 train / 200 val)
      (:class:`mobilenets.shapes.ShapesDetection`, generated at ``image_size``);
    - a Pascal VOC root (has ``Annotations/``): ``Annotations/*.xml``, ``JPEGImages/``,
      ``ImageSets/Main/{split}.txt``;
    - a COCO root: ``DIR/annotations/instances_{split}*.json`` (e.g. ``instances_train2017.json``) with the
      images in ``DIR/{split}*/`` (e.g. ``train2017/``) or ``DIR/images/``.
    """
    if train:  # augment "full": SSD's zoom-out + IoU crop + flip + photometric; "light": flip + photometric
        transform = detection_train_transform(image_size, mean=mean, std=std, geometric=augment == "full")
    else:
        transform = detection_eval_transform(image_size, mean=mean, std=std)
    if path_or_none is None:
        from ..shapes import ShapesDetection

        return ShapesDetection(split, image_size=image_size, transform=transform, num_samples=num_samples)
    root = Path(path_or_none).expanduser()
    if not root.is_dir():
        raise MobileNetsError(f"{root}: no such directory")
    if (root / "Annotations").is_dir():
        return VocDetection(root, split, transform=transform, strict=strict)
    coco = _coco_layout(root, split)
    if coco is not None:
        return CocoDetection(*coco, transform=transform, strict=strict)
    raise MobileNetsError(
        f"{root}: not a detection dataset for split {split!r}: expected Pascal VOC (Annotations/, JPEGImages/, "
        f"ImageSets/Main/{split}.txt) or COCO (annotations/instances_{split}*.json with images in {split}*/ or "
        "images/)")
