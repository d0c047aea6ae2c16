"""``mobilenets bench --device cuda``: our classifiers' inference paths against torchvision's and timm's models on
the same GPU in the same run: batch-1 latency (median ms, synchronised per call) and large-batch throughput
(images/s at ``BenchConfig.batch``).

Rows per model, timed interleaved (A B C A B C ...) so a clock or load change hits all alike:

- ``tv eager fp32``, ``tv eager bf16``, ``timm eager bf16``: the peers as users run them (``bf16``: weights cast
  to bfloat16, channels_last; the fair fast eager setting);
- ``ours eager fp32``, ``ours eager bf16`` (the same treatment as the peers');
- ``ours fast bf16``: :func:`mobilenets.fast.prepare_for_inference` with BN folded, channels_last, bf16;
- ``ours fast bf16 + CUDA graphs``: the same, replayed from a CUDA graph per shape;
- ``ours compiled bf16 + CUDA graphs``: ``torch.compile(mode="reduce-overhead")`` of the folded bf16 model
  (left out with ``--quick`` or ``--skip compile``).

All models have random weights (speed does not depend on the values on a GPU). On a CPU device (``--device cpu``
through this module, as the test suite does) the CUDA-graph rows are left out with a note.
"""

from __future__ import annotations

import copy
import json
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..checkpoint import atomic_write
from ..errors import MobileNetsError
from .bench import BenchConfig, Row, time_interleaved

__all__ = ["run_gpu_benchmark", "TIMM_NAMES"]

TIMM_NAMES = {"mobilenet_v1": "mobilenetv1_100", "mobilenet_v2": "mobilenetv2_100",
              "mobilenet_v3_large": "mobilenetv3_large_100", "mobilenet_v3_small": "mobilenetv3_small_100",
              **{f"mobilenet_v4_{v}": f"mobilenetv4_{v}" for v in ("conv_small", "conv_medium", "conv_large",
                                                                   "hybrid_medium", "hybrid_large")}}


def _peers(name: str) -> dict[str, nn.Module]:
    """torchvision's and timm's model of the same architecture, where the library (and the model) exists."""
    out = {}
    try:
        import torchvision

        if hasattr(torchvision.models, name):
            out["tv"] = getattr(torchvision.models, name)()
    except ImportError:
        pass
    try:
        import timm

        if name in TIMM_NAMES:
            out["timm"] = timm.create_model(TIMM_NAMES[name], pretrained=False)
    except ImportError:
        pass
    return out


def _eager(model: nn.Module, device: torch.device, dtype: torch.dtype, channels_last: bool) -> Callable:
    """``model`` (moved and cast in place) called on inputs cast to ``dtype``."""
    model = model.eval().to(device=device, dtype=dtype)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)

    @torch.inference_mode()
    def run(x):
        return model(x.to(dtype).contiguous(memory_format=fmt))

    return run


def _synced(fn: Callable, x: torch.Tensor, device: torch.device) -> Callable[[], object]:
    def call():
        out = fn(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    return call


def run_gpu_benchmark(cfg: BenchConfig, *, device: torch.device | str | None = None, log=print) -> dict:
    """Time the rows of the module doc for each classifier of ``cfg.models`` at ``cfg.resolution``; write
    ``bench_<device type>.json`` to ``cfg.out_dir``; returns its content."""
    from ..device import resolve_device
    from ..factory import create_model
    from ..fast import InferenceOptions, prepare_for_inference
    from ..registry import get_model_entry

    device = resolve_device(device or cfg.device) if not isinstance(device, torch.device) else device
    cuda = device.type == "cuda"
    dense = [m for m in cfg.models if get_model_entry(m).task != "classification"]
    models = [m for m in cfg.models if m not in dense]
    if not models:
        raise MobileNetsError("the GPU benchmark times classifiers; pass --model mobilenet_v3_large (or another)")
    if dense:
        log(f"(GPU rows are for classifiers: {', '.join(dense)} left out)")
    if cuda:
        torch.backends.cudnn.benchmark = True
    runs1, runsb = (20, 5) if cfg.quick else (200, 20)
    bf16 = torch.bfloat16
    rows: list[Row] = []
    t0 = time.perf_counter()
    for name in models:
        torch.manual_seed(0)
        ours = create_model(name).eval()
        peers = _peers(name)
        paths: dict[str, Callable] = {}
        for who, m in peers.items():
            if who == "tv":
                paths["tv eager fp32"] = _eager(copy.deepcopy(m), device, torch.float32, False)
            paths[f"{who} eager bf16"] = _eager(m, device, bf16, True)
        paths["ours eager fp32"] = _eager(copy.deepcopy(ours), device, torch.float32, False)
        paths["ours eager bf16"] = _eager(copy.deepcopy(ours), device, bf16, True)
        paths["ours fast bf16"] = prepare_for_inference(ours, device, InferenceOptions("bf16", channels_last=True))
        note = ""
        if cuda:
            paths["ours fast bf16 + CUDA graphs"] = prepare_for_inference(
                ours, device, InferenceOptions("bf16", channels_last=True, cuda_graphs=True))
            if not cfg.quick and "compile" not in cfg.skip:
                paths["ours compiled bf16 + CUDA graphs"] = prepare_for_inference(
                    ours, device, InferenceOptions("bf16", channels_last=True, compile=True, cuda_graphs=True))
        else:
            note = f"CUDA-graph rows left out: no CUDA graphs on {device.type}"
        x1 = torch.randn(1, 3, cfg.resolution, cfg.resolution, device=device)
        xb = torch.randn(cfg.batch, 3, cfg.resolution, cfg.resolution, device=device)
        log(f"{name} at {cfg.resolution} on {_device_name(device)}: batch-1 latency, batch-{cfg.batch} throughput")
        names = list(paths)
        for n in names:  # first calls: compile / capture / cudnn autotuning, outside the timings
            for x in (x1, xb):
                _synced(paths[n], x, device)()
        lat = time_interleaved([_synced(paths[n], x1, device) for n in names], warmup=3, runs=runs1,
                               settle_s=0.0)
        thr = time_interleaved([_synced(paths[n], xb, device) for n in names], warmup=1, runs=runsb,
                               rounds=min(5, runsb), settle_s=0.0)
        for n, l_s, b_s in zip(names, lat, thr):
            rows.append(Row(name, n, l_s * 1e3, cfg.batch / b_s, note if n == "ours fast bf16" else ""))
            log(f"  {n:<34} {l_s * 1e3:8.3f} ms  {cfg.batch / b_s:10.0f} img/s")
    ratios = _ratios(rows)
    for r in ratios:
        log(f"  {r['model']}: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in r.items() if k != "model"))
    result = {
        "config": asdict(cfg),
        "device": _device_name(device),
        "machine": {"processor": platform.processor() or platform.machine(), "torch": torch.__version__,
                    "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if cuda else None},
        "seconds": time.perf_counter() - t0,
        "rows": [asdict(r) for r in rows],
        "ratios": ratios,
    }
    out = Path(cfg.out_dir) / f"bench_{device.type}.json"
    atomic_write(out, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1)))
    log(f"wrote {out}")
    return result


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")


def _ratios(rows: list[Row]) -> list[dict]:
    out = []
    for model in dict.fromkeys(r.model for r in rows):
        by = {r.path: r for r in rows if r.model == model}
        ours = [r for p, r in by.items() if p.startswith("ours")]
        best_lat = min(ours, key=lambda r: r.latency_ms)
        best_thr = max(ours, key=lambda r: r.throughput)
        ratios = {"ours best batch-1 ms": best_lat.latency_ms, "ours best batch-1 path": best_lat.path,
                  "ours best throughput path": best_thr.path}
        for peer in ("tv eager bf16", "timm eager bf16"):
            if peer in by:
                ratios[f"throughput ours best / {peer}"] = best_thr.throughput / by[peer].throughput
                ratios[f"batch-1 {peer} / ours best"] = by[peer].latency_ms / best_lat.latency_ms
        out.append({"model": model, **ratios})
    return out
