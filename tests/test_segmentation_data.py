"""Segmentation data: VOC and mask-folder round trips on tiny sets written from the shapes generator, every
bad-input case (skipped and counted, or a one-line error naming the file), joint image+mask transforms."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from mobilenets.errors import MobileNetsError
from mobilenets.segmentation.data import (
    VOC_SEG_CLASSES, MaskFolder, VocSegmentation, load_segmentation_dataset, segmentation_eval_transform,
    segmentation_train_transform, voc_palette,
)
from mobilenets.shapes import SHAPES_CLASSES, ShapesSegmentation

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _one_line_error(excinfo, *needles):
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert str(n) in msg, msg


def _samples(n: int, split: str = "train"):
    gen = ShapesSegmentation(split, num_samples=n)
    for i in range(n):
        image, mask = gen.raw(i)
        mask = mask.copy()
        mask[0, :] = 255  # a border line of "ignore", as VOC draws around objects
        yield i, image, mask


def _palette_png(mask: np.ndarray, path: Path) -> None:
    im = Image.fromarray(mask, mode="P")
    im.putpalette(voc_palette().ravel().tolist())
    im.save(path)


def write_voc(root: Path, n: int = 3, split: str = "train") -> list[np.ndarray]:
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    masks, ids = [], []
    for i, image, mask in _samples(n):
        voc_id = f"2024_{i:06d}"
        Image.fromarray(image).save(root / "JPEGImages" / f"{voc_id}.jpg", quality=95)
        _palette_png(mask, root / "SegmentationClass" / f"{voc_id}.png")
        masks.append(mask)
        ids.append(voc_id)
    (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return masks


def write_folder(root: Path, splits=(("train", 4), ("val", 2))) -> dict[str, list[np.ndarray]]:
    out = {}
    for split, n in splits:
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        out[split] = []
        for i, image, mask in _samples(n, split):
            Image.fromarray(image).save(root / split / "images" / f"img{i}.png")
            Image.fromarray(mask, mode="L").save(root / split / "masks" / f"img{i}.png")
            out[split].append(mask)
    return out


# ---------------------------------------------------------------------------------------------------------
# round trips

def test_voc_round_trip(tmp_path):
    masks = write_voc(tmp_path)
    ds = VocSegmentation(tmp_path, "train")
    assert ds.classes == list(VOC_SEG_CLASSES) and len(ds.classes) == 21 and len(ds) == 3 and ds.skipped == {}
    for i, expected in enumerate(masks):
        image, mask = ds[i]
        assert image.dtype == torch.float32 and image.shape == (3, 160, 160)
        assert mask.dtype == torch.int64 and mask.shape == (160, 160)
        np.testing.assert_array_equal(mask.numpy(), expected)


def test_voc_rgb_masks(tmp_path):
    masks = write_voc(tmp_path, n=2)
    path = tmp_path / "SegmentationClass" / "2024_000001.png"
    Image.fromarray(voc_palette()[masks[1]]).save(path)  # drawn in the VOC colours: mapped back to ids
    ds = VocSegmentation(tmp_path, "train")
    np.testing.assert_array_equal(ds[1][1].numpy(), masks[1])
    rgb = voc_palette()[masks[1]]
    rgb[5, 5] = (1, 2, 3)
    Image.fromarray(rgb).save(path)
    with pytest.raises(MobileNetsError) as e:
        VocSegmentation(tmp_path, "train")
    _one_line_error(e, path, "(1, 2, 3)", "not VOC palette colours")


def test_mask_folder_round_trip(tmp_path):
    masks = write_folder(tmp_path)
    ds = MaskFolder(tmp_path, "train")
    assert ds.classes == ["background", "class 1", "class 2", "class 3", "class 4"] and len(ds) == 4
    for i, expected in enumerate(masks["train"]):
        image, mask = ds[i]
        np.testing.assert_array_equal(mask.numpy(), expected)
        raw = torch.from_numpy(ShapesSegmentation("train", num_samples=4).raw(i)[0]).permute(2, 0, 1)
        assert torch.equal((image * 255).round().to(torch.uint8), raw)
    (tmp_path / "classes.txt").write_text("\n".join(["background", *SHAPES_CLASSES]) + "\n")
    assert MaskFolder(tmp_path, "val").classes == ["background", *SHAPES_CLASSES]


def test_mask_folder_class_count_agrees_across_splits(tmp_path):
    masks = write_folder(tmp_path)
    for i, m in enumerate(masks["val"]):  # val without class 4: still 5 classes, from train's masks
        m = np.where(m == 4, 1, m).astype(np.uint8)
        Image.fromarray(m, mode="L").save(tmp_path / "val" / "masks" / f"img{i}.png")
    assert len(MaskFolder(tmp_path, "val").classes) == 5
    # a symlinked directory is never followed: its masks (class 9) do not count
    elsewhere = tmp_path.parent / f"{tmp_path.name}_elsewhere"
    (elsewhere / "masks").mkdir(parents=True)
    Image.fromarray(np.full((8, 8), 9, np.uint8), mode="L").save(elsewhere / "masks" / "x.png")
    os.symlink(elsewhere, tmp_path / "linked")
    os.symlink(elsewhere / "masks", tmp_path / "train" / "images" / "linked_dir.png")
    ds = MaskFolder(tmp_path, "train")
    assert len(ds.classes) == 5 and len(ds) == 4 and ds.skipped == {}


def test_mask_folder_mask_formats(tmp_path):
    masks = write_folder(tmp_path, splits=(("train", 3),))
    d = tmp_path / "train" / "masks"
    _palette_png(masks["train"][0], d / "img0.png")  # palette: indices are the ids
    Image.fromarray(np.repeat(masks["train"][1][..., None], 3, axis=2)).save(d / "img1.png")  # grey RGB
    ds = MaskFolder(tmp_path, "train")
    for i in range(3):
        np.testing.assert_array_equal(ds[i][1].numpy(), masks["train"][i])
    Image.fromarray(voc_palette()[masks["train"][2]]).save(d / "img2.png")  # colour RGB: not class ids
    with pytest.raises(MobileNetsError) as e:
        MaskFolder(tmp_path, "train")
    _one_line_error(e, d / "img2.png", "RGB mask")


# ---------------------------------------------------------------------------------------------------------
# bad input

def test_mask_size_differs(tmp_path, caplog):
    write_folder(tmp_path)
    Image.new("L", (100, 160)).save(tmp_path / "train" / "masks" / "img2.png")
    with caplog.at_level(logging.WARNING, logger="mobilenets"):
        ds = MaskFolder(tmp_path, "train")
    assert len(ds) == 3 and ds.skipped == {"mask size differs from image": 1} and "img2.png" in caplog.text
    with pytest.raises(MobileNetsError) as e:
        MaskFolder(tmp_path, "train", strict=True)
    _one_line_error(e, "img2.png", "100x160", "160x160")


def test_mask_values_out_of_range(tmp_path):
    masks = write_folder(tmp_path)
    (tmp_path / "classes.txt").write_text("background\nrectangle\ncircle\n")  # ids 3 and 4 are out of range
    with pytest.raises(MobileNetsError) as e:
        MaskFolder(tmp_path, "train")
    _one_line_error(e, "masks", "outside the class range 0..2", "3, 4")
    assert len(MaskFolder(tmp_path, "train", classes=["background", *SHAPES_CLASSES])) == 4

    write_voc(tmp_path / "voc", n=2)
    bad = masks["train"][0].copy()
    bad[10:20, 10:20] = 30
    _palette_png(bad, tmp_path / "voc" / "SegmentationClass" / "2024_000000.png")
    with pytest.raises(MobileNetsError) as e:
        VocSegmentation(tmp_path / "voc", "train")
    _one_line_error(e, "2024_000000.png", "0..20", ": 30")


def test_voc_ids_that_leave_the_dataset_are_skipped(tmp_path):
    write_voc(tmp_path / "voc", n=3)
    for sub, ext in (("JPEGImages", "jpg"), ("SegmentationClass", "png")):
        (tmp_path / "voc" / sub / f"2024_000000.{ext}").rename(tmp_path / f"escaped.{ext}")
    ids = tmp_path / "voc" / "ImageSets" / "Segmentation" / "train.txt"
    ids.write_text(ids.read_text().replace("2024_000000", "../../escaped"))
    ds = VocSegmentation(tmp_path / "voc", "train")
    assert len(ds) == 2 and ds.skipped == {"id outside the dataset": 1}
    with pytest.raises(MobileNetsError) as e:
        VocSegmentation(tmp_path / "voc", "train", strict=True)
    _one_line_error(e, "id '../../escaped' is not a plain file name")


def test_image_without_mask(tmp_path, caplog):
    write_folder(tmp_path)
    (tmp_path / "train" / "masks" / "img1.png").unlink()
    with caplog.at_level(logging.WARNING, logger="mobilenets"):
        ds = MaskFolder(tmp_path, "train")
    assert len(ds) == 3 and ds.skipped == {"image without mask": 1} and "img1.png" in caplog.text
    with pytest.raises(MobileNetsError) as e:
        MaskFolder(tmp_path, "train", strict=True)
    _one_line_error(e, "img1.png", "no mask")

    write_voc(tmp_path / "voc", n=2)
    (tmp_path / "voc" / "SegmentationClass" / "2024_000000.png").unlink()
    ds = VocSegmentation(tmp_path / "voc", "train")
    assert len(ds) == 1 and ds.skipped == {"image without mask": 1}


def test_unreadable_truncated_and_bomb(tmp_path, monkeypatch):
    write_folder(tmp_path, splits=(("train", 4),))
    d = tmp_path / "train"
    (d / "images" / "img0.png").write_bytes(b"garbage")
    data = (d / "masks" / "img1.png").read_bytes()
    (d / "masks" / "img1.png").write_bytes(data[: len(data) // 2])  # decoded when built: caught then
    data = (d / "images" / "img2.png").read_bytes()
    (d / "images" / "img2.png").write_bytes(data[: len(data) // 2])  # the header reads: caught when loaded
    ds = MaskFolder(tmp_path, "train")
    assert len(ds) == 2 and ds.skipped == {"unreadable image": 1, "unreadable mask": 1}
    image, mask = ds[0]  # img2 fails to decode: img3 stands in
    assert ds.skipped["unreadable image"] == 2 and image.shape == (3, 160, 160)
    with pytest.raises(MobileNetsError) as e:
        MaskFolder(tmp_path, "train", strict=True)
    _one_line_error(e, "img0.png", "unreadable image")

    write_voc(tmp_path / "voc", n=2)
    Image.new("RGB", (400, 400)).save(tmp_path / "voc" / "JPEGImages" / "2024_000001.jpg")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40_000)  # 400x400 is over twice that: a decompression bomb
    ds = VocSegmentation(tmp_path / "voc", "train")
    assert len(ds) == 1 and ds.skipped == {"decompression bomb": 1}


def test_empty_after_skipping(tmp_path):
    write_folder(tmp_path, splits=(("train", 2),))
    for p in (tmp_path / "train" / "masks").iterdir():
        p.unlink()
    with pytest.raises(MobileNetsError) as e:
        MaskFolder(tmp_path, "train", classes=["background", "a"])
    _one_line_error(e, "no usable image/mask pairs", "2 image without mask")
    with pytest.raises(MobileNetsError) as e:
        MaskFolder(tmp_path, "nope")
    _one_line_error(e, "no such directory")


# ---------------------------------------------------------------------------------------------------------
# transforms

def test_flip_moves_image_and_mask_together():
    image, mask = ShapesSegmentation("val", num_samples=1).raw(0)
    img, m = v2.RandomHorizontalFlip(p=1.0)(tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1)),
                                            tv_tensors.Mask(torch.from_numpy(mask)))
    assert torch.equal(m, torch.from_numpy(mask).flip(-1))
    assert torch.equal(img, torch.from_numpy(image).permute(2, 0, 1).flip(-1))


def _interior(mask: torch.Tensor) -> torch.Tensor:
    """Pixels whose 3x3 neighbourhood has one class (away from resampled edges)."""
    m = mask.float()[None, None]
    same = (torch.nn.functional.max_pool2d(m, 3, 1, 1) == torch.nn.functional.max_pool2d(-m, 3, 1, 1).neg())
    return same[0, 0]


def test_train_transform_keeps_image_and_mask_aligned():
    # grey images whose level encodes the class: colour jitter is monotone on grey, so if image and mask stay
    # aligned, the mean level of each class's pixels still rises with the class id
    torch.manual_seed(0)
    gen = ShapesSegmentation("train", num_samples=12)
    tf = segmentation_train_transform(96, mean=(0.5,) * 3, std=(0.5,) * 3)
    for i in range(len(gen)):
        _, mask = gen.raw(i)
        grey = (20 + 30 * mask).astype(np.uint8)
        img, m = tf(tv_tensors.Image(torch.from_numpy(np.repeat(grey[None], 3, 0))),
                    tv_tensors.Mask(torch.from_numpy(mask)))
        assert img.shape == (3, 96, 96) and m.shape == (96, 96) and m.dtype == torch.int64
        assert set(m.unique().tolist()) <= {0, 1, 2, 3, 4, 255}
        level = img[0] * 0.5 + 0.5
        inside = _interior(m)
        means = [level[(m == c) & inside].mean() for c in range(5) if ((m == c) & inside).sum() > 4]
        assert all(a < b for a, b in zip(means, means[1:])), (i, means)


def test_train_transform_pads_mask_with_ignore():
    _, mask = ShapesSegmentation("train", num_samples=1).raw(0)
    img = tv_tensors.Image(torch.zeros(3, 160, 160, dtype=torch.uint8))
    tf = segmentation_train_transform(96, mean=MEAN, std=STD, scale=(0.5, 0.5))  # 160 -> 48, padded to 96
    _, m = tf(img, tv_tensors.Mask(torch.from_numpy(mask)))
    assert (m == 255).float().mean() == pytest.approx(1 - (48 * 48) / (96 * 96))


def test_eval_transform_resizes_mask_nearest():
    _, mask = ShapesSegmentation("val", num_samples=1).raw(0)
    img = tv_tensors.Image(torch.zeros(3, 160, 160, dtype=torch.uint8))
    out, m = segmentation_eval_transform(64, mean=MEAN, std=STD)(img, tv_tensors.Mask(torch.from_numpy(mask)))
    assert out.shape == (3, 64, 64) and m.shape == (64, 64) and m.dtype == torch.int64
    assert set(m.unique().tolist()) <= set(np.unique(mask).tolist())  # no interpolated ids


# ---------------------------------------------------------------------------------------------------------
# the entry point

def test_load_segmentation_dataset_layouts(tmp_path):
    write_voc(tmp_path / "voc")
    ds = load_segmentation_dataset(tmp_path / "voc", "train", image_size=64, mean=MEAN, std=STD, train=False)
    image, mask = ds[0]
    assert isinstance(ds, VocSegmentation) and image.shape == (3, 64, 64) and mask.shape == (64, 64)
    write_folder(tmp_path / "folder")
    ds = load_segmentation_dataset(tmp_path / "folder", "val", image_size=64, mean=MEAN, std=STD, train=True)
    assert isinstance(ds, MaskFolder) and ds[1][0].shape == (3, 64, 64) and len(ds.classes) == 5
    with pytest.raises(MobileNetsError) as e:
        load_segmentation_dataset(tmp_path / "folder", "test", image_size=64, mean=MEAN, std=STD)
    _one_line_error(e, "Pascal VOC", "test/images/")
    with pytest.raises(MobileNetsError) as e:
        load_segmentation_dataset(tmp_path / "voc", "val", image_size=64, mean=MEAN, std=STD)
    _one_line_error(e, "val.txt", "splits here: train")
