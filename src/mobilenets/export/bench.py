"""Inference speed of our model on every runtime we export to, against torchvision's model on the same
runtimes, in one run on one machine: batch-1 latency (median) and batch-32 throughput on N CPU threads.

Rows per model ("ours" = mobilenets, "tv" = torchvision; for MobileNetV4, which torchvision does not have,
the peer is timm's ``mobilenetv4_*``, rows "timm"). Both models get the same treatment: random
initial weights whose batch-norm statistics are then recomputed (:func:`calibrate_batchnorm`) on the inputs
the models see here: the built-in digits images at the benchmark resolution (which the int8 files are
calibrated on) mixed one-to-one with the standard-normal tensors the timings and export checks use. Every
layer then sees activations of a trained network's scale instead of the vanishing ones a random init gives
(those fall into denormal floats, which made PyTorch timings jump by 10x and more) or the exploding ones
BN statistics from one kind of input give on the other (logits ~1000); denormals are also flushed to zero (``torch.set_flush_denormal``,
onnxruntime's ``session.set_denormal_as_zero``). The int8 files are calibrated on the same digits images.
Pairs that are compared (ours vs tv on one runtime) are timed interleaved, A B A B ..., and medians taken,
so a change in machine load affects both alike.

- ``tv eager``, ``ours eager``: ``model(x)`` in PyTorch;
- ``ours best pytorch``: the fastest of several inference paths (BN folded + ``torch.jit.freeze``, the same
  in channels_last, ``torch.jit.optimize_for_inference``, ``torch.compile``), named in the output;
- ``ours|tv onnxruntime``, ``ours|tv litert``, ``ours executorch``: files written by
  :func:`mobilenets.export.export_model` (each verified against PyTorch as it is written);
- ``ours onnxruntime int8``, ``ours litert int8``, ``ours executorch int8``: post-training static int8.

The ONNX / TFLite rows note the number of operators in the file (ours vs torchvision's graph).

Detector and segmenter rows (``ssdlite_mobilenet_v3_large``, ``lraspp_mobilenet_v3_large`` in ``models``; or
only them: ``mobilenets bench --model ssdlite_mobilenet_v3_large``) time the tensor-only core (image in, raw
outputs out: class logits + box regressions per default box, or full-resolution segmentation logits; no
resizing, decoding or NMS) of ours in its ``"torchvision"`` configuration against torchvision's
``ssdlite320_mobilenet_v3_large`` / ``lraspp_mobilenet_v3_large`` (``weights=None, weights_backbone=None``)
with its input transform and post-processing left out, at the sizes torchvision evaluates them at (320, 520),
batch-1 latency only: ``tv|ours eager``, ``ours|tv onnxruntime``, ``ours|tv litert``, ``ours executorch``. Both
get the same BN calibration as the classifiers (at that size); our files are written by ``export_model`` with
the task's full check (detections / argmax on a few shapes val images), torchvision's with the output check.
"""

from __future__ import annotations

import copy
import json
import statistics
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..checkpoint import atomic_write
from ..errors import MobileNetsError, output_file
from .core import export_model
from .fuse import fold_batchnorm
from .options import BENCH_MODELS, BENCH_RUNTIMES, DENSE_MODELS
from .runtimes import load_artifact

__all__ = ["BenchConfig", "run_benchmark", "time_fn", "time_interleaved", "calibrate_batchnorm",
           "bn_calibration_images", "count_ops"]

RUNTIMES = BENCH_RUNTIMES
DENSE_CHECK_IMAGES = 4  # val images the export check of a dense file runs on here (speed only)
DENSE_BN_IMAGES = 16  # digits (+ as many noise tensors) calibrating the dense models' BN at 320 / 520 px


@dataclass(frozen=True)
class BenchConfig:
    models: tuple[str, ...] = BENCH_MODELS
    resolution: int = 224  # the classifiers' (the dense rows use DENSE_MODELS' sizes)
    threads: int = 2
    batch: int = 32  # the throughput batch
    quick: bool = False  # fewer repetitions, no torch.compile, no batch-32 throughput
    out_dir: str = "benchmarks/results"
    skip: tuple[str, ...] = ()  # any of RUNTIMES
    calib_images: int = 64  # digits images calibrating the int8 files (speed only; see the module doc)
    device: str = "cpu"  # cpu: this module's runtimes; cuda...: the GPU inference paths (gpu_bench.py)


@dataclass
class Row:
    model: str
    path: str  # e.g. "ours onnxruntime"
    latency_ms: float  # batch-1 median
    throughput: float | None  # images/s at cfg.batch
    note: str = ""
    export: dict = field(default_factory=dict)  # the ExportReport of the file, where one was written


def time_interleaved(fns: list[Callable[[], object]], *, warmup: int, runs: int, rounds: int = 5,
                     settle_s: float = 0.05) -> list[float]:
    """Median seconds per call of each of ``fns``, each called ``runs`` times (after ``warmup`` calls) in
    ``rounds`` alternating rounds (A A A B B B A A A B B B ...): drift in machine load hits every function
    alike, so their ratio means something on a shared machine.

    Each turn starts with untimed calls for ``settle_s`` seconds (at least one; none when there is one
    function): a runtime's worker threads keep spinning for a while after its last call, and on a 2-core
    machine the spinning threads of the function just timed took a core from the next one. Without this, two
    onnxruntime sessions of the same V2 graph (3.4 ms alone) measured 5-8 ms each when timed in turns, and
    their ratio swung from 0.6 to 1.5 between runs; with 50 ms of settling, 3.4 ms and 1.00 +- 0.01."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    rounds = max(1, min(rounds, runs))
    for r in range(rounds):
        n = runs // rounds + (1 if r < runs % rounds else 0)
        for i, fn in enumerate(fns):
            if len(fns) > 1:
                end = time.perf_counter() + settle_s
                fn()
                while time.perf_counter() < end:
                    fn()
            for _ in range(n):
                t = time.perf_counter()
                fn()
                times[i].append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


def time_fn(fn: Callable[[], object], *, warmup: int, runs: int) -> float:
    """Median seconds of ``fn()`` over ``runs`` calls after ``warmup`` calls."""
    return time_interleaved([fn], warmup=warmup, runs=runs, rounds=1)[0]


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, images: np.ndarray, *, batch: int = 16) -> nn.Module:
    """Recompute every BatchNorm's running mean and variance as the exact average over ``images`` (in
    train-mode forward passes; no weight changes), then put ``model`` in eval mode; returns ``model``.
    With random conv weights this gives each layer unit-scale, centred inputs, as in a trained network."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over all batches
    model.train()
    for i in range(0, len(images), batch):
        model(torch.from_numpy(images[i:i + batch]))
    return model.eval()


def bn_calibration_images(resolution: int, n: int) -> np.ndarray:
    """The inputs :func:`calibrate_batchnorm` sees in the benchmarks: ``n`` built-in digits images at
    ``resolution`` alternating with ``n`` standard-normal tensors (what the timings and export checks feed),
    so every batch mixes both (see the module doc)."""
    from ..preprocess import IMAGENET
    from .data import load_images

    digits = load_images("digits", preprocessing=IMAGENET.with_size(resolution), role="calib", limit=n).images
    noise = np.random.default_rng(2).standard_normal(digits.shape).astype(np.float32)
    return np.stack([digits, noise], axis=1).reshape(-1, *digits.shape[1:])


def count_ops(path: Path | str, fmt: str) -> int | None:
    """Operators in an ONNX or TFLite file (None for other formats)."""
    if fmt == "onnx":
        import onnx

        return len(onnx.load(str(path), load_external_data=False).graph.node)
    if fmt == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(path))
        return sum(1 for op in interp._get_ops_details() if op["op_name"] != "DELEGATE")
    return None


class _Timer:
    def __init__(self, cfg: BenchConfig) -> None:
        self.cfg = cfg
        self.x1 = np.random.default_rng(0).standard_normal((1, 3, cfg.resolution, cfg.resolution)).astype(np.float32)
        self.xb = np.random.default_rng(1).standard_normal((cfg.batch, 3, cfg.resolution, cfg.resolution)) \
            .astype(np.float32)
        self.runs1, self.warm1 = (15, 3) if cfg.quick else (60, 10)
        self.runsb = 0 if cfg.quick else 5

    def numpy_calls(self, fn: Callable[[np.ndarray], object]) -> tuple[Callable, Callable]:
        return (lambda: fn(self.x1)), (lambda: fn(self.xb))

    def torch_calls(self, module, channels_last: bool = False) -> tuple[Callable, Callable]:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        x1 = torch.from_numpy(self.x1).contiguous(memory_format=fmt)
        xb = torch.from_numpy(self.xb).contiguous(memory_format=fmt)

        def call(x):
            with torch.inference_mode():
                return module(x)

        return (lambda: call(x1)), (lambda: call(xb))

    def measure(self, *calls: tuple[Callable, Callable]) -> list[tuple[float, float | None]]:
        """(batch-1 latency ms, batch throughput img/s) of each (batch-1 call, batch call), timed interleaved."""
        lats = time_interleaved([c[0] for c in calls], warmup=self.warm1, runs=self.runs1)
        thrs: list[float | None] = [None] * len(calls)
        if self.runsb:
            thrs = [self.cfg.batch / t for t in
                    time_interleaved([c[1] for c in calls], warmup=1, runs=self.runsb, rounds=self.runsb)]
        return [(lat * 1e3, thr) for lat, thr in zip(lats, thrs)]

    def torch_fn(self, module, channels_last: bool = False) -> tuple[float, float | None]:
        return self.measure(self.torch_calls(module, channels_last))[0]


def _pytorch_paths(model: nn.Module, cfg: BenchConfig, timer: _Timer) -> list[tuple[str, float, float | None]]:
    """Time each candidate inference path of ``model``; returns (name, latency ms, throughput)."""
    x = torch.from_numpy(timer.x1)
    folded = fold_batchnorm(model)
    out = []
    # TorchScript is deprecated upstream (see core._write_torchscript); its FutureWarnings say nothing here
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        frozen = torch.jit.freeze(torch.jit.trace(folded, x, check_trace=False))
        out.append(("BN folded + jit.freeze", *timer.torch_fn(frozen)))
        cl = copy.deepcopy(folded).to(memory_format=torch.channels_last)
        frozen_cl = torch.jit.freeze(torch.jit.trace(cl, x.contiguous(memory_format=torch.channels_last),
                                                     check_trace=False))
        out.append(("BN folded + channels_last + jit.freeze", *timer.torch_fn(frozen_cl, channels_last=True)))
        ofi = torch.jit.optimize_for_inference(torch.jit.trace(folded, x, check_trace=False))
        out.append(("jit.optimize_for_inference", *timer.torch_fn(ofi)))
        if not cfg.quick and "compile" not in cfg.skip:
            compiled = torch.compile(cl)
            out.append(("BN folded + channels_last + torch.compile", *timer.torch_fn(compiled, channels_last=True)))
    return out


PEERS = ("tv", "timm")  # row-label prefixes of the peer libraries' models


def _peer(name: str) -> tuple[str, nn.Module]:
    """The peer library's model of ``name`` with random weights: torchvision's, or timm's for MobileNetV4
    (torchvision declined it; timm holds the only public weights)."""
    if name.startswith("mobilenet_v4"):
        import timm

        return "timm", timm.create_model(name.replace("mobilenet_v4", "mobilenetv4"), pretrained=False).eval()
    import torchvision

    if not hasattr(torchvision.models, name):
        raise MobileNetsError(f"no peer model for {name} in torchvision or timm")
    return "tv", getattr(torchvision.models, name)().eval()


def _bench_model(name: str, cfg: BenchConfig, timer: _Timer, work: Path, log, bn_images: np.ndarray) -> list[Row]:
    from ..factory import create_model

    torch.manual_seed(0)
    # the same treatment for both: random weights, batch-norm statistics from the same real images
    ours = calibrate_batchnorm(create_model(name), bn_images)
    peer, tv = _peer(name)
    tv = calibrate_batchnorm(tv, bn_images)
    rows: list[Row] = []

    def add(path: str, lat: float, thr: float | None, note: str = "", export=None) -> None:
        rows.append(Row(name, path, lat, thr, note, export.to_dict() if export is not None else {}))
        log(f"  {path:<28} {lat:8.2f} ms" + (f"  {thr:8.1f} img/s" if thr else "") + (f"  ({note})" if note else ""))

    tv_eager, ours_eager = timer.measure(timer.torch_calls(tv), timer.torch_calls(ours))
    add(f"{peer} eager", *tv_eager)
    add("ours eager", *ours_eager)
    paths = _pytorch_paths(ours, cfg, timer)
    best = min(paths, key=lambda p: p[1])
    for p in paths:
        log(f"    candidate {p[0]}: {p[1]:.2f} ms")
    add("ours best pytorch", best[1], best[2], best[0])

    exports = [("onnx", "onnxruntime", False), ("tflite", "litert", False), ("executorch", "executorch", False),
               ("onnx", "onnxruntime int8", True), ("tflite", "litert int8", True),
               ("executorch", "executorch int8", True)]
    for fmt, label, int8 in exports:
        if fmt in cfg.skip or (int8 and "int8" in cfg.skip):
            continue
        runs = []
        for who, model in (("ours", ours), (peer, tv)):
            # the peers: torchvision's (timm's) fp32 model through the same ONNX Runtime and LiteRT exports
            if who == peer and (int8 or fmt == "executorch"):
                continue
            f = work / f"{who}_{name}{'_int8' if int8 else ''}.{fmt}"
            rep = export_model(model, f, format=fmt, int8=int8, calib="digits" if int8 else None,
                               input_size=cfg.resolution, calib_size=cfg.calib_images, eval_size=cfg.calib_images,
                               min_int8_agreement=0.0, num_threads=cfg.threads)
            art = load_artifact(f, fmt, num_threads=cfg.threads)
            notes = [f"{n} ops"] if (n := count_ops(f, fmt)) is not None else []
            if art.fixed_batch == 1:
                notes.append(f"batch-1 file, batch {cfg.batch} = {cfg.batch} calls")
            runs.append((f"{who} {label}", art, ", ".join(notes), rep))
        # ours and torchvision's file on the same runtime: timed interleaved
        for (path, _, note, rep), (lat, thr) in zip(runs, timer.measure(*(timer.numpy_calls(r[1]) for r in runs))):
            add(path, lat, thr, note, rep)
    return rows


class _TorchvisionDetectorCore(nn.Module):
    """torchvision's SSD without its transform and post-processing: image in, (class logits (N, A, C), box
    regressions (N, A, 4)) out, as our detector's ``forward``."""

    export_task = "detection"  # export_model checks its outputs (dense.task_of)

    def __init__(self, ssd: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = ssd.backbone, ssd.head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(list(self.backbone(x).values()))
        return out["cls_logits"], out["bbox_regression"]


class _TorchvisionSegmenterCore(nn.Module):
    """torchvision's LR-ASPP returning its ``"out"`` logits as a tensor (not an OrderedDict)."""

    export_task = "segmentation"

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def _dense_pair(name: str) -> tuple[nn.Module, nn.Module]:
    """(ours in torchvision's configuration, torchvision's tensor-only core), random weights."""
    import torchvision

    from ..factory import create_model

    task, tv_name, size = DENSE_MODELS[name]
    if task == "detection":
        ours = create_model(name, config="torchvision", num_classes=91, image_size=size)
        tv = _TorchvisionDetectorCore(torchvision.models.detection.ssdlite320_mobilenet_v3_large(
            weights=None, weights_backbone=None))
    else:
        ours = create_model(name, config="torchvision", num_classes=21)
        tv = _TorchvisionSegmenterCore(torchvision.models.segmentation.lraspp_mobilenet_v3_large(
            weights=None, weights_backbone=None))
    return ours, tv


def _bench_dense(name: str, cfg: BenchConfig, work: Path, log) -> list[Row]:
    """A detector's or segmenter's rows: eager PyTorch, onnxruntime, LiteRT (ours vs torchvision's, interleaved)
    and ExecuTorch (ours), batch-1 latency of the tensor-only core at the DENSE_MODELS size."""
    task, tv_name, size = DENSE_MODELS[name]
    torch.manual_seed(0)
    dense_cfg = BenchConfig(models=(name,), resolution=size, threads=cfg.threads, batch=1, quick=cfg.quick,
                            out_dir=cfg.out_dir, skip=cfg.skip)
    timer = _Timer(dense_cfg)
    timer.runsb = 0  # batch-1 latency only (a batch of 32 full-resolution 520x520 logits is 0.7 GB)
    bn_images = bn_calibration_images(size, DENSE_BN_IMAGES)
    ours_model, tv_model = _dense_pair(name)
    ours, tv = calibrate_batchnorm(ours_model, bn_images, batch=8), calibrate_batchnorm(tv_model, bn_images, batch=8)
    rows: list[Row] = []

    def add(path: str, lat: float, note: str = "", export=None) -> None:
        rows.append(Row(name, path, lat, None, note, export.to_dict() if export is not None else {}))
        log(f"  {path:<28} {lat:8.2f} ms" + (f"  ({note})" if note else ""))

    (tv_eager, _), (ours_eager, _) = timer.measure(timer.torch_calls(tv), timer.torch_calls(ours))
    add("tv eager", tv_eager, tv_name)
    add("ours eager", ours_eager)
    for fmt, label in (("onnx", "onnxruntime"), ("tflite", "litert"), ("executorch", "executorch")):
        if fmt in cfg.skip:
            continue
        runs = []
        for who, model in (("ours", ours), ("tv", tv)):
            if who == "tv" and fmt == "executorch":
                continue
            f = work / f"{who}_{name}.{fmt}"
            rep = export_model(model, f, format=fmt, input_size=size, num_threads=cfg.threads,
                               check_images=DENSE_CHECK_IMAGES)
            art = load_artifact(f, fmt, num_threads=cfg.threads)
            notes = [f"{n} ops"] if (n := count_ops(f, fmt)) is not None else []
            runs.append((f"{who} {label}", art, ", ".join(notes), rep))
        for (path, _, note, rep), (lat, _) in zip(runs, timer.measure(*(timer.numpy_calls(r[1]) for r in runs))):
            add(path, lat, note, rep)
    return rows


def _ratios(rows: list[Row]) -> list[dict]:
    by = {(r.model, r.path): r for r in rows}
    out = []
    for model in dict.fromkeys(r.model for r in rows):
        get = lambda p: by.get((model, p))  # noqa: E731
        lat = lambda p: get(p).latency_ms if get(p) else None  # noqa: E731
        ratios = {}
        tv = next((p for p in PEERS if get(f"{p} eager")), "tv")  # the model's peer library
        if lat(f"{tv} eager") and lat("ours best pytorch"):
            ratios[f"best pytorch speedup vs {tv} eager"] = lat(f"{tv} eager") / lat("ours best pytorch")
        elif lat(f"{tv} eager") and lat("ours eager"):  # the dense rows have no "best pytorch" search
            ratios[f"ours/{tv} eager"] = lat("ours eager") / lat(f"{tv} eager")
        for rt in ("onnxruntime", "litert"):
            if lat(f"ours {rt}") and lat(f"{tv} {rt}"):
                ratios[f"ours/{tv} {rt}"] = lat(f"ours {rt}") / lat(f"{tv} {rt}")
        ours_fp32 = [lat(f"ours {rt}") for rt in ("onnxruntime", "litert", "executorch") if lat(f"ours {rt}")]
        peers = [lat(f"{tv} {rt}") for rt in ("onnxruntime", "litert") if lat(f"{tv} {rt}")]
        if ours_fp32 and peers:
            ratios["fastest ours fp32 / fastest peer"] = min(ours_fp32) / min(peers)
        int8 = [lat(f"ours {rt} int8") for rt in ("onnxruntime", "litert", "executorch") if lat(f"ours {rt} int8")]
        if int8 and ours_fp32:
            ratios["int8 speedup vs fastest fp32"] = min(ours_fp32) / min(int8)
        out.append({"model": model, **ratios})
    return out


def _plot(rows: list[Row], path: Path, cfg: BenchConfig) -> None:
    """Latency vs the papers' top-1 (V3 Figure 1's, V4 Figure 1's view): one marker per runtime, one row of
    points per model. The top-1 is each model's width-1.0 figure at 224, or at its one published resolution
    (V4 Conv-M / Hybrid-M 256, -L 384); the latencies are all at ``cfg.resolution``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..published import PUBLISHED

    top1: dict[str, float] = {}
    for p in sorted((p for p in PUBLISHED if p.width == 1.0), key=lambda p: p.resolution != 224):
        top1.setdefault(p.model, p.top1)
    fig, ax = plt.subplots(figsize=(9, 5.5))
    paths = list(dict.fromkeys(r.path for r in rows))
    markers = "os^vD<>pPX*h"
    for i, p in enumerate(paths):
        pts = [(r.latency_ms, top1[r.model]) for r in rows if r.path == p and r.model in top1]
        if pts:
            style = {"facecolors": "none", "edgecolors": f"C{i}"} if p.startswith(PEERS) else {"color": f"C{i}"}
            ax.scatter(*zip(*pts), marker=markers[i % len(markers)], s=45, label=p, **style)
    for m in dict.fromkeys(r.model for r in rows):
        if m in top1:
            ax.annotate(m.replace("mobilenet_", ""), (max(r.latency_ms for r in rows if r.model == m), top1[m]),
                        textcoords="offset points", xytext=(6, -3), fontsize=8)
    ax.set_xscale("log")
    from matplotlib.ticker import FormatStrFormatter

    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel(f"batch-1 latency, ms (median, {cfg.threads} CPU threads, log scale)")
    ax.set_ylabel("published ImageNet top-1 (%), at 224 (V4: its paper resolution)")
    ax.set_title(f"MobileNets at {cfg.resolution}: latency per runtime vs published accuracy")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right", title="hollow: torchvision's (V4: timm's) model",
              title_fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def _task(name: str) -> str:
    from ..registry import get_model_entry

    return get_model_entry(name).task


def run_benchmark(cfg: BenchConfig, *, log=print) -> dict:
    """Run the benchmark, print the table and ratios, write ``bench.json`` and ``bench.png`` to
    ``cfg.out_dir``; returns the JSON content."""
    import platform

    unknown = [r for r in cfg.skip if r not in RUNTIMES]
    if unknown:
        raise MobileNetsError(f"skip: unknown runtime(s) {', '.join(map(repr, unknown))}; one of {', '.join(RUNTIMES)}")
    out = Path(cfg.out_dir).expanduser()
    if out.exists() and not out.is_dir():  # said now, not after the timings
        raise MobileNetsError(f"{out}: not a folder (the output folder)")
    output_file(out / "bench.json", "benchmark results")
    if cfg.device != "cpu":  # a GPU: PyTorch's inference paths vs torchvision's and timm's (gpu_bench.py)
        from .gpu_bench import run_gpu_benchmark

        return run_gpu_benchmark(cfg, log=log)
    torch.set_num_threads(cfg.threads)
    torch.set_flush_denormal(True)  # see the module doc; onnxruntime sessions do the same (runtimes.py)
    unknown = [m for m in cfg.models if m not in DENSE_MODELS and _task(m) != "classification"]
    if unknown:
        raise MobileNetsError(f"no benchmark rows for {', '.join(unknown)}: the dense rows are "
                              f"{', '.join(DENSE_MODELS)}")
    timer = _Timer(cfg)
    classifiers = [m for m in cfg.models if m not in DENSE_MODELS]
    bn_images = bn_calibration_images(cfg.resolution, cfg.calib_images) if classifiers else None
    rows: list[Row] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        for name in cfg.models:
            if name in DENSE_MODELS:
                task, tv_name, size = DENSE_MODELS[name]
                log(f"{name} ({task}, tensor-only core) at {size}, {cfg.threads} threads, vs torchvision's {tv_name}:")
                rows += _bench_dense(name, cfg, Path(work), log)
                continue
            log(f"{name} at {cfg.resolution}, {cfg.threads} threads:")
            rows += _bench_model(name, cfg, timer, Path(work), log, bn_images)
    ratios = _ratios(rows)
    log("\nratios (batch-1 latency):")
    for r in ratios:
        log(f"  {r['model']}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items() if k != "model"))
    result = {
        "config": asdict(cfg),
        "dense_sizes": {m: DENSE_MODELS[m][2] for m in cfg.models if m in DENSE_MODELS},
        "machine": {"processor": platform.processor() or platform.machine(), "torch": torch.__version__,
                    "threads": cfg.threads},
        "seconds": time.perf_counter() - t0,
        "rows": [asdict(r) for r in rows],
        "ratios": ratios,
    }
    atomic_write(out / "bench.json", lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1)))
    if classifiers:  # the plot places models by their published ImageNet top-1: classifiers only
        _plot([r for r in rows if r.model not in DENSE_MODELS], out / "bench.png", cfg)
        log(f"\nwrote {out / 'bench.json'} and {out / 'bench.png'}")
    else:
        log(f"\nwrote {out / 'bench.json'}")
    return result
