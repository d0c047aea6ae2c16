"""Detection data: COCO and VOC round trips on tiny sets written from the shapes generator, every bad-input case
(skipped and counted, or a one-line error naming the file), box-aware transforms, collate, COCO ground truth."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Subset
from torchvision import tv_tensors
from torchvision.transforms import v2

from mobilenets.detection import data as D
from mobilenets.detection.data import (
    VOC_CLASSES, CocoDetection, VocDetection, detection_collate, detection_eval_transform,
    detection_train_transform, load_detection_dataset, to_coco,
)
from mobilenets.errors import MobileNetsError
from mobilenets.shapes import SHAPES_CLASSES, ShapesDetection

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CAT_IDS = (3, 7, 11, 20)  # COCO ids are not contiguous: they map to labels 1..4 in sorted order


def _one_line_error(excinfo, *needles):
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert str(n) in msg, msg


# ---------------------------------------------------------------------------------------------------------
# tiny datasets written from the generator

def write_coco(root: Path, n: int = 4, split: str = "val") -> dict:
    """``root/annotations/instances_{split}2017.json`` + ``root/{split}2017/*.png``; returns the JSON dict."""
    gen = ShapesDetection("val", num_samples=n)
    (root / f"{split}2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    images, anns = [], []
    for i in range(n):
        image, boxes, labels, _ = gen.raw(i)
        Image.fromarray(image).save(root / f"{split}2017" / f"{i:04d}.png")
        images.append({"id": 100 + i, "file_name": f"{i:04d}.png", "width": 160, "height": 160})
        for (x1, y1, x2, y2), label in zip(boxes.tolist(), labels.tolist()):
            anns.append({"id": len(anns) + 1, "image_id": 100 + i, "category_id": CAT_IDS[label - 1],
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    data = {"images": images, "annotations": anns,
            "categories": [{"id": c, "name": name} for c, name in zip(CAT_IDS, SHAPES_CLASSES)]}
    dump_coco(root, data, split)
    return data


def dump_coco(root: Path, data: dict, split: str = "val") -> Path:
    path = root / "annotations" / f"instances_{split}2017.json"
    path.write_text(json.dumps(data))
    return path


def coco(root: Path, **kw) -> CocoDetection:
    return CocoDetection(root / "val2017", root / "annotations" / "instances_val2017.json", **kw)


def voc_xml(filename: str, objects, size=(160, 160)) -> str:
    """VOC XML; ``objects`` = (name, (x1, y1, x2, y2) pixel-edge box, difficult): written 1-based inclusive."""
    objs = "".join(
        f"<object><name>{name}</name><difficult>{int(diff)}</difficult><bndbox><xmin>{x1 + 1:g}</xmin>"
        f"<ymin>{y1 + 1:g}</ymin><xmax>{x2:g}</xmax><ymax>{y2:g}</ymax></bndbox></object>"
        for name, (x1, y1, x2, y2), diff in objects)
    return (f"<annotation><filename>{filename}</filename><size><width>{size[1]}</width><height>{size[0]}</height>"
            f"<depth>3</depth></size>{objs}</annotation>")


def write_voc(root: Path, n: int = 4, split: str = "train") -> list[tuple[np.ndarray, np.ndarray]]:
    """A VOC root with shape names as classes; returns each image's (boxes, labels)."""
    gen = ShapesDetection("train", num_samples=n)
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    expected, ids = [], []
    for i in range(n):
        image, boxes, labels, _ = gen.raw(i)
        voc_id = f"2024_{i:06d}"
        Image.fromarray(image).save(root / "JPEGImages" / f"{voc_id}.jpg", quality=95)
        objects = [(SHAPES_CLASSES[lab - 1], box, False) for box, lab in zip(boxes.tolist(), labels.tolist())]
        (root / "Annotations" / f"{voc_id}.xml").write_text(voc_xml(f"{voc_id}.jpg", objects))
        expected.append((boxes, labels))
        ids.append(voc_id)
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return expected


def voc(root: Path, **kw) -> VocDetection:
    return VocDetection(root, "train", classes=SHAPES_CLASSES, **kw)


# ---------------------------------------------------------------------------------------------------------
# round trips

def test_coco_round_trip(tmp_path):
    data = write_coco(tmp_path)
    ds = coco(tmp_path)
    assert ds.classes == list(SHAPES_CLASSES) and ds.cat_ids == list(CAT_IDS) and len(ds) == 4
    assert ds.skipped == {}
    gen = ShapesDetection("val", num_samples=4)
    for i in range(4):
        image, target = ds[i]
        _, boxes, labels, _ = gen.raw(i)
        assert image.dtype == torch.float32 and image.shape == (3, 160, 160)
        assert isinstance(target["boxes"], tv_tensors.BoundingBoxes) and target["boxes"].dtype == torch.float32
        np.testing.assert_allclose(target["boxes"].numpy(), boxes, atol=1e-4)
        np.testing.assert_array_equal(target["labels"].numpy(), labels)
        assert target["image_id"] == data["images"][i]["id"] and target["orig_size"] == (160, 160)
        raw = torch.from_numpy(gen.raw(i)[0]).permute(2, 0, 1)
        assert torch.equal((image * 255).round().to(torch.uint8), raw)  # PNG: lossless


def test_voc_round_trip(tmp_path):
    expected = write_voc(tmp_path)
    ds = voc(tmp_path)
    assert len(ds) == 4 and ds.ids == [f"2024_{i:06d}" for i in range(4)] and ds.skipped == {}
    for i, (boxes, labels) in enumerate(expected):
        image, target = ds[i]
        np.testing.assert_array_equal(target["boxes"].numpy(), boxes)  # 1-based inclusive -> pixel edges
        np.testing.assert_array_equal(target["labels"].numpy(), labels)
        assert target["image_id"] == i and image.shape == (3, 160, 160)


def test_voc_difficult_objects(tmp_path):
    write_voc(tmp_path, n=1)
    xml = tmp_path / "Annotations" / "2024_000000.xml"
    objects = [("circle", (10, 10, 50, 50), False), ("ellipse", (60, 60, 90, 80), True)]
    xml.write_text(voc_xml("2024_000000.jpg", objects))
    _, target = voc(tmp_path)[0]
    assert target["labels"].tolist() == [2]  # the difficult one is an ignore region, not a training box
    gt = voc(tmp_path, transform=None).coco_ground_truth()
    assert [(a["category_id"], a["iscrowd"]) for a in gt["annotations"]] == [(2, 0), (4, 1)]
    _, target = voc(tmp_path, keep_difficult=True)[0]
    assert target["labels"].tolist() == [2, 4]


# ---------------------------------------------------------------------------------------------------------
# bad input: skipped and counted, or a one-line error naming the file

def test_missing_image(tmp_path, caplog):
    write_coco(tmp_path)
    (tmp_path / "val2017" / "0001.png").unlink()
    with caplog.at_level(logging.WARNING, logger="mobilenets"):
        ds = coco(tmp_path)
    assert len(ds) == 3 and ds.skipped == {"missing image": 1}
    assert "missing image" in caplog.text and "0001.png" in caplog.text
    with pytest.raises(MobileNetsError) as e:
        coco(tmp_path, strict=True)
    _one_line_error(e, "0001.png", "not found")

    write_voc(tmp_path / "voc")
    (tmp_path / "voc" / "JPEGImages" / "2024_000002.jpg").unlink()
    ds = voc(tmp_path / "voc")
    assert len(ds) == 3 and ds.skipped == {"missing image": 1} and "2024_000002" not in ds.ids


def test_file_names_that_leave_the_dataset_are_skipped(tmp_path, caplog):
    """A COCO file_name or a VOC id naming a file outside its folder (``../``, absolute) is skipped and counted,
    or with strict a one-line error, though the file it names exists and is an image."""
    data = write_coco(tmp_path / "c")
    outside = tmp_path / "outside.png"
    (tmp_path / "c" / "val2017" / "0000.png").rename(outside)
    data["images"][0]["file_name"] = "../../outside.png"
    data["images"][1]["file_name"] = str(tmp_path / "c" / "val2017" / "0001.png")  # absolute, though inside
    dump_coco(tmp_path / "c", data)
    with caplog.at_level(logging.WARNING, logger="mobilenets"):
        ds = coco(tmp_path / "c")
    assert len(ds) == 2 and ds.skipped == {"file name outside the image folder": 2}
    assert "'../../outside.png' leaves" in caplog.text
    with pytest.raises(MobileNetsError) as e:
        coco(tmp_path / "c", strict=True)
    _one_line_error(e, "file_name '../../outside.png' leaves")

    write_voc(tmp_path / "voc")
    (tmp_path / "voc" / "Annotations" / "2024_000000.xml").rename(tmp_path / "escaped.xml")
    (tmp_path / "voc" / "JPEGImages" / "2024_000000.jpg").rename(tmp_path / "escaped.jpg")
    ids = tmp_path / "voc" / "ImageSets" / "Main" / "train.txt"
    ids.write_text(ids.read_text().replace("2024_000000", "../../escaped"))
    ds = voc(tmp_path / "voc")
    assert len(ds) == 3 and ds.skipped == {"id outside the dataset": 1}
    with pytest.raises(MobileNetsError) as e:
        voc(tmp_path / "voc", strict=True)
    _one_line_error(e, "id '../../escaped' is not a plain file name")


def test_box_outside_image_is_clipped_or_skipped(tmp_path):
    data = write_coco(tmp_path, n=1)
    data["annotations"] = [
        {"id": 1, "image_id": 100, "category_id": 3, "bbox": [150, 140, 30, 40]},  # partly outside: clipped
        {"id": 2, "image_id": 100, "category_id": 7, "bbox": [200, 10, 10, 10]},  # wholly outside: skipped
        {"id": 3, "image_id": 100, "category_id": 7, "bbox": [-20, -20, 10, 10]},  # wholly outside: skipped
    ]
    dump_coco(tmp_path, data)
    ds = coco(tmp_path)
    _, target = ds[0]
    assert target["boxes"].tolist() == [[150, 140, 160, 160]] and target["labels"].tolist() == [1]
    assert ds.clipped == 1 and ds.skipped == {"box outside the image": 2}
    with pytest.raises(MobileNetsError) as e:
        coco(tmp_path, strict=True)
    _one_line_error(e, "instances_val2017.json", "annotations[1]", "outside")

    write_voc(tmp_path / "voc", n=1)
    (tmp_path / "voc" / "Annotations" / "2024_000000.xml").write_text(
        voc_xml("2024_000000.jpg", [("circle", (-5, 10, 50, 200), False), ("circle", (170, 10, 180, 20), False)]))
    ds = voc(tmp_path / "voc")
    assert ds[0][1]["boxes"].tolist() == [[0, 10, 50, 160]] and ds.skipped == {"box outside the image": 1}


def test_zero_area_box(tmp_path):
    data = write_coco(tmp_path, n=1)
    data["annotations"] = [{"id": 1, "image_id": 100, "category_id": 3, "bbox": [10, 10, 0, 5]},
                           {"id": 2, "image_id": 100, "category_id": 3, "bbox": [10, 10, 5, 5]}]
    dump_coco(tmp_path, data)
    ds = coco(tmp_path)
    assert ds.skipped == {"zero-area box": 1} and ds[0][1]["boxes"].tolist() == [[10, 10, 15, 15]]
    with pytest.raises(MobileNetsError) as e:
        coco(tmp_path, strict=True)
    _one_line_error(e, "instances_val2017.json", "annotations[0]", "zero-area")


def test_voc_unknown_class(tmp_path, caplog):
    write_voc(tmp_path, n=1)
    (tmp_path / "Annotations" / "2024_000000.xml").write_text(
        voc_xml("2024_000000.jpg", [("person", (1, 2, 30, 40), False), ("unicorn", (5, 5, 20, 20), False)]))
    with caplog.at_level(logging.WARNING, logger="mobilenets"):
        ds = VocDetection(tmp_path, "train")  # the 20 VOC classes
    assert ds.classes == list(VOC_CLASSES) and ds.skipped == {"unknown class": 1} and "unicorn" in caplog.text
    assert ds[0][1]["labels"].tolist() == [VOC_CLASSES.index("person") + 1]
    ds = VocDetection(tmp_path, "train", classes=["person", "unicorn"])
    assert ds[0][1]["labels"].tolist() == [1, 2] and ds.skipped == {}
    with pytest.raises(MobileNetsError) as e:
        VocDetection(tmp_path, "train", strict=True)
    _one_line_error(e, "2024_000000.xml", "unicorn")


def test_images_without_boxes_are_negatives(tmp_path):
    data = write_coco(tmp_path, n=3)
    data["annotations"] = []
    dump_coco(tmp_path, data)
    ds = coco(tmp_path, transform=detection_train_transform(96, mean=MEAN, std=STD))
    assert len(ds) == 3
    for i in range(3):
        image, target = ds[i]
        assert image.shape == (3, 96, 96) and target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    data["images"] = []
    dump_coco(tmp_path, data)
    with pytest.raises(MobileNetsError) as e:
        coco(tmp_path)
    _one_line_error(e, "instances_val2017.json", "no images")


def test_iscrowd_not_trained_on_but_ignored_in_evaluation(tmp_path):
    data = write_coco(tmp_path, n=1)
    data["annotations"] = [{"id": 1, "image_id": 100, "category_id": 3, "bbox": [10, 10, 20, 20], "iscrowd": 0},
                           {"id": 2, "image_id": 100, "category_id": 7, "bbox": [40, 40, 50, 50], "iscrowd": 1}]
    dump_coco(tmp_path, data)
    ds = coco(tmp_path)
    assert ds[0][1]["labels"].tolist() == [1]
    gt = ds.coco_ground_truth()
    assert [(a["category_id"], a["iscrowd"]) for a in gt["annotations"]] == [(1, 0), (2, 1)]


@pytest.mark.parametrize("text", ['{"images": [', "\xff\xfe garbage", '{"images": [], "categories": 3}'])
def test_corrupt_json(tmp_path, text):
    write_coco(tmp_path, n=1)
    path = tmp_path / "annotations" / "instances_val2017.json"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(MobileNetsError) as e:
        coco(tmp_path)
    _one_line_error(e, path)


def test_bad_coco_entries(tmp_path):
    data = write_coco(tmp_path, n=1)
    bad = copy.deepcopy(data)
    bad["annotations"][0]["bbox"] = [1, 2, "x", 4]
    dump_coco(tmp_path, bad)
    with pytest.raises(MobileNetsError) as e:
        coco(tmp_path)
    _one_line_error(e, "annotations[0]", "bbox")
    bad = copy.deepcopy(data)
    bad["annotations"][0]["category_id"] = 999
    bad["annotations"].append({"image_id": 12345, "category_id": 3, "bbox": [1, 1, 5, 5]})
    dump_coco(tmp_path, bad)
    ds = coco(tmp_path)
    assert ds.skipped == {"unknown category": 1, "annotation of an unknown image": 1}


def test_corrupt_xml(tmp_path):
    write_voc(tmp_path, n=2)
    xml = tmp_path / "Annotations" / "2024_000001.xml"
    xml.write_text("<annotation><object><name>circle</name>")
    with pytest.raises(MobileNetsError) as e:
        voc(tmp_path)
    _one_line_error(e, xml, "not a valid XML")
    xml.write_text("<annotation><object><name>circle</name><bndbox><xmin>1</xmin></bndbox></object></annotation>")
    with pytest.raises(MobileNetsError) as e:
        voc(tmp_path)
    _one_line_error(e, xml, "object 0", "bndbox")


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<annotation><filename>&lol3;</filename></annotation>"""


def test_xml_bombs_are_refused(tmp_path):
    write_voc(tmp_path, n=1)
    xml = tmp_path / "Annotations" / "2024_000000.xml"
    utf16 = BILLION_LAUGHS.replace('"1.0"?', '"1.0" encoding="utf-16"?').encode("utf-16")  # no "<!DOCTYPE" bytes
    for data in (BILLION_LAUGHS.encode(), utf16):
        xml.write_bytes(data)
        with pytest.raises(MobileNetsError) as e:
            voc(tmp_path)
        _one_line_error(e, xml, "XML bomb guard")
    # the stdlib fallback (used when defusedxml is not installed) refuses them by itself
    with pytest.raises(ValueError, match="DOCTYPE"):
        D._expat_fromstring(BILLION_LAUGHS.encode())
    assert D._expat_fromstring(voc_xml("a.jpg", []).encode()).findtext("filename") == "a.jpg"


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_unreadable_truncated_and_bomb_images(tmp_path, monkeypatch):
    write_coco(tmp_path, n=4)
    (tmp_path / "val2017" / "0000.png").write_bytes(b"not an image at all")
    ds = coco(tmp_path)
    assert len(ds) == 3 and ds.skipped == {"unreadable image": 1}
    with pytest.raises(MobileNetsError) as e:
        coco(tmp_path, strict=True)
    _one_line_error(e, "0000.png", "unreadable image")

    _truncate(tmp_path / "val2017" / "0001.png")  # the header still reads: caught when decoded
    ds = coco(tmp_path)
    assert len(ds) == 3
    image, target = ds[0]  # 0001 fails to decode: the next image stands in
    assert target["image_id"] == 102 and ds.skipped["unreadable image"] == 2
    ds.strict = True
    with pytest.raises(MobileNetsError) as e:
        ds[0]
    _one_line_error(e, "0001.png", "unreadable image")

    write_voc(tmp_path / "voc", n=2)
    Image.new("RGB", (400, 400)).save(tmp_path / "voc" / "JPEGImages" / "2024_000001.jpg")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40_000)  # 400x400 is over twice that: a decompression bomb
    ds = voc(tmp_path / "voc")
    assert len(ds) == 1 and ds.skipped == {"decompression bomb": 1}
    with pytest.raises(MobileNetsError) as e:
        voc(tmp_path / "voc", strict=True)
    _one_line_error(e, "2024_000001.jpg", "decompression bomb")


def test_empty_after_skipping(tmp_path):
    write_coco(tmp_path, n=2)
    for p in (tmp_path / "val2017").iterdir():
        p.unlink()
    with pytest.raises(MobileNetsError) as e:
        coco(tmp_path)
    _one_line_error(e, "no usable images", "2 missing image")


# ---------------------------------------------------------------------------------------------------------
# transforms

def _mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight XYXY pixel-edge boxes of (n, H, W) masks."""
    out = []
    for m in masks:
        rows, cols = m.any(1).nonzero()[:, 0], m.any(0).nonzero()[:, 0]
        out.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
    return torch.tensor(out, dtype=torch.float32).reshape(-1, 4)


def _sample(i: int):
    image, boxes, labels, masks = ShapesDetection("train", num_samples=50).raw(i)
    return (tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1)),
            {"boxes": tv_tensors.BoundingBoxes(torch.from_numpy(boxes), format="XYXY", canvas_size=(160, 160)),
             "labels": torch.from_numpy(labels), "masks": tv_tensors.Mask(torch.from_numpy(masks))})


def test_flip_keeps_boxes_on_their_masks():
    image, target = _sample(3)
    flipped, t = v2.RandomHorizontalFlip(p=1.0)(image, target)
    assert torch.equal(flipped, image.flip(-1))
    assert torch.equal(t["boxes"].as_subclass(torch.Tensor), _mask_boxes(t["masks"]))
    assert not torch.equal(t["boxes"].as_subclass(torch.Tensor), target["boxes"].as_subclass(torch.Tensor))


def test_train_transform_keeps_boxes_on_their_masks():
    torch.manual_seed(0)
    tf = detection_train_transform(128, mean=MEAN, std=STD)
    checked = 0
    for i in range(40):
        image, target = _sample(i)
        out, t = tf(image, target)
        assert out.shape == (3, 128, 128) and out.dtype == torch.float32
        assert len(t["boxes"]) == len(t["labels"]) == len(t["masks"])
        boxes = t["boxes"].as_subclass(torch.Tensor)
        assert (boxes[:, 2:] > boxes[:, :2]).all() and boxes.min() >= 0 and boxes.max() <= 128
        keep = t["masks"].flatten(1).any(1)
        # A crop cuts a box to the crop (a cut circle's box is larger than its visible part's), so each mask's
        # box lies inside its box; masks are resized nearest, boxes exactly: up to ~2 px apart
        inner = _mask_boxes(t["masks"][keep])
        assert (inner[:, :2] >= boxes[keep][:, :2] - 2).all() and (inner[:, 2:] <= boxes[keep][:, 2:] + 2).all()
        checked += int(keep.sum())
    assert checked > 40


def test_fast_iou_crop_matches_torchvision():
    # the same search, vectorised: crop sizes and kept-box fractions agree with torchvision's RandomIoUCrop
    samples = [_sample(i) for i in range(20)]
    stats = []
    for crop in (v2.RandomIoUCrop(), D.FastRandomIoUCrop()):
        torch.manual_seed(0)  # deterministic, so the loose statistical check below cannot flake
        areas, kept = [], []
        for _ in range(8):
            for image, target in samples:
                out, t = crop(image, target)
                h, w = out.shape[-2:]
                assert 48 <= h <= 160 and 48 <= w <= 160 and 0.5 <= w / h <= 2  # scale 0.3..1, aspect 0.5..2
                areas.append(h * w / 160**2)
                kept.append((t["boxes"][:, 2] > t["boxes"][:, 0]).float().mean().item())
        stats.append((np.mean(areas), np.mean(kept)))
    (a0, k0), (a1, k1) = stats  # measured: crop area 0.52 / 0.55 of the image, boxes kept 0.76 / 0.79
    assert abs(a0 - a1) < 0.08 and abs(k0 - k1) < 0.08, stats
    image, _ = samples[0]
    empty = {"boxes": tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(160, 160)),
             "labels": torch.zeros(0, dtype=torch.int64)}
    assert D.FastRandomIoUCrop()(image, empty)[0].shape == image.shape  # no boxes: kept as is


def test_transforms_pickle():  # DataLoader workers started with "spawn" pickle the dataset and its transform
    import pickle

    ds = ShapesDetection("val", num_samples=2, transform=detection_train_transform(64, mean=MEAN, std=STD))
    assert pickle.loads(pickle.dumps(ds))[0][0].shape == (3, 64, 64)


def test_eval_transform_scales_boxes():
    image, target = _sample(0)
    out, t = detection_eval_transform(80, mean=MEAN, std=STD)(image, target)
    assert out.shape == (3, 80, 80)
    torch.testing.assert_close(t["boxes"].as_subclass(torch.Tensor), target["boxes"].as_subclass(torch.Tensor) / 2)


def test_collate():
    ds = ShapesDetection("val", num_samples=3, transform=detection_eval_transform(64, mean=MEAN, std=STD))
    images, targets = detection_collate([ds[0], ds[1], ds[2]])
    assert images.shape == (3, 3, 64, 64) and type(images) is torch.Tensor
    assert [t["image_id"] for t in targets] == [0, 1, 2]
    with pytest.raises(MobileNetsError, match="different sizes"):
        detection_collate([ds[0], (torch.zeros(3, 10, 10), {})])


# ---------------------------------------------------------------------------------------------------------
# COCO ground truth and pycocotools

def _perfect_ap(dataset) -> float:
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO()
    gt.dataset = to_coco(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dets = []
        for i in range(len(dataset)):
            _, t = dataset[i]
            for (x1, y1, x2, y2), label in zip(t["boxes"].tolist(), t["labels"].tolist()):
                dets.append({"image_id": t["image_id"], "category_id": label, "bbox": [x1, y1, x2 - x1, y2 - y1],
                             "score": 1.0})
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


def test_to_coco_perfect_predictions_score_ap_1(tmp_path):
    data = write_coco(tmp_path, n=4)
    data["annotations"].append({"id": 99, "image_id": 101, "category_id": 7, "bbox": [0, 0, 30, 30], "iscrowd": 1})
    dump_coco(tmp_path, data)
    ds = coco(tmp_path, transform=detection_eval_transform(96, mean=MEAN, std=STD))
    gt = to_coco(ds)
    assert {(im["width"], im["height"]) for im in gt["images"]} == {(96, 96)}  # the evaluated size
    assert [c["id"] for c in gt["categories"]] == [1, 2, 3, 4]
    assert min(a["id"] for a in gt["annotations"]) == 1
    assert _perfect_ap(ds) == pytest.approx(1.0)
    assert _perfect_ap(ShapesDetection("val", num_samples=8, transform=detection_eval_transform(
        64, mean=MEAN, std=STD))) == pytest.approx(1.0)
    sub = Subset(ds, [1, 3])
    assert [im["id"] for im in to_coco(sub)["images"]] == [101, 103]
    assert _perfect_ap(sub) == pytest.approx(1.0)


def test_to_coco_generic_dataset_matches(tmp_path):
    write_voc(tmp_path, n=3)
    ds = voc(tmp_path, transform=detection_eval_transform(64, mean=MEAN, std=STD))

    class Plain(torch.utils.data.Dataset):  # not one of ours: read item by item
        classes = ds.classes

        def __len__(self):
            return len(ds)

        def __getitem__(self, i):
            return ds[i]

    fast, slow = to_coco(ds), to_coco(Plain())
    np.testing.assert_allclose([a["bbox"] for a in fast["annotations"]], [a["bbox"] for a in slow["annotations"]],
                               atol=1e-4)
    assert fast["categories"] == slow["categories"]


# ---------------------------------------------------------------------------------------------------------
# the entry point

def test_load_detection_dataset_layouts(tmp_path):
    write_coco(tmp_path / "coco", split="val")
    ds = load_detection_dataset(tmp_path / "coco", "val", image_size=64, mean=MEAN, std=STD, train=False)
    assert isinstance(ds, CocoDetection) and ds[0][0].shape == (3, 64, 64)
    (tmp_path / "coco" / "val2017").rename(tmp_path / "coco" / "images")
    ds = load_detection_dataset(tmp_path / "coco", "val", image_size=64, mean=MEAN, std=STD, train=True)
    assert isinstance(ds, CocoDetection) and ds.images_dir.name == "images" and ds[0][0].shape == (3, 64, 64)

    write_voc(tmp_path / "voc")
    (tmp_path / "voc" / "Annotations" / "2024_000000.xml").write_text(
        voc_xml("2024_000000.jpg", [("dog", (1, 2, 30, 40), False)]))
    ds = load_detection_dataset(tmp_path / "voc", "train", image_size=64, mean=MEAN, std=STD)
    assert isinstance(ds, VocDetection) and ds.classes == list(VOC_CLASSES) and len(ds) == 4

    with pytest.raises(MobileNetsError) as e:
        load_detection_dataset(tmp_path / "voc", "val", image_size=64, mean=MEAN, std=STD)
    _one_line_error(e, "val.txt", "splits here: train")
    (tmp_path / "other").mkdir()
    with pytest.raises(MobileNetsError) as e:
        load_detection_dataset(tmp_path / "other", "train", image_size=64, mean=MEAN, std=STD)
    _one_line_error(e, "Pascal VOC", "COCO", "instances_train*.json")
    with pytest.raises(MobileNetsError) as e:
        load_detection_dataset(tmp_path / "nope", "train", image_size=64, mean=MEAN, std=STD)
    _one_line_error(e, "no such directory")
