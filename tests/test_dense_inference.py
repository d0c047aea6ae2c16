"""Detection and segmentation inference (boxes / class maps at the original image size, output files named
after the input's base name only) and evaluation reports (COCO APs, mIoU, their JSON and PNGs)."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import mobilenets
from mobilenets.checkpoint import CheckpointMeta, save_checkpoint
from mobilenets.cli import detection as cli_detection
from mobilenets.cli import segmentation as cli_segmentation
from mobilenets.detection.data import detection_eval_transform
from mobilenets.detection.evaluate import evaluate_detector, evaluate_detector_model
from mobilenets.detection.inference import derived_output_paths, detect, detect_images
from mobilenets.errors import MobileNetsError
from mobilenets.preprocess import Preprocessing
from mobilenets.segmentation.data import IGNORE_INDEX, segmentation_eval_transform, voc_palette
from mobilenets.segmentation.evaluate import evaluate_segmenter, evaluate_segmenter_model
from mobilenets.segmentation.inference import class_png, segment, segment_images, upsample_argmax
from mobilenets.shapes import SHAPES_CLASSES, ShapesDetection, ShapesSegmentation

SIZE = 96
PRE = Preprocessing(SIZE, SIZE, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
SEG_CLASSES = ["background", *SHAPES_CLASSES]


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    return mobilenets.create_model("ssdlite_mobilenet_v3_small", width=0.35, num_classes=len(SHAPES_CLASSES) + 1,
                                   image_size=SIZE).eval()


@pytest.fixture(scope="module")
def segmenter():
    torch.manual_seed(0)
    return mobilenets.create_model("lraspp_mobilenet_v3_small", width=0.35, num_classes=len(SEG_CLASSES)).eval()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, detector, segmenter):
    """A detection and a segmentation checkpoint of the shapes classes, as training saves them."""
    folder = tmp_path_factory.mktemp("checkpoints")
    out = {}
    for key, model, names in (("det", detector, list(SHAPES_CLASSES)), ("seg", segmenter, SEG_CLASSES)):
        task = "detection" if key == "det" else "segmentation"
        out[key] = save_checkpoint(model, folder / f"{key}.safetensors", CheckpointMeta(
            config=model.config, class_names=names, preprocessing=PRE, extra={"task": task}))
    return out


def photo(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


# ---------------------------------------------------------------------------------------------------------
# detection inference

def test_boxes_are_scaled_back_to_the_original_image(detector, monkeypatch):
    seen = {}

    def known(cls_logits, box_regression, image_sizes=None, *, input_size=None):
        seen["input_size"] = input_size
        n = cls_logits.shape[0]
        return [{"boxes": torch.tensor([[10.0, 20.0, 50.0, 60.0], [0.0, 0.0, 96.0, 96.0]]),
                 "scores": torch.tensor([0.9, 0.1]), "labels": torch.tensor([2, 1])}] * n

    monkeypatch.setattr(detector, "postprocess", known)
    wide, tall = photo(192, 48), photo(30, 300)
    r_wide, r_tall = detect_images(detector, [wide, tall], preprocessing=PRE, class_names=SHAPES_CLASSES)
    assert seen["input_size"] == SIZE
    # 96x96 input -> 192 wide, 48 high: x doubles, y halves; the 0.1-score box is below the 0.3 threshold
    assert r_wide.size == (48, 192)
    assert r_wide.boxes == [("circle", pytest.approx(0.9), (20.0, 10.0, 100.0, 30.0))]
    assert r_tall.boxes[0].box == pytest.approx((10 * 30 / 96, 20 * 300 / 96, 50 * 30 / 96, 60 * 300 / 96))
    everything = detect_images(detector, [wide], preprocessing=PRE, class_names=SHAPES_CLASSES, score_threshold=0)
    assert everything[0].boxes[1] == ("rectangle", pytest.approx(0.1), (0.0, 0.0, 192.0, 48.0))


def test_real_detector_boxes_lie_inside_the_original_image(detector):
    (r,) = detect_images(detector, [photo(150, 70)], preprocessing=PRE, class_names=SHAPES_CLASSES,
                         score_threshold=0.0)
    assert r.boxes, "an untrained detector still scores some boxes above 0"
    boxes = np.array([b.box for b in r.boxes])
    assert (boxes[:, [0, 2]] >= 0).all() and (boxes[:, [0, 2]] <= 150).all()
    assert (boxes[:, [1, 3]] >= 0).all() and (boxes[:, [1, 3]] <= 70).all()
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    assert {b.name for b in r.boxes} <= set(SHAPES_CLASSES)
    scores = [b.score for b in r.boxes]
    assert scores == sorted(scores, reverse=True)


def test_bad_score_threshold_and_class_names_are_one_line_errors(detector):
    with pytest.raises(MobileNetsError, match="score_threshold"):
        detect_images(detector, [photo(50, 50)], preprocessing=PRE, class_names=SHAPES_CLASSES, score_threshold=1.5)
    with pytest.raises(MobileNetsError, match="3 class names for a detector with 4"):
        detect_images(detector, [photo(50, 50)], preprocessing=PRE, class_names=SHAPES_CLASSES[:3])


def test_outputs_take_only_the_input_base_name(tmp_path):
    out = tmp_path / "out"
    paths = derived_output_paths(["../x/../img.png", "/etc/passwd", "a/img.jpg", "b/IMG.png", ".."], out,
                                 "_detections.png")
    assert paths == [out / "img_detections.png", out / "passwd_detections.png", out / "img-2_detections.png",
                     out / "IMG-3_detections.png", out / "image_detections.png"]


def test_unreadable_image_is_an_error_naming_it(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    good = tmp_path / "good.png"
    photo(40, 30).save(good)
    # the images are read before the weights: the (missing) checkpoint is never reached
    for run in (lambda: detect(tmp_path / "missing.safetensors", [good, bad], output_dir=tmp_path),
                lambda: segment(tmp_path / "missing.safetensors", [good, bad], output_dir=tmp_path)):
        with pytest.raises(MobileNetsError, match="broken.png") as e:
            run()
        assert "\n" not in str(e.value)
    with pytest.raises(MobileNetsError, match="not a folder"):
        detect(tmp_path / "missing.safetensors", [good], output_dir=good)


def test_detect_writes_the_annotated_png_under_the_input_base_name_only(checkpoints, tmp_path, monkeypatch):
    (tmp_path / "x").mkdir()
    (tmp_path / "work").mkdir()
    photo(120, 80).save(tmp_path / "img.png")
    monkeypatch.chdir(tmp_path / "work")
    before = set(tmp_path.rglob("*"))
    (r,) = detect(checkpoints["det"], ["../x/../img.png"], score_threshold=0.0, output_dir=tmp_path / "out")
    assert r.image == "../x/../img.png" and r.size == (80, 120) and r.boxes
    assert r.annotated == tmp_path / "out" / "img_detections.png"
    assert set(tmp_path.rglob("*")) - before == {tmp_path / "out", r.annotated}
    with Image.open(r.annotated) as im:
        assert im.size == (120, 80)
        assert not np.array_equal(np.array(im.convert("RGB")), np.array(photo(120, 80)))  # boxes drawn
    (r,) = detect(checkpoints["det"], [tmp_path / "img.png"])  # default: the current folder
    assert r.annotated.resolve() == tmp_path / "work" / "img_detections.png"


def test_a_checkpoint_of_another_task_is_a_clean_error(checkpoints, tmp_path):
    photo(40, 40).save(tmp_path / "a.png")
    with pytest.raises(MobileNetsError, match="segmentation checkpoint .* not a detector"):
        detect(checkpoints["seg"], [tmp_path / "a.png"], output_dir=tmp_path)
    with pytest.raises(MobileNetsError, match="detection checkpoint .* not a segmentation model"):
        segment(checkpoints["det"], [tmp_path / "a.png"], output_dir=tmp_path)


# ---------------------------------------------------------------------------------------------------------
# segmentation inference

def test_class_map_has_the_original_size_and_shares_sum_to_one(segmenter, tmp_path):
    results = segment_images(segmenter, [photo(150, 70), photo(33, 120, seed=1)], preprocessing=PRE,
                             class_names=SEG_CLASSES)
    for r, (h, w) in zip(results, [(70, 150), (120, 33)]):
        assert r.class_map.shape == (h, w) and r.class_map.dtype == np.uint8
        assert set(r.shares) <= set(SEG_CLASSES)
        assert sum(r.shares.values()) == pytest.approx(1.0)
        counts = np.bincount(r.class_map.ravel(), minlength=len(SEG_CLASSES))
        assert r.shares == {SEG_CLASSES[i]: pytest.approx(counts[i] / (h * w)) for i in np.flatnonzero(counts)}
        assert list(r.shares.values()) == sorted(r.shares.values(), reverse=True)


def test_class_png_is_a_palette_png_of_class_ids(tmp_path):
    class_map = np.random.default_rng(0).integers(0, 21, (37, 53)).astype(np.uint8)
    path = tmp_path / "c.png"
    class_png(class_map).save(path)
    with Image.open(path) as im:
        assert im.mode == "P"
        np.testing.assert_array_equal(np.array(im), class_map)
        assert np.array(im.getpalette()[:63]).reshape(21, 3).tolist() == voc_palette()[:21].tolist()


def test_segment_writes_class_and_overlay_pngs(checkpoints, tmp_path):
    photo(70, 50).save(tmp_path / "pic.jpg")
    (tmp_path / "sub").mkdir()
    (r,) = segment(checkpoints["seg"], [tmp_path / "sub" / ".." / "pic.jpg"], output_dir=tmp_path / "o")
    assert (r.classes_png, r.overlay_png) == (tmp_path / "o" / "pic_classes.png", tmp_path / "o" / "pic_overlay.png")
    with Image.open(r.classes_png) as im:
        assert im.mode == "P" and im.size == (70, 50)
        np.testing.assert_array_equal(np.array(im), r.class_map)
    with Image.open(r.overlay_png) as im:
        assert im.width >= 70 and im.height > 50  # the legend of the classes present lies below the image


def test_banded_upsampling_matches_interpolate():
    logits = torch.randn(5, 12, 9)
    whole = upsample_argmax(logits, (101, 67))
    banded = upsample_argmax(logits, (101, 67), max_elements=5 * 67 * 7)  # bands of 7 rows
    assert whole.shape == (101, 67)
    assert (whole == banded).float().mean() > 0.999  # the same sample positions (float rounding aside)


# ---------------------------------------------------------------------------------------------------------
# detection evaluation

class OracleDetector(nn.Module):
    """Returns the dataset's own boxes, in order, as detections (score 1): a perfect detector."""

    def __init__(self, dataset):
        super().__init__()
        self.config = SimpleNamespace(num_classes=len(dataset.classes) + 1)
        self.targets = [dataset[i][1] for i in range(len(dataset))]
        self.next = 0

    def forward(self, x):
        return x, x

    def postprocess(self, cls_logits, box_regression, image_sizes=None, *, input_size=None):
        out = []
        for _ in range(len(cls_logits)):
            t = self.targets[self.next]
            self.next += 1
            boxes = torch.as_tensor(t["boxes"]).clone()
            out.append({"boxes": boxes, "scores": torch.ones(len(boxes)), "labels": t["labels"]})
        return out


def shapes_detection(n: int = 8) -> ShapesDetection:
    return ShapesDetection("val", image_size=SIZE, num_samples=n,
                           transform=detection_eval_transform(SIZE, mean=PRE.mean, std=PRE.std))


def test_detector_evaluation_writes_json_and_png(detector, tmp_path):
    meta = CheckpointMeta(config=detector.config, class_names=list(SHAPES_CLASSES), preprocessing=PRE)
    r = evaluate_detector_model(detector, meta, shapes_detection(), batch_size=4, output_dir=tmp_path / "eval",
                                name="tiny.safetensors")
    assert r.count == 8
    assert list(r.per_class) == list(SHAPES_CLASSES)
    for v in (r.ap, r.ap50, r.ap75, r.ap_small, r.ap_medium, r.ap_large, *r.per_class.values()):
        assert v == -1.0 or 0.0 <= v <= 1.0
    saved = json.loads(r.metrics_json.read_text())
    assert r.metrics_json == tmp_path / "eval" / "detection_metrics.json"
    assert saved["images"] == 8 and saved["ap"] == r.ap and saved["per_class"] == r.per_class
    with Image.open(r.png) as im:
        assert r.png.name == "detections_val.png" and im.format == "PNG" and im.width > 600


def test_perfect_detector_scores_ap_one(tmp_path):
    data = shapes_detection()
    meta = CheckpointMeta(config=None, class_names=list(SHAPES_CLASSES), preprocessing=PRE)
    r = evaluate_detector_model(OracleDetector(data), meta, data, batch_size=3, output_dir=tmp_path)
    assert r.ap == pytest.approx(1.0) and r.ap50 == pytest.approx(1.0)
    present = {SHAPES_CLASSES[int(label) - 1] for i in range(len(data)) for label in data[i][1]["labels"]}
    assert {c for c, v in r.per_class.items() if v == pytest.approx(1.0)} == present


def test_detector_evaluation_refuses_other_classes(detector, tmp_path):
    meta = CheckpointMeta(config=detector.config, class_names=["a", "b", "c", "d"], preprocessing=PRE)
    with pytest.raises(MobileNetsError, match="differ from the checkpoint's"):
        evaluate_detector_model(detector, meta, shapes_detection(2), output_dir=tmp_path)


# ---------------------------------------------------------------------------------------------------------
# segmentation evaluation

class MaskCoded(torch.utils.data.Dataset):
    """Images whose first channel holds their mask's class id / 10: the oracle below reads the mask back.
    A border of ignore (255) pixels, predicted as background, must not count."""

    classes = SEG_CLASSES

    def __init__(self, n: int = 4):
        rng = np.random.default_rng(0)
        self.masks = []
        for _ in range(n):
            m = np.zeros((40, 40), np.int64)
            for c in range(1, len(SEG_CLASSES)):
                y, x = rng.integers(0, 30, 2)
                m[y:y + 10, x:x + 10] = c
            m[:, :2] = IGNORE_INDEX
            self.masks.append(torch.from_numpy(m))

    def __len__(self):
        return len(self.masks)

    def __getitem__(self, i):
        m = self.masks[i]
        image = torch.zeros(3, *m.shape)
        image[0] = torch.where(m == IGNORE_INDEX, 0, m).float() / 10
        return image, m


class OracleSegmenter(nn.Module):
    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(num_classes=len(SEG_CLASSES))

    def forward(self, x):
        ids = (x[:, 0] * 10).round().long()
        return nn.functional.one_hot(ids, len(SEG_CLASSES)).permute(0, 3, 1, 2).float()


def test_perfect_segmenter_scores_miou_one(tmp_path):
    data = MaskCoded()
    meta = CheckpointMeta(config=None, class_names=SEG_CLASSES, preprocessing=PRE)
    r = evaluate_segmenter_model(OracleSegmenter(), meta, data, batch_size=3, output_dir=tmp_path, name="oracle")
    assert r.miou == 1.0 and r.pixel_acc == 1.0 and r.count == 4
    labelled = sum(int((m != IGNORE_INDEX).sum()) for m in data.masks)
    assert r.confusion.sum() == labelled and np.count_nonzero(r.confusion - np.diag(np.diag(r.confusion))) == 0
    assert set(r.iou) == set(SEG_CLASSES)
    for png in (r.confusion_png, r.png):
        with Image.open(png) as im:
            assert im.format == "PNG"
    assert {r.confusion_png.name, r.png.name} == {"segmentation_confusion.png", "segmentation_val.png"}
    assert json.loads(r.metrics_json.read_text())["miou"] == 1.0


def test_segmenter_evaluation_on_shapes(segmenter, tmp_path):
    data = ShapesSegmentation("val", image_size=SIZE, num_samples=4,
                              transform=segmentation_eval_transform(SIZE, mean=PRE.mean, std=PRE.std))
    meta = CheckpointMeta(config=segmenter.config, class_names=SEG_CLASSES, preprocessing=PRE)
    r = evaluate_segmenter_model(segmenter, meta, data, batch_size=2, output_dir=tmp_path)
    assert 0.0 <= r.miou <= 1.0 and 0.0 <= r.pixel_acc <= 1.0
    assert r.confusion.sum() == 4 * SIZE * SIZE  # the shapes set has no ignore pixels
    assert r.pixel_acc == pytest.approx(np.trace(r.confusion) / r.confusion.sum())
    saved = json.loads(r.metrics_json.read_text())
    assert saved["confusion"] == r.confusion.tolist()


def test_evaluation_wrappers_write_next_to_the_checkpoint(checkpoints, detector, tmp_path):
    r = evaluate_detector(checkpoints["det"], batch_size=50)  # the built-in shapes val split, 200 images
    assert r.count == 200 and r.metrics_json == checkpoints["det"].parent / "detection_metrics.json"
    assert r.png.is_file() and list(r.per_class) == list(SHAPES_CLASSES)
    s = evaluate_segmenter(checkpoints["seg"], batch_size=50)
    assert s.count == 200 and s.confusion.sum() == 200 * SIZE * SIZE
    assert {p.parent for p in (s.png, s.confusion_png, s.metrics_json)} == {checkpoints["seg"].parent}
    with pytest.raises(MobileNetsError, match="not a detector"):
        evaluate_detector(checkpoints["seg"])
    other = save_checkpoint(detector, tmp_path / "voc.safetensors", CheckpointMeta(
        config=detector.config, class_names=list("abcd"), preprocessing=PRE, extra={"task": "detection"}))
    with pytest.raises(MobileNetsError, match=r"not a shapes model .*--data"):
        evaluate_detector(other)


# ---------------------------------------------------------------------------------------------------------
# the commands

def run_handler(module, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mobilenets")
    module.add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_detect_and_segment_commands_print_their_results(checkpoints, tmp_path, capsys):
    photo(100, 60).save(tmp_path / "a.png")
    assert run_handler(cli_detection, ["detect", "--weights", str(checkpoints["det"]), str(tmp_path / "a.png"),
                                       "--score-threshold", "0", "--output-dir", str(tmp_path / "d")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(tmp_path / "a.png")
    assert lines[-1] == f"  annotated: {tmp_path / 'd' / 'a_detections.png'}"
    assert len(lines) > 2 and all(
        re.fullmatch(r"  \d\.\d{3}  (rectangle|circle|triangle|ellipse)  \(\d+\.\d, \d+\.\d, \d+\.\d, \d+\.\d\)", line)
        for line in lines[1:-1])
    assert run_handler(cli_segmentation, ["segment", "--weights", str(checkpoints["seg"]), str(tmp_path / "a.png"),
                                          "--output-dir", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out.splitlines()
    shares = [line.split() for line in out[3:] if not line.lstrip().startswith(("classes:", "overlay:"))]
    assert out[1].split() == ["class", "pixels", "%"] and sum(float(row[-1]) for row in shares) == pytest.approx(100, abs=0.05)
    assert out[-1] == f"  overlay: {tmp_path / 's' / 'a_overlay.png'}"


def test_detect_command_on_a_bad_image_is_one_line(checkpoints, tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    r = subprocess.run([sys.executable, "-m", "mobilenets", "detect", "--weights", str(checkpoints["det"]),
                        str(tmp_path / "notes.png"), "--output-dir", str(tmp_path)],
                       check=False, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and "notes.png" in r.stderr and r.stderr.startswith("mobilenets detect: error:")
