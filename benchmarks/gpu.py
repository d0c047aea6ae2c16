"""Issue 14's GPU checks and measurements in one run: about 8 minutes on one H100, no network, writes JSON.

    PYTHONPATH=src python benchmarks/gpu.py                       # on a GPU machine -> $OUT/gpu.json (or
                                                                  #   benchmarks/results/gpu.json without $OUT)
    PYTHONPATH=src python benchmarks/gpu.py --device cpu --tiny   # the same steps at toy sizes on a CPU (the test
                                                                  #   suite runs this; its figures mean nothing)

Steps, in order of importance (each one's result, or its error in one line, is written to the JSON as soon as it
ends; a step that would not fit in what is left of ``--budget-s`` is skipped and says so):

1. ``env``: GPU, CUDA, torch / torchvision / timm versions, CPU count.
2. ``jpegs``: an ImageFolder of JPEGs this script generates (10 classes, 12,800 train + 512 val images of
   256-512 px per side, smooth colour fields with fine noise, quality 90: ~30-60 KB files, ImageNet-like sizes).
3. ``checks``: what the test suite cannot see without a GPU: nvJPEG decoding vs the CPU decoder, the device
   eval pipeline vs the CPU one, the prefetch thread's batches vs the plain loop's, BN-folded fp32 / bf16 /
   CUDA-graph inference vs eager, the host syncs in one classification and one segmentation evaluation (their
   sums are read once, not per batch) and in a detection training step, and torchrun with one process more than
   there are GPUs (one-line error).
4. ``model_alone``: V3-Large at 224, batch 256, bf16 autocast, channels_last: the training loop's step (AdamW,
   label smoothing, EMA) on one batch kept on the GPU, images/s and host syncs per step: as the loop runs it (batch
   statistics read every ``HOST_SYNC_STEPS`` steps, ``WeightEMA``), read every step, and as it was before both
   (read every step, torch's AveragedModel: two more syncs per step).
5. ``pipeline_device`` / ``pipeline_cpu``: ``mobilenets.train`` on the JPEG folder (2 epochs, workers = CPU count)
   with ``decode_on="device"`` and ``"cpu"``; images/s of epoch 2 and its ratio to the model-alone rate
   (issue 14's target: >= 0.8); and the training loader alone (no step): can the feed keep up at all?
6. ``inference``: ``mobilenets bench --device cuda`` for V3-Large at 224: batch-1 latency (target with CUDA graphs
   <= 1.0 ms) and batch-256 throughput vs torchvision's and timm's eager bf16 (target >= 1.3x torchvision's).
7. ``tests``: ``pytest -m "not slow" tests/test_gpu.py`` (its CUDA checks run only where a GPU is visible).
8. ``train_compile``: the model-alone step under ``torch.compile``: compile time and images/s vs eager.
9. ``suite``: the whole test suite (not slow; pytest-xdist where installed) with the GPU visible, in what is left
   of the budget (a timeout is reported as the step's error).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


class Budget:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


# ----------------------------------------------------------------------------------------------------- data
def _write_jpeg(args) -> None:
    import numpy as np
    from PIL import Image

    path, seed, lo, hi = args
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
    coarse = Image.fromarray(rng.integers(0, 256, (max(h // 32, 2), max(w // 32, 2), 3), dtype=np.uint8))
    img = np.asarray(coarse.resize((w, h), Image.BICUBIC), dtype=np.int16)
    img = img + rng.integers(-12, 13, (h, w, 3), dtype=np.int16)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)


def make_jpegs(root: Path, *, classes: int, train: int, val: int, lo: int, hi: int) -> dict:
    from multiprocessing import Pool

    jobs = []
    for part, n in (("train", train), ("val", val)):
        for i in range(n):
            d = root / part / f"class{i % classes:02d}"
            d.mkdir(parents=True, exist_ok=True)
            jobs.append((d / f"{i:06d}.jpg", 2 * i + (part == "val"), lo, hi))
    t = time.perf_counter()
    with Pool(min(os.cpu_count() or 1, 16)) as pool:
        pool.map(_write_jpeg, jobs, chunksize=64)
    sizes = [p.stat().st_size for p, *_ in jobs]
    return {"train": train, "val": val, "classes": classes, "side_px": [lo, hi],
            "mean_kb": sum(sizes) / len(sizes) / 1e3, "seconds": time.perf_counter() - t}


# --------------------------------------------------------------------------------------------------- checks
def checks(root: Path, device: torch.device, tiny: bool) -> dict:
    import mobilenets
    from mobilenets.data import ImageFiles, load_image_folders
    from mobilenets.fast import InferenceOptions, prepare_for_inference
    from mobilenets.gpu_data import DeviceBatches, DevicePipeline, EncodedImages, _collate, decode_images
    from mobilenets.preprocess import IMAGENET
    from torch.utils.data import DataLoader

    out = {}
    splits = load_image_folders(root)
    ds = EncodedImages(ImageFiles(splits.val, splits.classes))
    n = min(64, len(ds))
    data = [ds[i][0] for i in range(n)]
    on_dev = decode_images(data, device, [ds.name(i) for i in range(n)])
    on_cpu = decode_images(data, torch.device("cpu"), [ds.name(i) for i in range(n)])
    diffs = [(a.cpu().int() - b.int()).abs() for a, b in zip(on_dev, on_cpu)]
    out["decode_vs_cpu"] = {"images": n, "max_abs": max(d.max().item() for d in diffs),
                            "mean_abs": sum(d.float().mean().item() for d in diffs) / n}

    pre = IMAGENET.with_size(32 if tiny else 224)
    loader = DataLoader(ds, batch_size=16, collate_fn=_collate)
    pipe = DevicePipeline.eval(pre)
    plain = list(DeviceBatches(loader, ds, pipe, device, prefetch=False))
    threaded = list(DeviceBatches(loader, ds, pipe, device, prefetch=True))
    cpu = list(DeviceBatches(loader, ds, pipe, torch.device("cpu"), prefetch=False))
    out["prefetch_equals_plain"] = all(a.equal(b) and y.equal(z) for (a, y), (b, z) in zip(plain, threaded)) and \
        len(plain) == len(threaded)
    step = 1 / 255 / min(pre.std)
    out["eval_pipeline_vs_cpu_max_abs_uint8_levels"] = max(
        (a.cpu() - b).abs().max().item() for (a, _), (b, _) in zip(plain, cpu)) / step

    kw = dict(mean=pre.mean, std=pre.std, crop_scale=(0.08, 1.0), hflip=0.5, augment="none")
    exact, fast = DevicePipeline.train(pre.crop, **kw), DevicePipeline.train(pre.crop, batched=True, **kw)
    torch.manual_seed(0)
    a = exact(on_dev)
    torch.manual_seed(0)
    b = fast(on_dev)
    out["cropflip_vs_v2_max_abs_uint8_levels"] = (a - b).abs().max().item() / step
    t = time.perf_counter()
    for pipe_ in (exact, fast, exact, fast):
        pipe_(on_dev)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        out.setdefault("train_crop_flip_ms_per_image", {}).setdefault(
            "v2" if pipe_ is exact else "CropFlip", []).append(1e3 * (time.perf_counter() - t) / len(on_dev))
        t = time.perf_counter()

    torch.manual_seed(0)
    model = mobilenets.create_model("mobilenet_v3_small", width=0.35) if tiny else \
        mobilenets.create_model("mobilenet_v3_large")
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 3, 64 if tiny else 224, 64 if tiny else 224))
    model.eval()
    x = torch.randn(4, 3, 64 if tiny else 224, 64 if tiny else 224)
    with torch.no_grad():
        ref = model(x)
    rel = {}
    variants = {"fp32 folded": InferenceOptions(), "bf16 folded channels_last": InferenceOptions("bf16", True)}
    if device.type == "cuda":
        variants["bf16 folded channels_last cuda_graphs"] = InferenceOptions("bf16", True, cuda_graphs=True)
        variants["fp16 folded channels_last cuda_graphs"] = InferenceOptions("fp16", True, cuda_graphs=True)
    for name, opts in variants.items():
        y = prepare_for_inference(model, device, opts)(x).cpu()
        rel[name] = (torch.linalg.norm(y - ref) / torch.linalg.norm(ref)).item()
    out["inference_rel_l2_vs_eager_fp32_cpu"] = rel

    try:  # a failure here must not lose the checks above
        out["host_syncs"] = host_syncs(device, 2 if tiny else 8)
    except Exception as e:  # noqa: BLE001
        out["host_syncs"] = {"error": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"}
    if device.type == "cuda":  # torchrun: one process more than there are GPUs -> one line per rank
        n = torch.cuda.device_count() + 1
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={n}",
                                   "-m", "mobilenets", "train", "--epochs", "1", "--output", f"{tmp}/run",
                                   "--no-progress"], capture_output=True, text=True, timeout=120,
                                  env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        lines = [ln for ln in proc.stderr.splitlines() if "mobilenets train: error" in ln]
        out["torchrun_too_many_processes"] = {"returncode": proc.returncode, "error_lines": lines[:2],
                                              "invalid_device_ordinal": "invalid device ordinal" in proc.stderr}
    return out


def host_syncs(device: torch.device, batches: int = 8) -> dict:
    """Host syncs in one evaluation of 8 batches by the classification and segmentation tasks (the loop's
    per-epoch evaluation): their sums stay on the device and are read once, so a handful, not one per batch;
    and in one detection training step (forward, multibox loss, backward): none expected. On a CPU all of it
    runs (the tiny mode checks the code) and the counts are None."""
    import mobilenets
    from mobilenets.device import count_host_syncs
    from mobilenets.tasks.base import EvalContext
    from mobilenets.tasks.classification import ClassificationTask
    from mobilenets.tasks.segmentation import SegmentationTask

    def run_only(fn) -> None:  # on a CPU: nothing to count
        fn()

    cuda = device.type == "cuda"
    count = count_host_syncs if cuda else run_only
    pin = (lambda t: t.pin_memory()) if cuda else (lambda t: t)
    ctx = EvalContext(device=device, amp_dtype=torch.bfloat16 if cuda else None, channels_last=True)
    images = [pin(torch.randn(16, 3, 64, 64)) for _ in range(batches)]
    out = {"batches": batches}
    classifier = mobilenets.create_model("mobilenet_v3_small", num_classes=10).to(device)
    labels = [pin(torch.randint(0, 10, (16,))) for _ in range(batches)]
    task = ClassificationTask(mobilenets.TrainConfig())
    out["classification"] = count(lambda: task.evaluate(classifier, list(zip(images, labels)), ctx))
    segmenter = mobilenets.create_model("lraspp_mobilenet_v3_small", num_classes=4).to(device)
    masks = [pin(torch.randint(0, 4, (16, 64, 64))) for _ in range(batches)]
    task = SegmentationTask(mobilenets.TrainConfig(task="segmentation"))
    task.num_classes = 4
    out["segmentation"] = count(lambda: task.evaluate(segmenter, list(zip(images, masks)), ctx))

    # and one detection training step's forward + loss (matching, hard negatives), labels coming on the CPU
    from mobilenets.tasks.detection import DetectionTask

    task = DetectionTask(mobilenets.TrainConfig(task="detection"))
    detector = task.build_model(3, None).to(device).train()
    size = task.config.resolution
    x = torch.randn(8, 3, size, size, device=device)
    g = torch.Generator().manual_seed(0)
    targets = []
    for i in range(8):
        xy = torch.rand(i % 4, 2, generator=g) * (size - 40)
        targets.append({"boxes": torch.cat([xy, xy + 8 + torch.rand(i % 4, 2, generator=g) * 30], 1),
                        "labels": torch.randint(1, 4, (i % 4,), generator=g)})

    def detection_step():
        with torch.autocast(device.type, dtype=ctx.amp_dtype, enabled=ctx.amp_dtype is not None):
            loss, _ = task.loss(detector(x), task.targets_to(targets, device))
        loss.backward()

    detection_step()  # the default boxes move to the device once, here
    out["detection_train_step"] = count(detection_step)
    return out


# ------------------------------------------------------------------------------------------------- training
def _torch_ema(model: torch.nn.Module, decay: float) -> torch.nn.Module:
    """What the loop's EMA was before ``training/ema.py``: torch's AveragedModel with timm's warm-up."""
    from torch.optim.swa_utils import AveragedModel

    def update(ema_params, params, num_averaged):
        if not ema_params[0].is_floating_point():
            torch._foreach_copy_(ema_params, params)
            return
        t = float(num_averaged)
        torch._foreach_lerp_(ema_params, params, 1.0 - min(decay, (1.0 + t) / (10.0 + t)))

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)


def model_alone(device: torch.device, *, model_name: str, width: float, res: int, batch: int, steps: int,
                warmup: int, read_every: int, torch_ema: bool = False, compile_: bool = False) -> dict:
    """images/s of the training loop's step (mobilenets.training: AdamW, label smoothing, EMA, the task's loss
    and batch statistics) on one batch kept on the device. The statistics, and whether the loss is finite, are
    read on the host every ``read_every`` steps, as the loop does (``HOST_SYNC_STEPS`` on a GPU; 1: every step,
    what it did before); ``torch_ema``: the EMA the loop had before (AveragedModel). On a GPU, also the host
    syncs per step over one read interval."""
    from mobilenets import TrainConfig, create_model
    from mobilenets.device import count_host_syncs
    from mobilenets.tasks import get_task
    from mobilenets.training.ema import WeightEMA
    from mobilenets.training.loop import _amp_dtype
    from mobilenets.training.optim import make_optimizer, make_schedule

    config = TrainConfig(model=model_name, width=width, resolution=res, batch_size=batch, data="unused",
                         device=str(device), epochs=1)
    task = get_task(config)
    amp = _amp_dtype(config, device)
    model = create_model(model_name, width=width, num_classes=1000).to(device).to(memory_format=torch.channels_last)
    ema = _torch_ema(model, config.ema_decay) if torch_ema else WeightEMA(model, config.ema_decay)
    opt = make_optimizer(config, model)
    sched = make_schedule(config, opt, warmup + steps + read_every)
    net = torch.compile(model) if compile_ else model
    x = torch.randn(batch, 3, res, res, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)
    pending = []

    def one_step() -> None:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss, stats = task.loss(net(x), y)
        pending.append(stats["loss"])
        if len(pending) == read_every:  # one transfer, as the loop's _read_sums
            if not all(math.isfinite(v) for v in torch.stack(pending).tolist()):
                raise RuntimeError("non-finite loss")
            pending.clear()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ema.update_parameters(model)

    t_start = time.perf_counter()
    one_step()
    t_first = time.perf_counter() - t_start
    for i in range(1, warmup + steps):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
        one_step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    out = {"images_per_s": batch * steps / (time.perf_counter() - t0), "first_step_s": t_first,
           "amp": str(amp), "steps": steps, "batch": batch, "read_every": read_every,
           "ema": "AveragedModel" if torch_ema else "WeightEMA"}
    if device.type == "cuda":
        pending.clear()
        syncs = count_host_syncs(lambda: [one_step() for _ in range(read_every)])
        out["host_syncs_per_step"] = syncs / read_every
    return out


def pipeline(root: Path, device: torch.device, mode: str, *, model_name: str, width: float, res: int, batch: int,
             epochs: int, workers: int, work: Path) -> dict:
    import mobilenets

    config = mobilenets.TrainConfig(data=str(root), model=model_name, width=width, resolution=res,
                                    batch_size=batch, epochs=epochs, workers=workers, decode_on=mode,
                                    device=str(device), output=str(work / f"run_{mode}"), progress=False)
    t = time.perf_counter()
    result = mobilenets.train(config)
    return {"decode_on": mode, "workers": workers, "epochs": [
        {k: row[k] for k in ("epoch", "images_per_s", "epoch_s", "train_loss", "val_top1")} for row in result.history],
        "images_per_s": result.history[-1]["images_per_s"], "seconds": time.perf_counter() - t}


def feed_alone(root: Path, device: torch.device, mode: str, *, model_name: str, width: float, res: int, batch: int,
               workers: int, work: Path, batches: int) -> dict:
    """images/s of the training loader alone (as the loop builds it: decoded, augmented, normalised batches on the
    device), no training step: whether the input pipeline could keep up with the model at all."""
    import mobilenets
    from mobilenets.training.distributed import Dist
    from mobilenets.training.loop import _Run

    config = mobilenets.TrainConfig(data=str(root), model=model_name, width=width, resolution=res, batch_size=batch,
                                    epochs=1, workers=workers, decode_on=mode, device=str(device), progress=False,
                                    output=str(work / f"feed_{mode}"))
    run = _Run(config, work / f"feed_{mode}", None, device, Dist(), None)
    run._prepare()
    n, t0 = 0, None
    skip = max(0, min(2, len(run.train_loader) - 2))  # the workers' start and the first batches are not timed
    for i, (x, y) in enumerate(run.train_loader):
        x = x.to(device, non_blocking=True)
        if i == skip:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
        elif i > skip:
            n += len(y)
        if i == batches + skip:
            break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return {"images_per_s": n / (time.perf_counter() - t0) if t0 and n else None, "batches": batches}


# ---------------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="toy sizes (a check that the script runs, on a CPU)")
    ap.add_argument("--out", help="folder for gpu.json (default $OUT, else benchmarks/results)")
    ap.add_argument("--budget-s", type=float, default=480.0, help="skip steps that would not end within this")
    ap.add_argument("--skip", action="append", default=[], help="leave out a step (repeatable)")
    ap.add_argument("--only", action="append", default=[],
                    help="run only this step (repeatable; env and jpegs always run): e.g. a second device call for "
                         "the steps the first one's budget left out")
    args = ap.parse_args(argv)

    import mobilenets
    from mobilenets.device import resolve_device
    from mobilenets.training.loop import HOST_SYNC_STEPS

    device = resolve_device(args.device)
    tiny = args.tiny
    if tiny:
        torch.set_num_threads(1)  # toy sizes on a shared CPU: one thread is fastest
    out_dir = Path(args.out or os.environ.get("OUT") or ROOT / "benchmarks" / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    out_file = out_dir / (("gpu_tiny" if tiny else "gpu") + ("_" + "_".join(args.only) if args.only else "") + ".json")
    budget = Budget(args.budget_s)
    results: dict = {"device": str(device), "tiny": tiny, "steps": {}}
    cpus = os.cpu_count() or 1
    size = dict(model_name="mobilenet_v3_small", width=0.35, res=32, batch=8) if tiny else \
        dict(model_name="mobilenet_v3_large", width=1.0, res=224, batch=256)

    def save() -> None:
        out_file.write_text(json.dumps(results, indent=1, default=str))

    def step(name: str, need_s: float, fn):
        if name in args.skip or (args.only and name not in (*args.only, "env", "jpegs")):
            results["steps"][name] = {"skipped": "--skip / --only"}
        elif budget.left() < need_s:
            results["steps"][name] = {"skipped": f"{budget.left():.0f} s left of the budget, needs ~{need_s:.0f}"}
        else:
            t = time.perf_counter()
            try:
                r = fn()
                results["steps"][name] = {**r, "step_s": round(time.perf_counter() - t, 1)}
            except Exception as e:  # noqa: BLE001 - one step's failure must not lose the others
                results["steps"][name] = {"error": f"{type(e).__name__}: {' '.join(str(e).split())[:500]}",
                                          "traceback": traceback.format_exc()[-3000:],
                                          "step_s": round(time.perf_counter() - t, 1)}
        print(f"[{name}] {json.dumps(results['steps'][name], default=str)[:1500]}", flush=True)
        save()

    def env() -> dict:
        import torchvision

        try:
            import timm

            timm_version = timm.__version__
        except ImportError:
            timm_version = None
        return {"device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
                "torch": torch.__version__, "torchvision": torchvision.__version__, "timm": timm_version,
                "cuda": torch.version.cuda, "cpus": cpus, "mobilenets": mobilenets.__version__,
                "python": platform.python_version()}

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "jpegs"
        step("env", 0, env)
        step("jpegs", 5, lambda: make_jpegs(data, **(dict(classes=2, train=16, val=8, lo=40, hi=72) if tiny else
                                                   dict(classes=10, train=12_800, val=512, lo=256, hi=512))))
        if not data.is_dir():
            print("no data: stopping", flush=True)
            return 1
        step("checks", 20, lambda: checks(data, device, tiny))
        steps, warmup = (3, 1) if tiny else (40, 10)
        every = 2 if tiny else HOST_SYNC_STEPS
        step("model_alone", 15, lambda: {  # V3-Large at 224, batch 256 (tiny: V3-Small 0.35 at 32, batch 8)
            "loop_step": model_alone(device, **size, steps=steps, warmup=warmup, read_every=every),
            "read_every_step": model_alone(device, **size, steps=steps, warmup=warmup, read_every=1),
            "before": model_alone(device, **size, steps=steps, warmup=warmup, read_every=1, torch_ema=True)})
        # the pipeline's target is against the faster of the two: the model alone at its best
        alone = max((r.get("images_per_s") or 0 for r in results["steps"]["model_alone"].values()
                     if isinstance(r, dict)), default=0) or None
        for mode in ("device", "cpu"):
            def run(mode=mode):
                workers = 0 if tiny else cpus
                r = pipeline(data, device, mode, **size, epochs=2, workers=workers, work=work)
                if alone:
                    r["ratio_to_model_alone"] = r["images_per_s"] / alone
                r["feed_alone"] = feed_alone(data, device, mode, **size, workers=workers, work=work,
                                             batches=1 if tiny else 30)
                return r

            step(f"pipeline_{mode}", 30, run)

        def inference() -> dict:
            from mobilenets.export.bench import BenchConfig
            from mobilenets.export.gpu_bench import run_gpu_benchmark

            cfg = BenchConfig(models=("mobilenet_v3_small" if tiny else "mobilenet_v3_large",),
                              resolution=32 if tiny else 224, batch=2 if tiny else 256,
                              quick=tiny, out_dir=str(out_dir))
            r = run_gpu_benchmark(cfg, device=device)
            return {"rows": r["rows"], "ratios": r["ratios"], "device": r["device"]}

        step("inference", 60, inference)

        def tests() -> dict:
            proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-m", "not slow", "-p",
                                   "no:cacheprovider", "tests/test_gpu.py"], cwd=ROOT, capture_output=True, text=True,
                                  timeout=max(60, budget.left() - 10),
                                  env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
            return {"returncode": proc.returncode, "tail": proc.stdout[-2000:] + proc.stderr[-1000:]}

        if tiny:
            results["steps"]["tests"] = {"skipped": "tiny mode (the suite runs this script)"}
        else:
            step("tests", 90, tests)

        if device.type == "cuda":
            step("train_compile", 120, lambda: {
                "compiled": model_alone(device, **size, steps=steps, warmup=warmup, read_every=HOST_SYNC_STEPS,
                                        compile_=True),
                "eager_images_per_s": alone})
        else:
            results["steps"]["train_compile"] = {"skipped": "Inductor on a CPU takes minutes (GPU only here)"}

        def suite() -> dict:  # the whole suite (not slow) with the GPU visible, in what is left of the budget
            try:
                import xdist  # noqa: F401

                parallel = ["-n", str(min(8, cpus))]
            except ImportError:
                parallel = []
            proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider",
                                   *parallel, "tests"], cwd=ROOT, capture_output=True, text=True,
                                  timeout=max(30, budget.left() - 5),
                                  env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
            failed = [ln for ln in proc.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))]
            return {"returncode": proc.returncode, "failed": failed[:50], "tail": proc.stdout[-1500:]}

        if tiny:
            results["steps"]["suite"] = {"skipped": "tiny mode"}
        else:
            step("suite", 60, suite)
    save()
    print(f"wrote {out_file}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
