"""Export of detectors and segmenters: the tensor-only forward in each format, verified in its runtime (raw
outputs, detections through the numpy post-processing with the default boxes stored in the file, per-pixel
argmax), failures that leave no file, the CLI, and the benchmark's dense rows."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import mobilenets
from mobilenets.checkpoint import CheckpointMeta, save_checkpoint
from mobilenets.detection.data import load_detection_dataset
from mobilenets.detection.postprocess import candidates_numpy, detect_numpy
from mobilenets.detection.recipes import resolve_recipe
from mobilenets.errors import MobileNetsError
from mobilenets.export import dense, export_model, load_artifact
from mobilenets.export.bench import calibrate_batchnorm
from mobilenets.export.runtimes import read_metadata
from mobilenets.preprocess import Preprocessing
from mobilenets.shapes import SHAPES_CLASSES

SIZE = 96
CHECK = 8  # val images per verification (the default is 32; fewer keep the tests quick)
DET_PRE = Preprocessing(SIZE, SIZE, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
SEG_PRE = Preprocessing(SIZE, SIZE, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _calibrated(model, pre: Preprocessing):
    """Random weights with batch-norm statistics from shapes images: outputs of a trained network's scale (a
    plain random init gives ~1e-13 logits, where every score ties)."""
    ds = load_detection_dataset(None, "train", image_size=SIZE, mean=pre.mean, std=pre.std, train=False)
    return calibrate_batchnorm(model, torch.stack([ds[i][0] for i in range(16)]).numpy())


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    model = mobilenets.create_model("ssdlite_mobilenet_v3_small", width=0.35, num_classes=len(SHAPES_CLASSES) + 1,
                                    image_size=SIZE, config="torchvision")
    return _calibrated(model, DET_PRE)


@pytest.fixture(scope="module")
def segmenter():
    torch.manual_seed(0)
    model = mobilenets.create_model("lraspp_mobilenet_v3_small", width=0.35, num_classes=len(SHAPES_CLASSES) + 1)
    return _calibrated(model, SEG_PRE)


def _val(pre: Preprocessing, n: int = 4, task: str = "detection") -> np.ndarray:
    return dense.load_val_images(task, None, pre, n).images


def _check_detector_file(detector, path, fmt, size=SIZE):
    """The file's outputs + the default boxes stored in it + numpy post-processing = PyTorch's detections."""
    art = load_artifact(path, fmt)
    assert art.num_outputs == 2 and art.metadata["task"] == "detection"
    np.testing.assert_array_equal(dense.default_boxes_from(art.metadata), detector.default_boxes(size).numpy())
    x = dense.load_val_images("detection", None, DET_PRE.with_size(size), 12).images[-4:]  # unseen by the check
    cls, box = art(x)
    with torch.no_grad():
        ref = detector.postprocess(*detector(torch.from_numpy(x)), input_size=size)
    boxes = dense.default_boxes_from(art.metadata)
    got = detect_numpy((cls, box), boxes, art.metadata["postprocess"], size)
    with torch.no_grad():
        ref_out = [t.numpy() for t in detector(torch.from_numpy(x))]
    candidates = tuple(list(zip(*candidates_numpy(*o, boxes, detector.recipe, size))) for o in (ref_out, (cls, box)))
    agreement = dense.match_detections(ref, got, detector.recipe, box_tol=dense.BOX_RTOL * size, candidates=candidates)
    assert agreement.unexplained == 0 and agreement.reference > 0
    assert agreement.matched >= 0.99 * agreement.reference
    assert [len(d["scores"]) for d in dense.detect_artifact(art, x)] == [len(d["scores"]) for d in got]


def _check_detector_report(report, fmt):
    assert report.task == "detection" and report.format == fmt
    assert [o["output"] for o in report.outputs] == ["cls_logits", "box_regression"]
    assert all(o["max_abs_diff"] <= o["bound"] for o in report.outputs)
    det = report.detections
    assert det["images"] == CHECK and det["unexplained"] == 0 and det["reference"] > 0
    assert det["max_box_diff"] <= det["box_tol"] and det["max_score_diff"] <= dense.SCORE_TOL
    assert "detections on shapes:val" in report.summary()


def _check_segmenter_report(report, fmt):
    assert report.task == "segmentation" and report.format == fmt
    (out,) = report.outputs
    assert out["output"] == "logits" and out["max_abs_diff"] <= out["bound"]
    assert report.pixel_agreement >= dense.MIN_PIXEL_AGREEMENT
    assert "of pixels equal to PyTorch's" in report.summary()


# ------------------------------------------------------------------------------------------ round trips

def test_onnx_detector_round_trip(detector, tmp_path):
    pytest.importorskip("onnxruntime")
    report = export_model(detector, tmp_path / "det.onnx", format="onnx", check_images=CHECK)
    _check_detector_report(report, "onnx")
    assert report.input_shape == (-1, 3, SIZE, SIZE)
    _check_detector_file(detector, tmp_path / "det.onnx", "onnx")
    meta = read_metadata(tmp_path / "det.onnx", "onnx")
    assert meta["postprocess"] == "torchvision" and meta["input_size"] == [SIZE, SIZE]
    assert meta["outputs"] == ["cls_logits", "box_regression"] and meta["num_classes"] == len(SHAPES_CLASSES) + 1
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "det.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["cls_logits", "box_regression"]


def test_onnx_segmenter_round_trip(segmenter, tmp_path):
    pytest.importorskip("onnxruntime")
    report = export_model(segmenter, tmp_path / "seg.onnx", format="onnx", input_size=SIZE, check_images=CHECK)
    _check_segmenter_report(report, "onnx")
    art = load_artifact(tmp_path / "seg.onnx", "onnx")
    assert art.num_outputs == 1 and art.metadata["task"] == "segmentation"
    assert "default_boxes" not in art.metadata
    x = _val(SEG_PRE, 3, "segmentation")
    out = art(x)
    assert isinstance(out, np.ndarray) and out.shape == (3, len(SHAPES_CLASSES) + 1, SIZE, SIZE)


@pytest.mark.slow
@pytest.mark.parametrize("fmt,module", [("tflite", "litert_torch"), ("executorch", "executorch.runtime"),
                                        ("torchscript", "torch")])
def test_mobile_formats_detector(detector, fmt, module, tmp_path):
    pytest.importorskip(module)
    report = export_model(detector, tmp_path / f"det.{fmt}", format=fmt, check_images=CHECK)
    _check_detector_report(report, fmt)
    _check_detector_file(detector, tmp_path / f"det.{fmt}", fmt)
    assert read_metadata(tmp_path / f"det.{fmt}", fmt)["postprocess"] == "torchvision"


@pytest.mark.slow
@pytest.mark.parametrize("fmt,module", [("tflite", "litert_torch"), ("executorch", "executorch.runtime")])
def test_mobile_formats_segmenter(segmenter, fmt, module, tmp_path):
    pytest.importorskip(module)
    report = export_model(segmenter, tmp_path / f"seg.{fmt}", format=fmt, input_size=SIZE, check_images=CHECK)
    _check_segmenter_report(report, fmt)
    assert load_artifact(tmp_path / f"seg.{fmt}", fmt).metadata["task"] == "segmentation"


def test_detector_at_another_input_size_gets_that_sizes_default_boxes(detector, tmp_path):
    """Configured for 96 px, exported at 128: the default boxes are recomputed for 128 and verified."""
    pytest.importorskip("onnxruntime")
    report = export_model(detector, tmp_path / "det128.onnx", format="onnx", input_size=128, check_images=CHECK)
    _check_detector_report(report, "onnx")
    boxes = dense.default_boxes_from(load_artifact(tmp_path / "det128.onnx", "onnx").metadata)
    assert len(boxes) == len(detector.default_boxes(128)) != len(detector.default_boxes(SIZE))
    _check_detector_file(detector, tmp_path / "det128.onnx", "onnx", size=128)


# ----------------------------------------------------------------------------------------------- failures

def test_perturbed_outputs_fail_the_export_and_write_nothing(detector, tmp_path, monkeypatch):
    from mobilenets.export import core

    real = core.load_artifact

    def perturbed(path, fmt, **kw):  # a runtime whose box regressions are off by 1% of their scale
        art = real(path, fmt, **kw)
        run = art._run

        def wrong(x):
            cls, box = run(x)
            return [cls, box + 0.01 * np.abs(box).max()]

        art._run = wrong
        return art

    monkeypatch.setattr(core, "load_artifact", perturbed)
    with pytest.raises(MobileNetsError, match="check failed: output box_regression"):
        export_model(detector, tmp_path / "det.onnx", format="onnx", check_images=CHECK)
    assert list(tmp_path.iterdir()) == []


def test_wrong_default_boxes_in_the_file_fail_the_export(detector, tmp_path, monkeypatch):
    """Outputs right, but the boxes stored in the file shifted by a pixel: the detection check refuses it."""
    import base64
    import json

    real = dense.metadata_document

    def shifted(*args, **kw):
        doc = json.loads(real(*args, **kw))
        boxes = dense.default_boxes_from(doc) + np.float32(1.0)
        doc["default_boxes"]["data"] = base64.b64encode(boxes.astype("<f4").tobytes()).decode()
        return json.dumps(doc)

    monkeypatch.setattr(dense, "metadata_document", shifted)
    with pytest.raises(MobileNetsError, match="default boxes stored in the file"):
        export_model(detector, tmp_path / "det.pt", format="torchscript", check_images=CHECK)
    assert list(tmp_path.iterdir()) == []


def test_bad_requests_are_one_line_errors(detector, segmenter, tmp_path):
    with pytest.raises(MobileNetsError, match="int8 export is available for classifiers only"):
        export_model(detector, tmp_path / "d.onnx", format="onnx", int8=True, calib="digits")
    with pytest.raises(MobileNetsError, match="int8 export is available for classifiers only"):
        export_model(segmenter, tmp_path / "s.onnx", format="onnx", int8=True, calib="digits")
    with pytest.raises(MobileNetsError, match="no such directory"):
        export_model(detector, tmp_path / "d.onnx", format="onnx", eval_data=tmp_path / "nope")
    with pytest.raises(MobileNetsError, match="check_images"):
        export_model(detector, tmp_path / "d.onnx", format="onnx", check_images=0)
    wide = mobilenets.create_model("ssdlite_mobilenet_v3_small", width=0.35, num_classes=3, image_size=(96, 128))
    with pytest.raises(MobileNetsError, match="exports are square"):
        export_model(wide, tmp_path / "d.onnx", format="onnx")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------- matching

def _dets(rows):
    rows = np.asarray(rows, dtype=np.float32).reshape(-1, 6)
    return {"boxes": rows[:, :4], "scores": rows[:, 4], "labels": rows[:, 5].astype(np.int64)}


def _candidates(*dets):
    """Every detection of ``dets`` as a candidate (a default box with that decoded box and class score)."""
    boxes = np.concatenate([d["boxes"] for d in dets])
    scores = np.zeros((len(boxes), 4), np.float32)
    labels, values = np.concatenate([d["labels"] for d in dets]), np.concatenate([d["scores"] for d in dets])
    scores[np.arange(len(boxes)), labels - 1] = values
    return [(boxes, scores)]


def test_match_detections_tells_ties_from_real_differences():
    recipe = resolve_recipe("torchvision")
    a = _dets([[0, 0, 10, 10, 0.9, 1], [20, 20, 40, 40, 0.5, 2], [50, 50, 60, 60, 0.00100001, 1]])
    cands = (_candidates(a), _candidates(a))
    # order swapped, the candidate at the score threshold not kept: two matches and one tie
    b = _dets([[20, 20, 40, 40, 0.5, 2], [0, 0, 10, 10, 0.9, 1]])
    m = dense.match_detections([a], [b], recipe, box_tol=0.01, candidates=cands)
    assert (m.matched, m.unexplained, m.ties) == (2, 0, {"score threshold": 1})
    # NMS kept the other one of two overlapping boxes whose scores tie: a tie on both sides
    c = _dets([[1, 0, 11, 10, 0.90001, 1], [20, 20, 40, 40, 0.5, 2], [50, 50, 60, 60, 0.00100001, 1]])
    m = dense.match_detections([a], [c], recipe, box_tol=0.01, candidates=(_candidates(a, c), _candidates(a, c)))
    assert (m.matched, m.unexplained, m.ties) == (2, 0, {"NMS tie": 2})
    # a confident detection missing, or its label changed: not a tie
    for other in (_dets([[20, 20, 40, 40, 0.5, 2]]), _dets([[0, 0, 10, 10, 0.9, 2], [20, 20, 40, 40, 0.5, 2]])):
        m = dense.match_detections([a], [other], recipe, box_tol=0.01, candidates=(_candidates(a), _candidates(other)))
        assert m.unexplained >= 1 and "PyTorch detection label 1 score 0.9" in m.examples[0]
    # a box moved by more than the tolerance is no candidate of the other side, even with its score
    d = _dets([[0, 0, 10.1, 10, 0.9, 1], [20, 20, 40, 40, 0.5, 2], [50, 50, 60, 60, 0.00100001, 1]])
    m = dense.match_detections([a], [d], recipe, box_tol=0.01, candidates=(_candidates(a), _candidates(d)))
    assert m.unexplained == 2 and m.matched == 2


def test_detect_numpy_checks_its_inputs():
    boxes = np.zeros((10, 4), np.float32)
    with pytest.raises(MobileNetsError, match="two arrays"):
        detect_numpy(np.zeros((1, 10, 3)), boxes, "paper", 96)
    with pytest.raises(MobileNetsError, match="default boxes number 10"):
        detect_numpy((np.zeros((1, 12, 3)), np.zeros((1, 12, 4))), boxes, "paper", 96)


# -------------------------------------------------------------------------------------------------- CLI

def test_cli_export_detector_checkpoint(detector, tmp_path):
    ckpt = save_checkpoint(detector, tmp_path / "det.safetensors",
                           CheckpointMeta(detector.config, list(SHAPES_CLASSES), DET_PRE, {"task": "detection"}))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    r = subprocess.run([sys.executable, "-m", "mobilenets", "export", "--weights", str(ckpt), "--format", "onnx",
                        "--check-images", str(CHECK)], capture_output=True, text=True, timeout=600, cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert (cwd / "det.onnx").is_file() and [p.name for p in cwd.iterdir()] == ["det.onnx"]
    assert "input 3x96x96, batch dynamic" in r.stdout and "detections on shapes:val (8 images)" in r.stdout
    meta = read_metadata(cwd / "det.onnx", "onnx")
    assert meta["class_names"] == list(SHAPES_CLASSES) and meta["model"] == "ssdlite_mobilenet_v3_small"
    r = subprocess.run([sys.executable, "-m", "mobilenets", "export", "--weights", str(ckpt), "--format", "onnx",
                        "--int8", "--calib", "digits"], capture_output=True, text=True, timeout=600, cwd=cwd)
    assert r.returncode == 2 and "classifiers only" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------------ bench

def test_bench_dense_pairs_have_the_same_outputs():
    """Ours in torchvision's configuration and torchvision's tensor-only core: the same output shapes (the
    benchmark compares like with like)."""
    from mobilenets.export.bench import DENSE_MODELS, _dense_pair, _ratios, Row

    x = torch.randn(1, 3, 64, 64)
    for name in DENSE_MODELS:
        ours, tv = (m.eval() for m in _dense_pair(name))
        assert dense.task_of(ours) == dense.task_of(tv) == DENSE_MODELS[name][0]
        with torch.no_grad():
            if DENSE_MODELS[name][0] == "segmentation":
                assert ours(x).shape == tv(x).shape == (1, 21, 64, 64)
            else:
                x320 = torch.randn(1, 3, 320, 320)
                assert [t.shape for t in ours(x320)] == [t.shape for t in tv(x320)] == [(1, 3234, 91), (1, 3234, 4)]
    rows = [Row("lraspp_mobilenet_v3_large", p, lat, None) for p, lat in
            (("tv eager", 40.0), ("ours eager", 38.0), ("ours onnxruntime", 20.0), ("tv onnxruntime", 21.0))]
    (ratios,) = _ratios(rows)
    assert ratios["ours/tv eager"] == pytest.approx(0.95) and ratios["ours/tv onnxruntime"] == pytest.approx(20 / 21)
