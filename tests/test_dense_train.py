"""Detection and segmentation through the one training loop: the default jobs on a shortened schedule, resume,
backbone initialisation from classification weights, and bad configurations."""

from __future__ import annotations

import csv
import json

import pytest
import torch

import mobilenets
from mobilenets import MobileNetsError, TrainConfig
from mobilenets import shapes
from mobilenets.checkpoint import CheckpointMeta, read_checkpoint, save_checkpoint
from mobilenets.training import loop as LOOP


@pytest.fixture
def tiny_shapes(monkeypatch):
    """The built-in shapes set cut to 48 train / 16 val samples (the generator is unchanged)."""
    monkeypatch.setitem(shapes.DEFAULT_NUM_SAMPLES, "train", 48)
    monkeypatch.setitem(shapes.DEFAULT_NUM_SAMPLES, "val", 16)


def short(task: str, out, **kw) -> TrainConfig:
    base = dict(task=task, output=str(out), epochs=2, batch_size=8, resolution=96, width=0.5, progress=False)
    return TrainConfig(**{**base, **kw})


@pytest.mark.slow
@pytest.mark.parametrize("task, metric", [("detection", "ap"), ("segmentation", "miou")])
def test_default_job_shortened(task, metric, tiny_shapes, tmp_path):
    """The default job's configuration (model, head, data, schedule) on a shortened schedule: it runs end to end,
    writes everything a run writes, and learns (the training loss falls: 48 images, 3 epochs)."""
    result = mobilenets.train(short(task, tmp_path / "run", epochs=3))
    out = result.output
    for name in ("config.json", "last.pt", "best.safetensors", "metrics.csv", "curves.png", "train.log"):
        assert (out / name).is_file(), name
    assert list((out / "tb").glob("events.out.tfevents.*"))
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert f"val_{metric}" in rows[0] and f"ema_val_{metric}" in rows[0]
    assert all(0.0 <= float(r[f"val_{metric}"]) <= 1.0 for r in rows)
    assert result.metric_name == metric and result.best_metric == max(
        max(float(r[f"val_{metric}"]), float(r[f"ema_val_{metric}"])) for r in rows)
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    tensors, meta = read_checkpoint(out / "best.safetensors")
    assert meta.extra["task"] == task and meta.config.name == TrainConfig(task=task).model
    assert meta.class_names == (list(shapes.SHAPES_CLASSES) if task == "detection"
                                else ["background", *shapes.SHAPES_CLASSES])
    assert meta.preprocessing.crop == meta.preprocessing.resize == 96


@pytest.mark.slow
def test_detection_resume_equals_uninterrupted(tiny_shapes, tmp_path, monkeypatch):
    straight = mobilenets.train(short("detection", tmp_path / "a"))
    real_epoch = LOOP._train_epoch

    def crash_in_epoch_2(run, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return real_epoch(run, epoch)

    monkeypatch.setattr(LOOP, "_train_epoch", crash_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        mobilenets.train(short("detection", tmp_path / "b"))
    monkeypatch.setattr(LOOP, "_train_epoch", real_epoch)
    resumed = mobilenets.train(TrainConfig(resume=str(tmp_path / "b"), progress=False))
    drop = ("images_per_s", "epoch_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed.history] == \
        [{k: v for k, v in r.items() if k not in drop} for r in straight.history]
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_backbone_initialised_from_classification_weights(tiny_shapes, tmp_path):
    cls = mobilenets.create_model("mobilenet_v3_small", width=0.5, num_classes=10)
    save_checkpoint(cls, tmp_path / "cls.safetensors")
    result = mobilenets.train(short("segmentation", tmp_path / "seg", epochs=1, head="torchvision",
                                    weights=str(tmp_path / "cls.safetensors"), freeze_backbone=True,
                                    ema_decay=0.0))
    tensors, _ = read_checkpoint(result.best_checkpoint)
    assert torch.equal(tensors["backbone.stem.conv.weight"], cls.state_dict()["stem.conv.weight"])  # frozen
    assert "backbone initialised from" in (result.output / "train.log").read_text()


@pytest.mark.parametrize("kw, msg", [
    (dict(task="detection", model="mobilenet_v2"), "classification model"),
    (dict(task="segmentation", model="ssdlite_mobilenet_v2"), "detection model"),
    (dict(task="detection", model="ssdlite_mobilenet_v3_smal"), "did you mean"),
    (dict(task="detection", head="keras"), "head must be"),
    (dict(task="segmentation", schedule="step"), "schedule must be"),
    (dict(task="tracking"), "task must be"),
])
def test_bad_configs(kw, msg):
    with pytest.raises(MobileNetsError, match=msg):
        TrainConfig(**kw)


def test_task_defaults():
    det, seg = TrainConfig(task="detection"), TrainConfig(task="segmentation")
    assert det.model == "ssdlite_mobilenet_v3_small" and det.head == "paper" and det.schedule == "cosine"
    assert seg.model == "lraspp_mobilenet_v3_small" and seg.schedule == "poly"
    assert TrainConfig.from_dict(json.loads(json.dumps(det.to_dict()))) == det


def test_reduced_tail_refuses_classification_weights(tiny_shapes, tmp_path):
    save_checkpoint(mobilenets.create_model("mobilenet_v3_small", width=0.5), tmp_path / "w.safetensors")
    with pytest.raises(MobileNetsError, match="reduced tail"):
        mobilenets.train(short("detection", tmp_path / "r", reduced_tail=True, weights=str(tmp_path / "w.safetensors")))
    assert not (tmp_path / "r").exists()  # a run that cannot start leaves no folder


def test_weights_of_another_backbone(tiny_shapes, tmp_path):
    save_checkpoint(mobilenets.create_model("mobilenet_v2", width=0.5), tmp_path / "v2.safetensors")
    with pytest.raises(MobileNetsError, match="mobilenet_v2"):
        mobilenets.train(short("detection", tmp_path / "r", weights=str(tmp_path / "v2.safetensors")))
    assert not (tmp_path / "r").exists()


def test_cli_train_detection_bad_argument(capsys):
    from mobilenets.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train-detection", "--epochs", "0"])
    assert e.value.code == 2 and "--epochs" in capsys.readouterr().err


@pytest.mark.slow
def test_detection_ddp_two_processes(tmp_path):
    """torchrun with 2 processes (gloo): each rank detects on its shard of val, rank 0 runs pycocotools on all of
    them (every val image counted once); only rank 0 writes; the saved weights re-evaluated in one process give
    the same AP (to a tolerance: 1 epoch on 32 images leaves scores near ties, which batch composition reorders)."""
    import os
    import subprocess
    import sys

    from mobilenets.detection.evaluate import evaluate_detector

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "ddp"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "mobilenets", "train-detection", "--samples", "32", "--epochs", "1", "--batch-size", "8",
                        "--resolution", "96", "--width", "0.5", "--ema-decay", "0", "--no-progress",
                        "--output", str(out)], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 process(es) on cpu" in r.stdout and r.stdout.count("epoch 1/1:") == 1
    with open(out / "metrics.csv") as f:
        row = next(csv.DictReader(f))
    assert int(row["val_images"]) == 200
    again = evaluate_detector(out / "best.safetensors", output_dir=tmp_path / "eval")
    assert again.count == 200
    assert float(row["val_ap"]) == pytest.approx(again.ap, rel=0.2, abs=1e-4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short run per dense task (1 epoch on 16 built-in samples at 64x64): checkpoints to evaluate."""
    out = tmp_path_factory.mktemp("dense-runs")
    return {task: mobilenets.train(TrainConfig(task=task, samples=16, epochs=1, batch_size=8, resolution=64,
                                               width=0.35, progress=False, output=str(out / task))).best_checkpoint
            for task in ("detection", "segmentation")}


@pytest.mark.slow
@pytest.mark.parametrize("task, needles, files", [
    ("detection", ("AP50", "rectangle", "ellipse"), ("detection_metrics.json", "detections_val.png")),
    ("segmentation", ("mIoU", "background", "triangle"), ("segmentation_metrics.json", "segmentation_val.png",
                                                         "segmentation_confusion.png")),
])
def test_eval_dispatches_on_the_checkpoints_task(trained, task, needles, files, tmp_path, capsys):
    from mobilenets.cli import main

    rc = main(["eval", "--weights", str(trained[task]), "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0 and all(n in out for n in needles) and "200 images" in out
    for name in files:
        assert (tmp_path / name).is_file(), name


@pytest.mark.slow
def test_user_data_layouts_train_end_to_end(tmp_path):
    """Pascal VOC detection and an image / mask folder through train-detection / train-segmentation (the
    layouts the data layer reads; full augmentation, the default on user data)."""
    from tests.test_detection_data import write_voc
    from tests.test_segmentation_data import write_folder

    voc = tmp_path / "voc"
    write_voc(voc, n=8, split="train")
    write_voc(voc, n=4, split="val")
    det = mobilenets.train(TrainConfig(task="detection", data=str(voc), epochs=1, batch_size=4, resolution=96,
                                       width=0.35, progress=False, output=str(tmp_path / "det")))
    assert det.history[0]["val_images"] == 4 and TrainConfig.from_dict(
        json.loads((det.output / "config.json").read_text())).augment == "full"
    _, meta = read_checkpoint(det.best_checkpoint)
    assert len(meta.class_names) == 20  # the VOC classes

    folder = tmp_path / "pairs"
    write_folder(folder, splits=(("train", 8), ("val", 2)))
    seg = mobilenets.train(TrainConfig(task="segmentation", data=str(folder), epochs=1, batch_size=4,
                                       resolution=96, width=0.35, progress=False, output=str(tmp_path / "seg")))
    assert seg.history[0]["val_images"] == 2


@pytest.mark.slow
def test_classifier_commands_refuse_dense_checkpoints(trained, tmp_path, capsys):
    """predict / the classification evaluate API on a detector or segmenter: one line pointing to the right tool."""
    from PIL import Image

    from mobilenets.cli import main

    img = tmp_path / "x.png"
    Image.new("RGB", (64, 64)).save(img)
    for task, command in (("detection", "detect"), ("segmentation", "segment")):
        rc = main(["predict", "--weights", str(trained[task]), str(img)])
        err = capsys.readouterr().err
        assert rc == 2 and f"'mobilenets {command}'" in err and len(err.strip().splitlines()) == 1
        with pytest.raises(MobileNetsError, match=f"a {task} checkpoint"):
            mobilenets.evaluate(trained[task])
