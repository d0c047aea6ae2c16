"""Training, fine-tuning, resume, DDP, evaluation and bad data, on tiny image folders cut from the built-in
digits (3 classes, 32x32, width 0.35: a few seconds per run)."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import mobilenets
from mobilenets import MobileNetsError, TrainConfig
from mobilenets.checkpoint import CheckpointMeta, read_checkpoint, save_checkpoint
from mobilenets.digits import DigitsDataset
from mobilenets.preprocess import Preprocessing

from mobilenets.training import loop as TRAIN_MODULE
from mobilenets.training import optim as OPTIM


def make_folder(root: Path, *, classes=(0, 1, 2), n_train=16, n_val=6, size=32, split=True) -> Path:
    """An ImageFolder of digits PNGs: root/train/<c>/*.png and root/val/<c>/*.png (or root/<c>/* if not split)."""
    for part, n, src in (("train", n_train, DigitsDataset("train", image_size=size)),
                         ("val", n_val, DigitsDataset("val", image_size=size))):
        for c in classes:
            d = (root / part if split else root) / f"digit{c}"
            d.mkdir(parents=True, exist_ok=True)
            idx = [i for i, t in enumerate(src.targets) if t == c][:n]
            for i in idx:
                src.image(i).save(d / f"{part}_{i}.png")
    return root


def tiny(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=str(data), output=str(out), model="mobilenet_v3_small", width=0.35, resolution=32,
                epochs=2, batch_size=8, workers=0, progress=False, hflip=0.0, crop_pct=1.0)
    return TrainConfig(**{**base, **kw})


def cli(*args: str, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mobilenets", *args], capture_output=True, text=True, timeout=600,
                          env=env, **kw)


def _comparable(history):
    return [{k: v for k, v in row.items() if k not in ("images_per_s", "epoch_s")} for row in history]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("digits3"))


@pytest.mark.slow
def test_train_outputs_and_resume_equals_uninterrupted(folder, tmp_path, monkeypatch):
    straight = mobilenets.train(tiny(folder, tmp_path / "a"))
    out = straight.output
    assert [r["epoch"] for r in straight.history] == [1, 2]
    for name in ("config.json", "last.pt", "best.safetensors", "metrics.csv", "curves.png", "train.log"):
        assert (out / name).is_file(), name
    assert list((out / "tb").glob("events.out.tfevents.*"))
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and "ema_val_top1" in rows[0]
    assert float(rows[-1]["val_top1"]) == pytest.approx(straight.final["val_top1"])
    tensors, meta = read_checkpoint(straight.best_checkpoint)
    assert meta.class_names == ["digit0", "digit1", "digit2"] and meta.config.num_classes == 3
    assert meta.extra["train_config"]["width"] == 0.35 and meta.preprocessing.crop == 32
    assert meta.extra["val_top1"] == pytest.approx(straight.best_top1)

    # Interrupt the same run during epoch 2 (after epoch 1's checkpoint), then resume it.
    real_epoch = TRAIN_MODULE._train_epoch

    def crash_in_epoch_2(*args, **kw):
        if kw.get("epoch", args[-1]) == 1:
            raise KeyboardInterrupt
        return real_epoch(*args, **kw)

    monkeypatch.setattr(TRAIN_MODULE, "_train_epoch", crash_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        mobilenets.train(tiny(folder, tmp_path / "b"))
    monkeypatch.setattr(TRAIN_MODULE, "_train_epoch", real_epoch)
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["epoch"] == 1
    resumed = mobilenets.train(TrainConfig(resume=str(tmp_path / "b"), progress=False))
    assert resumed.output == tmp_path / "b"
    assert _comparable(resumed.history) == _comparable(straight.history)
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)


@pytest.mark.slow
def test_sigkill_mid_epoch_loses_at_most_that_epoch(tmp_path):
    data = make_folder(tmp_path / "data", n_train=40, n_val=4)
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--output", str(out), "--model", "mobilenet_v3_small", "--width", "0.35",
            "--resolution", "32", "--batch-size", "4", "--epochs", "3", "--no-progress", "--crop-pct", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mobilenets", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not (out / "last.pt").exists():  # written atomically at the end of epoch 1
            assert proc.poll() is None and time.time() < deadline, "training ended before its first checkpoint"
            time.sleep(0.02)
        proc.kill()  # SIGKILL, 30 steps before epoch 2 ends
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["epoch"] == 1
    assert not list(out.glob(".*.tmp"))  # no half-written temp file left behind to trip a resume
    r = cli("train", "--resume", str(out), "--no-progress", env=env)
    assert r.returncode == 0, r.stderr
    assert "resumed" in r.stdout and "after epoch 1 of 3" in r.stdout
    with open(out / "metrics.csv") as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [1, 2, 3]


@pytest.mark.slow
def test_ddp_two_processes_matches_one(tmp_path):
    data = make_folder(tmp_path / "data", n_train=24, n_val=10)
    common = ["--data", str(data), "--model", "mobilenet_v3_small", "--width", "0.35", "--resolution", "32",
              "--batch-size", "8", "--epochs", "8", "--lr", "0.01", "--no-progress", "--crop-pct", "1", "--hflip", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = cli("train", *common, "--output", str(tmp_path / "one"), env=env)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "mobilenets", "train", *common, "--output", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=600, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 process(es) on cpu" in two.stdout
    assert two.stdout.count("epoch 8/8:") == 1  # only rank 0 logs and writes
    assert len(list((tmp_path / "two" / "tb").glob("events.*"))) == 1

    def final(run):
        with open(tmp_path / run / "metrics.csv") as f:
            return list(csv.DictReader(f))[-1]

    a, b = final("one"), final("two")
    # Same global batch, same number of steps: the loss and accuracy agree within noise (30 val images).
    assert abs(float(a["val_top1"]) - float(b["val_top1"])) <= 20
    # (measured: 90.0 vs 90.0 val top-1, train loss 0.70 vs 0.84: per-process batch norm over 4 images, not 8)
    assert abs(float(a["train_loss"]) - float(b["train_loss"])) < 0.35
    assert float(a["val_top1"]) > 60 and float(b["val_top1"]) > 60  # both learned (chance is 33%)


@pytest.mark.slow
def test_finetune_frozen_backbone_and_eval(folder, tmp_path):
    src = mobilenets.create_model("mobilenet_v3_small", width=0.35, num_classes=10)
    pre = save_checkpoint(src, tmp_path / "pre.safetensors")
    result = mobilenets.train(tiny(folder, tmp_path / "ft", weights=str(pre), freeze_backbone=True, epochs=1,
                                   ema_decay=0.0))
    tuned, meta = read_checkpoint(result.best_checkpoint)
    before = src.state_dict()
    assert tuned["classifier.weight"].shape == (3, before["classifier.weight"].shape[1])
    for k, v in before.items():  # backbone weights and BN statistics untouched, head trained
        if k.startswith(("stem.", "stages.")):
            assert torch.equal(tuned[k], v), k
    assert not torch.equal(tuned["head_conv.weight"], before["head_conv.weight"])

    ev = mobilenets.evaluate(result.best_checkpoint, data=folder, confusion_png=tmp_path / "cm.png")
    assert ev.count == 18 and ev.top1 == pytest.approx(result.best_top1) and ev.top5 == 100.0
    assert set(ev.per_class) == {"digit0", "digit1", "digit2"} and ev.confusion.sum() == 18
    assert (tmp_path / "cm.png").read_bytes()[:4] == b"\x89PNG"

    r = cli("eval", "--weights", str(result.best_checkpoint), "--data", str(folder))
    assert r.returncode == 0, r.stderr
    assert f"top-1 {ev.top1:.2f}%" in r.stdout and "digit2" in r.stdout
    assert (result.output / "confusion_matrix.png").is_file()


def test_eval_defaults_to_digits_val(tmp_path):
    model = mobilenets.create_model("mobilenet_v3_small", width=0.35, num_classes=10)
    ckpt = save_checkpoint(model, tmp_path / "d.safetensors", CheckpointMeta(
        model.config, class_names=[str(i) for i in range(10)], preprocessing=Preprocessing(32, 32)))
    ev = mobilenets.evaluate(ckpt)
    assert ev.count == 359 and ev.confusion.shape == (10, 10) and 0 <= ev.top1 <= ev.top5 <= 100
    assert ev.confusion_png == tmp_path / "confusion_matrix.png" and ev.confusion_png.is_file()


# ----------------------------------------------------------------------------------------------- bad data

def test_corrupt_images_skipped_and_counted_or_strict(tmp_path, caplog):
    from mobilenets.data import load_image_folders

    data = make_folder(tmp_path / "d", n_train=3, n_val=2)
    bad = data / "train" / "digit1" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (data / "train" / "digit2" / "empty.jpg").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="mobilenets"):
        splits = load_image_folders(data)
    assert len(splits.train) == 9 and len(splits.val) == 6
    assert "skipped 2 unreadable image(s)" in caplog.text
    with pytest.raises(MobileNetsError, match="broken.png|empty.jpg"):
        load_image_folders(data, strict=True)
    r = cli("train", "--data", str(data), "--strict", "--output", str(tmp_path / "run"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "unreadable image" in r.stderr


def test_empty_class_empty_folder_and_unknown_val_class(tmp_path):
    from mobilenets.data import load_image_folders

    data = make_folder(tmp_path / "d", n_train=2, n_val=1)
    (data / "train" / "digit9").mkdir()
    with pytest.raises(MobileNetsError, match="digit9"):
        load_image_folders(data)
    (data / "train" / "digit9").rmdir()
    (data / "val" / "digit7").mkdir()
    make_folder(tmp_path / "d7", classes=(7,), n_train=1, n_val=1)
    for f in (tmp_path / "d7" / "val" / "digit7").iterdir():
        f.rename(data / "val" / "digit7" / f.name)
    with pytest.raises(MobileNetsError, match="classes the train set lacks: digit7"):
        load_image_folders(data)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MobileNetsError, match="no class folders"):
        load_image_folders(tmp_path / "empty", val_split=0.2)
    with pytest.raises(MobileNetsError, match="--val-split"):
        load_image_folders(tmp_path / "empty")
    r = cli("train", "--data", str(tmp_path / "empty"), "--val-split", "0.2", cwd=tmp_path)
    assert r.returncode == 2 and "no class folders" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()  # a run that never started leaves no folder behind


def test_val_split_of_single_folder_is_stratified_and_fixed(tmp_path):
    from mobilenets.data import load_image_folders

    data = make_folder(tmp_path / "d", n_train=10, n_val=0, split=False)
    a, b = load_image_folders(data, val_split=0.2), load_image_folders(data, val_split=0.2)
    assert a == b and len(a.val) == 6 and len(a.train) == 24
    assert sorted(t for _, t in a.val) == [0, 0, 1, 1, 2, 2]
    assert not {p for p, _ in a.val} & {p for p, _ in a.train}


def test_weights_from_another_architecture(folder, tmp_path):
    v2 = save_checkpoint(mobilenets.create_model("mobilenet_v2", width=0.35, num_classes=3),
                         tmp_path / "v2.safetensors")
    with pytest.raises(MobileNetsError, match="weights of mobilenet_v2 width 0.35, not mobilenet_v3_small"):
        mobilenets.train(tiny(folder, tmp_path / "run", weights=str(v2)))
    r = cli("train", "--data", str(folder), "--weights", str(v2), "--model", "mobilenet_v3_small", "--width", "0.35",
            "--output", str(tmp_path / "r"))  # (without --model the file names the model: test_finetune.py)
    assert r.returncode == 2 and "mobilenet_v2" in r.stderr and r.stderr.count("\n") == 1


@pytest.mark.parametrize("kw, msg", [
    (dict(epochs=0), "epochs"), (dict(opt="adam"), "opt must be"), (dict(model="resnet50"), "unknown model"),
    (dict(resolution=16), "resolution"), (dict(amp="fp8"), "amp"),
])
def test_config_validation(kw, msg):
    with pytest.raises(MobileNetsError, match=msg):
        TrainConfig(**kw)


def test_resume_needs_a_training_state(tmp_path):
    with pytest.raises(MobileNetsError, match="no training state"):
        mobilenets.train(TrainConfig(resume=str(tmp_path)))
    (tmp_path / "last.pt").write_bytes(b"garbage")
    with pytest.raises(MobileNetsError, match="not a mobilenets training state"):
        mobilenets.train(TrainConfig(resume=str(tmp_path)))


@pytest.mark.parametrize("opt", ["sgd", "rmsprop", "adamw"])
def test_optimizers_param_groups_and_schedule(opt):
    model = mobilenets.create_model("mobilenet_v3_small", width=0.35, num_classes=3)
    cfg = TrainConfig(opt=opt, weight_decay=0.01)
    optimizer = OPTIM.make_optimizer(cfg, model)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    f = OPTIM.warmup_cosine(100, 10)
    assert f(0) == pytest.approx(0.1) and f(9) == 1.0 and f(55) == pytest.approx(0.5) and f(100) == 0.0


def test_config_roundtrip_and_defaults():
    cfg = TrainConfig()
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.model == "mobilenet_v3_small" and cfg.data is None and cfg.flip_p == 0.0
    assert replace(cfg, data="x").flip_p == 0.5 and replace(cfg, opt="sgd").wd == 4e-5


@pytest.mark.slow
def test_finetune_from_torchvision_weights(folder, tmp_path):
    import torchvision

    tv = torchvision.models.mobilenet_v3_small()
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    result = mobilenets.train(tiny(folder, tmp_path / "ft", width=1.0, weights=str(tmp_path / "tv.pth"),
                                   freeze_backbone=True, epochs=1, ema_decay=0.0))
    tuned, meta = read_checkpoint(result.best_checkpoint)
    assert torch.equal(tuned["stem.conv.weight"], tv.state_dict()["features.0.0.weight"])  # frozen, loaded
    assert meta.config.num_classes == 3 and "fine-tuning from" in (result.output / "train.log").read_text()


@pytest.mark.slow
def test_resume_with_another_runs_state_is_one_line_error(folder, tmp_path, capsys):
    """A run folder whose last.pt belongs to another run (copied in, or its config.json edited) is refused in one
    line, and neither file changes."""
    from mobilenets.cli import main

    a = mobilenets.train(tiny(folder, tmp_path / "a", epochs=1)).output
    b = mobilenets.train(tiny(folder, tmp_path / "b", epochs=1, resolution=48)).output
    (a / "last.pt").write_bytes((b / "last.pt").read_bytes())
    before = {p.name: p.read_bytes() for p in a.iterdir() if p.is_file()}
    rc = main(["train", "--resume", str(a), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "does not match" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in a.iterdir() if p.is_file()} == before


def test_resume_from_another_folder_and_of_another_task(folder, tmp_path, monkeypatch, capsys):
    """A run started with a relative --data resumes from any folder (the data folder is saved absolute, and
    naming it again from elsewhere is no change); the command of another task refuses the run, naming the one
    that trains it; an unreadable config.json in the run folder says so."""
    from mobilenets.cli import main

    monkeypatch.chdir(folder.parent)
    out = mobilenets.train(tiny(Path(folder.name), tmp_path / "a", epochs=1)).output
    saved = json.loads((out / "config.json").read_text())["data"]
    assert Path(saved).is_absolute() and Path(saved).resolve() == folder.resolve()
    monkeypatch.chdir(tmp_path)
    rc = main(["train", "--resume", str(out), "--epochs", "2", "--data", os.path.relpath(folder, tmp_path),
               "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 2
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    for command in ("train-detection", "train-segmentation"):
        assert main([command, "--resume", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.strip().endswith(f"{out}: a classification run, not a {command[6:]} one: resume it with "
                                    f"'mobilenets train --resume {out}'"), err
    (out / "config.json").write_text("{")
    assert main(["train", "--resume", str(out), "--epochs", "3", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "config.json: not a readable run config" in err and len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != "config.json"} == \
        {k: v for k, v in before.items() if k != "config.json"}


def test_resume_refuses_data_whose_classes_changed(tmp_path, capsys):
    """A class folder renamed between the run and its resume would swap what the labels mean: refused in one
    line, nothing changed."""
    from mobilenets.cli import main

    data = make_folder(tmp_path / "d", classes=(0, 1), n_train=8, n_val=2)
    out = mobilenets.train(tiny(data, tmp_path / "run", epochs=1)).output
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    for part in ("train", "val"):
        (data / part / "digit0").rename(data / part / "digit9")
    assert main(["train", "--resume", str(out), "--epochs", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "the data's classes are not the run's (new: digit9; gone: digit0); a resumed run keeps its classes" in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_a_new_run_never_overwrites_another(folder, tmp_path):
    """--output naming a folder that holds a run: refused before anything is written (its checkpoints are
    somebody's work); resuming it is the way on."""
    out = mobilenets.train(tiny(folder, tmp_path / "a", epochs=1)).output
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(MobileNetsError, match=rf"a: holds a run already \(last.pt, best.safetensors\); "
                                              rf"continue it with --resume {out}, or give another --output"):
        mobilenets.train(tiny(folder, out, epochs=1, seed=1))
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_class_names_a_checkpoint_cannot_hold_are_refused_before_training(tmp_path):
    """A class folder whose name holds a terminal escape trained once, and then no command could load its
    checkpoint: refused before anything is written; a name twice (a mask folder's classes.txt, COCO
    categories) likewise."""
    from mobilenets.checkpoint import check_class_names

    data = make_folder(tmp_path / "d", classes=(0, 1))
    for part in ("train", "val"):
        (data / part / "digit1").rename(data / part / "digit\x1b[2J1")
    with pytest.raises(MobileNetsError, match=r"the class name 'digit\\x1b\[2J1' has control characters"):
        mobilenets.train(tiny(data, tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    with pytest.raises(MobileNetsError, match=r"classes.txt: the class name 'car' is there twice"):
        check_class_names(["background", "car", "truck", "car"], "classes.txt")
    check_class_names(["background", "car", "truck"], "classes.txt")


def test_a_batch_norm_that_sees_one_value_is_one_line(folder, tmp_path):
    """A batch of one image whose last feature map is 1x1 (V3 at 32 px): one line naming --batch-size, not
    torch's ValueError; the folder of that run that never started may be used again."""
    with pytest.raises(MobileNetsError, match="batch norm got one value per channel .* use --batch-size 2 or more"):
        mobilenets.train(tiny(folder, tmp_path / "a", batch_size=1, epochs=1))
    assert mobilenets.train(tiny(folder, tmp_path / "a", epochs=1)).best_checkpoint.is_file()


def test_run_that_cannot_start_leaves_no_folder(folder, tmp_path, capsys):
    from mobilenets.cli import main

    out = tmp_path / "deep" / "run"
    rc = main(["train", "--data", str(folder), "--output", str(out), "--batch-size", "4096", "--no-progress",
               "--resolution", "32"])
    err = capsys.readouterr().err
    assert rc == 2 and "fewer than one batch" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "deep").exists()


def test_statistics_read_every_few_steps_give_the_same_run(folder, tmp_path, monkeypatch):
    """On a GPU the loop reads the batch statistics every few steps (no host sync per step): the run's history
    is the one per-step reads give (the CPU's path), and a diverging loss still stops the run in one line. Both
    on the CPU (the read interval forced), so the runs are comparable on any machine; tests/test_gpu.py runs
    the GPU's own interval where there is one."""
    every_step = mobilenets.train(tiny(folder, tmp_path / "a", epochs=1, device="cpu"))
    with pytest.raises(MobileNetsError, match=r"epoch 1: the loss is (nan|inf)"):  # per step: before its update
        mobilenets.train(tiny(folder, tmp_path / "c0", epochs=1, lr=1e12, warmup_epochs=0, device="cpu"))
    monkeypatch.setattr(TRAIN_MODULE, "_host_sync_steps", lambda device: 4)  # 6 steps: reads after 4 and 6
    deferred = mobilenets.train(tiny(folder, tmp_path / "b", epochs=1, device="cpu"))
    a, b = _comparable(every_step.history)[0], _comparable(deferred.history)[0]
    assert a.keys() == b.keys() and all(b[k] == pytest.approx(a[k], rel=1e-6) for k in a)
    with pytest.raises(MobileNetsError, match=r"epoch 1: the loss became non-finite within steps (1-4|5-6)\b"):
        mobilenets.train(tiny(folder, tmp_path / "c", epochs=1, lr=1e12, warmup_epochs=0, device="cpu"))
