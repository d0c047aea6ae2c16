"""The GPU code paths, tested on whatever devices this machine has (CPU always; a GPU's too where one is visible):
the inference path (mobilenets.fast), the device-side input pipeline (mobilenets.gpu_data), torchrun's
process-per-GPU check, and the GPU benchmark script's tiny CPU mode."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import mobilenets
from mobilenets import MobileNetsError
from mobilenets.device import count_host_syncs
from mobilenets.fast import InferenceOptions, prepare_for_inference

from .conftest import ALL_MODELS

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _calibrated(name: str, seed: int = 0) -> nn.Module:
    """A random model whose BN statistics are those of its inputs (unit-scale activations, as a trained net has;
    the default running stats make deep random nets' outputs vanish)."""
    torch.manual_seed(seed)
    model = mobilenets.create_model(name, width=0.35, num_classes=10)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, 3, 64, 64))
    return model.eval()


# ------------------------------------------------------------------------------------------- torchrun / devices
def test_more_processes_than_gpus_is_one_line(monkeypatch):
    from mobilenets.device import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    for spec in ("auto", "cuda"):
        with pytest.raises(MobileNetsError, match=r"2 processes per machine but this machine has 1 GPU\(s\): use "
                                                  r"--nproc-per-node 1"):
            resolve_device(spec)
    monkeypatch.setenv("LOCAL_RANK", "0")  # rank 0 of the same job fails alike (instead of waiting for rank 1)
    with pytest.raises(MobileNetsError, match="2 processes per machine but this machine has 1 GPU"):
        resolve_device("auto")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert resolve_device("auto") == torch.device("cuda", 3)  # one process per GPU: rank r gets cuda:r


def test_one_process_per_gpu_under_torchrun_in_train(monkeypatch, tmp_path):
    """train() resolves the device before anything else: the torchrun error comes before data or model work and
    leaves no run folder."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    out = tmp_path / "run"
    with pytest.raises(MobileNetsError, match="LOCAL_RANK 1 but this machine has 1 GPU"):
        mobilenets.train(mobilenets.TrainConfig(output=str(out), epochs=1, progress=False))
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- inference path
@pytest.mark.parametrize("name", ALL_MODELS)
def test_folded_fp32_is_the_eager_function(name):
    model = _calibrated(name)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    for channels_last in (False, True):
        out = prepare_for_inference(model, "cpu", InferenceOptions(channels_last=channels_last))(x)
        assert out.dtype == torch.float32 and out.shape == ref.shape
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the input model is left as it was


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ALL_MODELS)
def test_bf16_channels_last_folded_stays_close(name, device):
    """Random networks amplify rounding (rounding only the input to bf16 moves their logits by 1-10% in L2,
    measured over 3 seeds x 6 models); the bf16 path stayed under 30%. A wrong path (a dropped activation, a
    mis-folded BN, a transposed layout) moves them by ~100%: the bound is 50%."""
    if device == "cpu" and not torch.backends.mkldnn.is_available():
        pytest.skip("bf16 convolutions on this CPU need oneDNN")
    model = _calibrated(name)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    fast = prepare_for_inference(model, device, InferenceOptions(precision="bf16", channels_last=True))
    assert all(p.dtype == torch.bfloat16 for p in fast.module.parameters())
    left = [m for m in fast.module.modules() if isinstance(m, nn.BatchNorm2d)]
    prenorms = [getattr(m, n) for m in fast.module.modules() for n in getattr(m, "_prenorm", ())]
    assert len(left) == len(prenorms)  # every BN after a conv folded; V4 attention's input norms stay
    out = fast(x).cpu()
    assert out.dtype == torch.float32
    assert (torch.linalg.norm(out - ref) / torch.linalg.norm(ref)).item() < 0.5


@pytest.mark.parametrize("fname", ["mobilenet_v1_0.25_224.h5", "mobilenet_v3_small_1.0_224.uint8.tflite"])
def test_bf16_path_predicts_as_fp32_on_photos(pretrained_dir, fname):
    """Trained weights on real photos: the same top-1 class, probabilities within 0.05 (measured: <= 0.02)."""
    from mobilenets.predict import predict

    photos = sorted((pretrained_dir / "photos").iterdir())
    ref = predict(pretrained_dir / fname, photos, top=1)
    out = predict(pretrained_dir / fname, photos, top=1,
                  inference=InferenceOptions(precision="bf16", channels_last=True))
    for a, b in zip(ref, out):
        assert a.top[0][0] == b.top[0][0]
        assert abs(a.top[0][1] - b.top[0][1]) < 0.05


def test_options_checked_in_one_line():
    model = mobilenets.create_model("mobilenet_v3_small", width=0.35, num_classes=3)
    with pytest.raises(MobileNetsError, match="precision must be one of fp32, bf16, fp16"):
        InferenceOptions(precision="int4")
    with pytest.raises(MobileNetsError, match="compile must be True or False"):
        InferenceOptions(compile="yes")
    with pytest.raises(MobileNetsError, match="CUDA graphs need a CUDA device, not cpu"):
        prepare_for_inference(model, "cpu", InferenceOptions(cuda_graphs=True))
    with pytest.raises(MobileNetsError, match="fp16 inference needs a GPU"):
        prepare_for_inference(model, "cpu", InferenceOptions(precision="fp16"))


def test_bn_subclasses_are_not_folded_away():
    """A BatchNorm2d subclass that also applies an activation (timm's BatchNormAct2d) stays a layer: folding it
    into Identity would drop the activation."""

    class BNAct(nn.BatchNorm2d):
        def forward(self, x):
            return torch.relu(super().forward(x))

    model = nn.Sequential(nn.Conv2d(3, 4, 3), BNAct(4)).eval()
    model[1].running_mean.uniform_(-1, 1)
    x = torch.randn(1, 3, 8, 8)
    fast = prepare_for_inference(model, "cpu")
    assert isinstance(fast.module[1], BNAct)
    torch.testing.assert_close(fast(x), model(x).detach())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("compile_", [False, True])
def test_cuda_graphs_replay_the_eager_function(compile_):
    model = _calibrated("mobilenet_v3_large")
    fast = prepare_for_inference(model, "cuda", InferenceOptions(channels_last=True, cuda_graphs=True,
                                                                 compile=compile_))
    eager = prepare_for_inference(model, "cuda", InferenceOptions(channels_last=True))
    xs = [torch.randn(1, 3, 64, 64, device="cuda") for _ in range(3)] + [torch.randn(4, 3, 64, 64, device="cuda")]
    outs = [fast(x) for x in xs]  # replays; a new shape captures a new graph; outputs are copies, not the buffer
    for x, out in zip(xs, outs):
        torch.testing.assert_close(out, eager(x), rtol=1e-3, atol=1e-3)
    assert not outs[0].equal(outs[1])


def test_eval_and_predict_take_the_inference_path(tmp_path, capsys):
    """evaluate / predict (and their CLI flags) run the prepared model: fp32 with BN folded gives the eager
    predictions; --cuda-graphs on a CPU is one line."""
    from mobilenets.checkpoint import CheckpointMeta, save_checkpoint
    from mobilenets.cli import main
    from mobilenets.digits import DIGITS_CLASSES, DigitsDataset
    from mobilenets.evaluate import evaluate
    from mobilenets.predict import predict
    from mobilenets.preprocess import Preprocessing

    model = _calibrated("mobilenet_v3_small")
    ckpt = tmp_path / "m.safetensors"
    save_checkpoint(model, ckpt, CheckpointMeta(config=model.config, class_names=list(DIGITS_CLASSES),
                                                preprocessing=Preprocessing(32, 32)))
    ref = evaluate(ckpt, batch_size=64, confusion_png=tmp_path / "a.png")
    fast = evaluate(ckpt, batch_size=64, confusion_png=tmp_path / "b.png", inference=InferenceOptions())
    assert (ref.confusion == fast.confusion).all()
    img = tmp_path / "d.png"
    DigitsDataset("val", image_size=32).image(0).save(img)
    a = predict(ckpt, [img], top=3)[0]
    b = predict(ckpt, [img], top=3, inference=InferenceOptions(channels_last=True))[0]
    assert [lbl for lbl, _ in a.top] == [lbl for lbl, _ in b.top]
    for p_a, p_b in zip(a.top, b.top):
        assert abs(p_a[1] - p_b[1]) < 1e-4
    assert main(["predict", "--weights", str(ckpt), str(img), "--no-fold-bn", "--channels-last"]) == 0
    assert a.top[0][0] in capsys.readouterr().out
    for cmd in (["predict", "--weights", str(ckpt), str(img)], ["eval", "--weights", str(ckpt)]):
        assert main([*cmd, "--cuda-graphs"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.endswith("CUDA graphs need a CUDA device, not cpu (drop --cuda-graphs)") and "\n" not in err


def test_cli_inference_flags():
    import argparse

    from mobilenets.cli.inference import add_inference_args, inference_options

    p = argparse.ArgumentParser()
    add_inference_args(p)
    assert inference_options(p.parse_args([])) is None
    opts = inference_options(p.parse_args(["--precision", "bf16", "--channels-last", "--cuda-graphs"]))
    assert opts == InferenceOptions(precision="bf16", channels_last=True, cuda_graphs=True)


# ------------------------------------------------------------------------------------- device-side input pipeline
def _jpeg_folder(root, n=8, classes=("a", "b")):
    """An ImageFolder of JPEGs of differing sizes (digits pasted on noise), train/ and val/."""
    import numpy as np
    from PIL import Image

    from mobilenets.digits import DigitsDataset

    src = DigitsDataset("train", image_size=40)
    rng = np.random.default_rng(0)
    k = 0
    for part in ("train", "val"):
        for c in classes:
            d = root / part / c
            d.mkdir(parents=True)
            for i in range(n):
                h, w = int(rng.integers(40, 72)), int(rng.integers(40, 72))
                canvas = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
                canvas.paste(src.image(k), (int(rng.integers(0, w - 39)), int(rng.integers(0, h - 39))))
                canvas.save(d / f"{k}.jpg", quality=90)
                k += 1
    return root


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    return _jpeg_folder(tmp_path_factory.mktemp("jpegs"))


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    from .test_train import make_folder

    return make_folder(tmp_path_factory.mktemp("pngs"), n_train=8, n_val=4)


def _batches(root, decode_on, **kw):
    """The first train and val batches a run's loaders give (as the loop builds them)."""
    from mobilenets.device import resolve_device
    from mobilenets.training.loop import _Run

    from .test_train import tiny

    config = tiny(root, root / "out", decode_on=decode_on, **kw)
    run = _Run(config, root / "out", None, resolve_device("cpu"), mobilenets.training.loop.Dist(), None)
    torch.manual_seed(0)
    run._prepare()
    torch.manual_seed(1)
    x, y = next(iter(run.train_loader))
    v, w = next(iter(run.val_loader))
    return (x, y), (v, w)


@pytest.mark.parametrize("kind", ["pngs", "jpegs"])
def test_device_pipeline_gives_the_cpu_pipelines_batches(kind, request):
    """The same transforms in the same order with the same random draws: on PNGs (both decoders exact) the
    batches are identical; JPEG decoders (PIL's and torchvision's libjpeg-turbo) may differ by a rounding."""
    root = request.getfixturevalue(kind)
    kw = dict(hflip=0.5, augment="trivialaugment", resolution=32, crop_pct=0.875)
    (x_cpu, y_cpu), (v_cpu, w_cpu) = _batches(root, "cpu", **kw)
    (x_dev, y_dev), (v_dev, w_dev) = _batches(root, "device", **kw)
    assert y_cpu.equal(y_dev) and w_cpu.equal(w_dev)
    assert x_dev.dtype == v_dev.dtype == torch.float32 and x_dev.shape == x_cpu.shape and v_dev.shape == v_cpu.shape
    if kind == "pngs":
        assert x_dev.equal(x_cpu) and v_dev.equal(v_cpu)
    else:
        step = 1 / 255 / 0.224  # one uint8 level after normalisation (the smallest std)
        assert (x_dev - x_cpu).abs().max() <= 1.01 * step and (v_dev - v_cpu).abs().max() <= 1.01 * step


def test_device_decoding_trains_as_the_cpu_pipeline(pngs, tmp_path):
    """A whole run (2 epochs, EMA, eval) with decode_on=device on a CPU is the decode_on=cpu run, number for
    number (one process, workers=0: the random draws come in the same order)."""
    from .test_train import _comparable, tiny

    runs = [mobilenets.train(tiny(pngs, tmp_path / mode, decode_on=mode, hflip=0.5)) for mode in ("cpu", "device")]
    assert _comparable(runs[0].history) == _comparable(runs[1].history)


def test_unreadable_images_on_the_device_path(jpegs, tmp_path, caplog):
    """A JPEG cut short passes the up-front check (PIL reads headers) and fails when decoded: skipped with a
    warning naming it, or with --strict one line naming it."""
    import shutil

    from mobilenets.gpu_data import decode_images

    from .test_train import tiny

    root = tmp_path / "data"
    shutil.copytree(jpegs, root)
    bad = sorted((root / "train" / "a").iterdir())[0]
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) * 3 // 5])  # header intact, scan data cut
    good = sorted((root / "train" / "a").iterdir())[1]
    data = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in (bad, good)]
    out = decode_images(data, torch.device("cpu"), [str(bad), str(good)])
    assert out[0] is None and out[1].dtype == torch.uint8 and out[1].shape[0] == 3
    assert f"skipping unreadable image {bad}" in caplog.text
    with pytest.raises(MobileNetsError, match=f"{bad}: unreadable image"):
        decode_images(data, torch.device("cpu"), [str(bad), str(good)], strict=True)
    with pytest.raises(MobileNetsError, match=f"{bad}: unreadable image"):
        mobilenets.train(tiny(root, tmp_path / "strict", decode_on="device", strict=True, epochs=1, batch_size=16))
    result = mobilenets.train(tiny(root, tmp_path / "lenient", decode_on="device", epochs=1, batch_size=16))
    assert result.history[0]["train_loss"] > 0


def test_decode_on_auto_and_checks(jpegs, pngs, monkeypatch):
    from mobilenets.data import load_image_folders
    from mobilenets.gpu_data import resolve_decode

    jpeg_samples, png_samples = load_image_folders(jpegs).train, load_image_folders(pngs).train
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert resolve_decode("auto", task="classification", data="x", device=cuda, samples=jpeg_samples) == "device"
    assert resolve_decode("auto", task="classification", data="x", device=cuda, samples=png_samples) == "cpu"
    assert resolve_decode("auto", task="classification", data="x", device=cpu, samples=jpeg_samples) == "cpu"
    assert resolve_decode("auto", task="classification", data=None, device=cuda, samples=None) == "cpu"
    assert resolve_decode("device", task="classification", data="x", device=cpu, samples=png_samples) == "device"
    assert resolve_decode("auto", task="detection", data=None, device=cuda) == "cpu"
    with pytest.raises(MobileNetsError, match="decode on device is for classification"):
        mobilenets.TrainConfig(task="segmentation", decode_on="device")
    with pytest.raises(MobileNetsError, match="decode on must be one of auto, cpu, device"):
        mobilenets.TrainConfig(decode_on="gpu")


def test_digits_on_the_device_path(tmp_path):
    """The built-in digits (in memory, already decoded) take the same device-side transforms."""
    (x_cpu, _), (v_cpu, _) = _digits_batches("cpu", tmp_path)
    (x_dev, _), (v_dev, _) = _digits_batches("device", tmp_path)
    assert x_dev.equal(x_cpu) and v_dev.equal(v_cpu)


def _digits_batches(mode, tmp_path):
    from mobilenets.device import resolve_device
    from mobilenets.training.loop import Dist, _Run

    config = mobilenets.TrainConfig(width=0.35, resolution=32, decode_on=mode, progress=False)
    run = _Run(config, tmp_path / "unused", None, resolve_device("cpu"), Dist(), None)
    torch.manual_seed(0)
    run._prepare()
    torch.manual_seed(1)
    return next(iter(run.train_loader)), next(iter(run.val_loader))


def test_train_compile_flag_compiles_the_step(pngs, tmp_path, monkeypatch):
    """--compile hands the training model to torch.compile (Inductor needs minutes on a 2-core CPU for a
    training graph: the real compile runs in the GPU check, benchmarks/gpu.py); checkpoints keep plain keys."""
    from mobilenets.checkpoint import read_checkpoint
    from mobilenets.training import loop

    from .test_train import tiny

    compiled = []

    def fake_compile(module, **kw):
        compiled.append(module)
        return module

    monkeypatch.setattr(loop.torch, "compile", fake_compile)
    result = mobilenets.train(tiny(pngs, tmp_path / "c", compile=True, epochs=1))
    assert len(compiled) == 1 and isinstance(compiled[0], mobilenets.MobileNet)
    tensors, _ = read_checkpoint(result.best_checkpoint)
    assert not any(k.startswith("_orig_mod") for k in tensors)


# ------------------------------------------------------------------------------------------------ benchmarks
def test_gpu_bench_rows_on_the_cpu(tmp_path):
    """`mobilenets bench --device cuda`'s code on the CPU at toy size: every row timed, peers included, ratios and
    JSON written; the CUDA-graph rows are left out with a note (they are GPU only)."""
    import json

    from mobilenets.export.bench import BenchConfig
    from mobilenets.export.gpu_bench import run_gpu_benchmark

    cfg = BenchConfig(models=("mobilenet_v3_small",), resolution=32, batch=2, quick=True, out_dir=str(tmp_path))
    result = run_gpu_benchmark(cfg, device="cpu", log=lambda *a: None)
    paths = [r["path"] for r in result["rows"]]
    assert paths == ["tv eager fp32", "tv eager bf16", "timm eager bf16", "ours eager fp32", "ours eager bf16",
                     "ours fast bf16"]
    assert all(r["latency_ms"] > 0 and r["throughput"] > 0 for r in result["rows"])
    assert "no CUDA graphs on cpu" in result["rows"][-1]["note"]
    assert json.loads((tmp_path / "bench_cpu.json").read_text())["ratios"][0]["model"] == "mobilenet_v3_small"
    assert {"throughput ours best / tv eager bf16", "batch-1 timm eager bf16 / ours best"} <= set(result["ratios"][0])


def test_bench_device_cuda_without_gpu_is_one_line(capsys):
    from mobilenets.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["bench", "--device", "cuda", "--model", "mobilenet_v3_small", "--quick"]) == 2
    assert "no CUDA GPU is visible" in capsys.readouterr().err


def test_compile_failure_is_one_line(monkeypatch):
    def broken_compile(module, **kw):
        def run(x):
            raise RuntimeError("InductorError: C++ compile error\n  long traceback")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    model = mobilenets.create_model("mobilenet_v3_small", width=0.35, num_classes=3)
    fast = prepare_for_inference(model, "cpu", InferenceOptions(compile=True))
    with pytest.raises(MobileNetsError, match=r"^torch.compile failed \(RuntimeError: InductorError: C\+\+ compile "
                                              r"error.*long traceback\); run without --compile$") as e:
        fast(torch.randn(1, 3, 32, 32))
    assert "\n" not in str(e.value)


def test_prefetch_thread_gives_the_same_batches(pngs):
    """The background-thread prefetcher (on by default on GPUs) yields the batches the plain loop does, in order
    (the val pipeline: no random draws), and passes a decoding error on to the consumer."""
    from torch.utils.data import DataLoader

    from mobilenets.data import ImageFiles, load_image_folders
    from mobilenets.gpu_data import DeviceBatches, DevicePipeline, EncodedImages, _collate
    from mobilenets.preprocess import Preprocessing

    splits = load_image_folders(pngs)
    ds = EncodedImages(ImageFiles(splits.train, splits.classes))
    loader = DataLoader(ds, batch_size=4, collate_fn=_collate)
    pipe = DevicePipeline.eval(Preprocessing(32, 36))
    plain = list(DeviceBatches(loader, ds, pipe, torch.device("cpu"), prefetch=False))
    threaded = list(DeviceBatches(loader, ds, pipe, torch.device("cpu"), prefetch=True, depth=1))
    workers = DataLoader(ds, batch_size=4, collate_fn=_collate, num_workers=2)  # packed bytes across processes
    from_workers = list(DeviceBatches(workers, ds, pipe, torch.device("cpu"), prefetch=True))
    assert len(plain) == len(threaded) == len(from_workers) == len(loader)
    for (a, y), (b, z), (c, w) in zip(plain, threaded, from_workers):
        assert a.equal(b) and y.equal(z) and a.equal(c) and y.equal(w)
    it = iter(DeviceBatches(loader, ds, pipe, torch.device("cpu"), prefetch=True))
    next(it)
    it.close()  # a consumer that stops early stops the thread (no hang)

    broken = ImageFiles([(str(pngs / "missing.png"), 0)] + splits.train[1:], splits.classes)
    bad = EncodedImages(broken)
    with pytest.raises(MobileNetsError, match="missing.png: unreadable image"):
        list(DeviceBatches(DataLoader(bad, batch_size=4, collate_fn=_collate), bad, pipe, torch.device("cpu"),
                           prefetch=True))


@pytest.mark.slow
def test_gpu_script_runs_end_to_end_on_the_cpu(tmp_path):
    """benchmarks/gpu.py, the one script a GPU session runs, at toy sizes on the CPU (~25 s): every step ends
    without an error and writes its part of the JSON."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "gpu.py"), "--device", "cpu", "--tiny",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    steps = json.loads((tmp_path / "gpu_tiny.json").read_text())["steps"]
    assert list(steps) == ["env", "jpegs", "checks", "model_alone", "pipeline_device", "pipeline_cpu", "inference",
                           "tests", "train_compile", "suite"]
    assert not [name for name, s in steps.items() if "error" in s]
    checks = steps["checks"]
    assert checks["prefetch_equals_plain"] and checks["eval_pipeline_vs_cpu_max_abs_uint8_levels"] == 0
    assert checks["inference_rel_l2_vs_eager_fp32_cpu"]["fp32 folded"] < 1e-4
    assert set(checks["host_syncs"]) == {"batches", "classification", "segmentation", "detection_train_step"}
    assert steps["model_alone"]["loop_step"]["images_per_s"] > 0
    assert steps["model_alone"]["read_every_step"]["read_every"] == 1
    assert steps["pipeline_device"]["images_per_s"] > 0 and steps["pipeline_cpu"]["images_per_s"] > 0
    assert steps["pipeline_device"]["ratio_to_model_alone"] > 0
    assert steps["pipeline_device"]["feed_alone"]["images_per_s"] > 0
    assert {r["path"] for r in steps["inference"]["rows"]} >= {"tv eager bf16", "timm eager bf16", "ours fast bf16"}
    assert all("skipped" in steps[k] for k in ("tests", "train_compile", "suite"))


@pytest.mark.parametrize("device", DEVICES)
def test_batched_crop_flip_draws_as_the_transforms(device):
    """CropFlip (the GPU's train crop + flip) draws the same random numbers as RandomResizedCrop +
    RandomHorizontalFlip and gives their batch: within one uint8 level on a CPU (torchvision's fixed-point uint8
    resize there), identical on a GPU (where torchvision resizes uint8 as CropFlip does)."""
    from mobilenets.gpu_data import DevicePipeline

    kw = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), crop_scale=(0.08, 1.0), hflip=0.5,
              augment="none")
    exact, fast = DevicePipeline.train(32, **kw), DevicePipeline.train(32, batched=True, **kw)
    assert exact.batched is None and fast.batched is not None
    assert DevicePipeline.train(32, **{**kw, "augment": "randaugment"}, batched=True).batched is None
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, *torch.randint(16, 80, (2,), generator=g).tolist()), dtype=torch.uint8,
                            generator=g).to(device) for _ in range(64)]
    images.append(torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8).to(device))  # a crop of the output size
    for seed in range(3):
        torch.manual_seed(seed)
        a, after_a = exact(images), torch.rand(1)
        torch.manual_seed(seed)
        b, after_b = fast(images), torch.rand(1)
        assert after_a == after_b  # the same number of draws, in the same order
        level = 1 / 255 / 0.225
        if device == "cuda":
            assert a.equal(b)
        else:
            assert (a - b).abs().max().item() <= 1.01 * level
            assert ((a - b).abs() > 0.5 * level).float().mean().item() < 0.5  # most values equal


def test_cli_flags_reach_the_configs():
    from mobilenets.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["train", "--decode-on", "device", "--compile"])
    assert (args.decode_on, args.compile) == ("device", True)
    assert parser.parse_args(["train"]).decode_on == "auto"
    assert not hasattr(parser.parse_args(["train-detection"]), "decode_on")  # classification only
    args = parser.parse_args(["bench", "--device", "cuda", "--batch", "128"])
    assert (args.device, args.batch) == ("cuda", 128)
    args = parser.parse_args(["eval", "--weights", "w.safetensors", "--precision", "bf16", "--cuda-graphs"])
    assert (args.precision, args.cuda_graphs, args.fold_bn) == ("bf16", True, True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_reads_statistics_every_few_steps(pngs, tmp_path):
    """On a GPU the loop reads the batch statistics every HOST_SYNC_STEPS steps: the epoch's sums are all there
    (train top-1 is a fraction of the images seen), and a diverging loss is one line naming the unread steps."""
    from mobilenets.training.loop import HOST_SYNC_STEPS

    from .test_train import tiny

    run = mobilenets.train(tiny(pngs, tmp_path / "ok", epochs=1, device="cuda"))
    row = run.history[0]
    assert math.isfinite(row["train_loss"]) and 0.0 <= row["train_top1"] <= 100.0
    with pytest.raises(MobileNetsError, match=r"the loss became non-finite within steps \d+-\d+"):
        mobilenets.train(tiny(pngs, tmp_path / "nan", epochs=1, lr=1e12, warmup_epochs=0, device="cuda"))
    assert HOST_SYNC_STEPS > 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_ema_and_evaluation_do_not_wait_for_the_gpu_per_step():
    """The EMA update queues kernels only (its counter stays on the CPU), and an evaluation reads its sums once,
    not once per batch."""
    from mobilenets.tasks.base import EvalContext
    from mobilenets.tasks.classification import ClassificationTask
    from mobilenets.training.ema import WeightEMA

    model = _calibrated("mobilenet_v3_small").cuda()
    ema = WeightEMA(model, 0.99)
    assert count_host_syncs(lambda: [ema.update_parameters(model) for _ in range(3)]) == 0
    batches = [(torch.randn(8, 3, 64, 64).pin_memory(), torch.randint(0, 10, (8,)).pin_memory()) for _ in range(8)]
    ctx = EvalContext(device=torch.device("cuda"), amp_dtype=None, channels_last=False)
    task = ClassificationTask(mobilenets.TrainConfig())
    assert count_host_syncs(lambda: task.evaluate(model, batches, ctx)) < len(batches)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_detection_step_does_not_wait_for_the_gpu():
    """Matching, hard negatives and the box loss stay on the device (masks, no boolean indexing or counts read
    back); the labels are checked on the CPU before they travel."""
    from mobilenets.tasks.detection import DetectionTask

    task = DetectionTask(mobilenets.TrainConfig(task="detection"))
    detector = task.build_model(3, None).cuda().train()
    x = torch.randn(4, 3, 160, 160, device="cuda")
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 70.0]] * i), "labels": torch.ones(i, dtype=torch.int64)}
               for i in range(4)]

    def step():
        loss, _ = task.loss(detector(x), task.targets_to(targets, torch.device("cuda")))
        loss.backward()

    step()  # the default boxes move to the GPU once
    assert count_host_syncs(step) == 0
