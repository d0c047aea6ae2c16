"""How much faster can int8 make a MobileNet on this CPU? Per-layer-class int8 speedups and the bound they set.

    python benchmarks/int8_ceiling.py [--threads 2] [--quick]

Issue 5 asks for int8 at least 1.8x faster than the fastest fp32 runtime (LiteRT's XNNPACK here). Whether
that is reachable depends on the int8 kernels for the two layer kinds a MobileNet is made of:

1. **Kernels.** Small models that are a stack of one layer kind (1x1 pointwise expand/project pairs, or 3x3
   depthwise convs) at the shape of one of V2's Table 2 rows are exported with
   :func:`mobilenets.export.export_model` in fp32 and int8 (the quantizers the library uses) and timed in
   onnxruntime (MLAS) and LiteRT (XNNPACK), fp32 and int8 interleaved: fp32 / int8 is the int8 speedup of
   that layer kind on that runtime.
2. **Full models.** V2, V3-Large and V3-Small (random weights, batch-norm statistics recomputed as in
   ``mobilenets bench``) on ExecuTorch's XNNPACK backend in fp32, in int8 (the library's PT2E recipe), and
   in int8 with the depthwise convs left in fp32 (:func:`fp32_depthwise`), the way around a slow int8
   depthwise kernel.

Prints the table and writes ``benchmarks/results/int8_ceiling.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobilenets import create_model
from mobilenets.checkpoint import atomic_write
from mobilenets.export import export_model, load_artifact
from mobilenets.export.bench import bn_calibration_images, calibrate_batchnorm, time_interleaved
from mobilenets.export.core import _int8_executorch, _write_executorch
from mobilenets.export.fuse import fold_batchnorm

# (name, spatial size, bottleneck channels, expanded channels): stride-1 rows of MobileNetV2 Table 2
# (t = 6): the 56x56 row (24 -> 144), the 28x28 row (32 -> 192) and the 14x14 row (64 -> 384)
SHAPES = [("56x56", 56, 24, 144), ("28x28", 28, 32, 192), ("14x14", 14, 64, 384)]
DEPTH = 6  # layers (or expand/project pairs) per stack: enough that the stack dominates the model's time
RUNTIMES = [("onnx", "onnxruntime"), ("tflite", "litert")]


class Stack(nn.Module):
    """A 1x1 conv from the 3 input channels to ``chs``, then ``DEPTH`` layers of one kind, then pool + fc
    (so the exporters see an image classifier, and the int8 checks have logits to compare)."""

    def __init__(self, kind: str, chs: int, exp: int) -> None:
        super().__init__()
        width = exp if kind == "depthwise" else chs
        self.entry = nn.Conv2d(3, width, 1)
        layers: list[nn.Module] = []
        for _ in range(DEPTH):
            if kind == "pointwise":  # V2's expand (+ ReLU6) and linear project
                layers += [nn.Conv2d(chs, exp, 1), nn.ReLU6(), nn.Conv2d(exp, chs, 1)]
            else:  # V2's 3x3 depthwise (+ ReLU6) on the expanded width
                layers += [nn.Conv2d(exp, exp, 3, padding=1, groups=exp), nn.ReLU6()]
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(self.entry(x)).mean((2, 3)))


def _time_pair(a, b, x: np.ndarray, runs: int) -> tuple[float, float]:
    ta, tb = time_interleaved([lambda: a(x), lambda: b(x)], warmup=max(3, runs // 10), runs=runs)
    return ta * 1e3, tb * 1e3


def kernels(work: Path, threads: int, runs: int, log) -> list[dict]:
    rows = []
    for shape, size, chs, exp in SHAPES:
        x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
        for kind in ("pointwise", "depthwise"):
            torch.manual_seed(0)
            model = Stack(kind, chs, exp).eval()
            for fmt, runtime in RUNTIMES:
                arts = []
                for int8 in (False, True):
                    f = work / f"{kind}_{shape}{'_int8' if int8 else ''}.{fmt}"
                    export_model(model, f, format=fmt, int8=int8, calib="digits" if int8 else None,
                                 input_size=size, calib_size=32, eval_size=16, min_int8_agreement=0.0,
                                 dynamic_batch=False, num_threads=threads)
                    arts.append(load_artifact(f, fmt, num_threads=threads))
                fp32_ms, int8_ms = _time_pair(arts[0], arts[1], x, runs)
                rows.append({"kind": kind, "shape": shape, "runtime": runtime, "fp32_ms": fp32_ms,
                             "int8_ms": int8_ms, "int8_speedup": fp32_ms / int8_ms})
                log(f"  {kind:<9} {shape:<6} {runtime:<12} fp32 {fp32_ms:7.3f} ms  int8 {int8_ms:7.3f} ms  "
                    f"int8 speedup {fp32_ms / int8_ms:5.2f}x")
    return rows


class _FloatConv(nn.Module):
    """A conv the PT2E quantizers do not match (they annotate ``aten.conv2d``; this calls the core
    ``aten.convolution`` directly), so it stays fp32 inside an otherwise int8 graph, and XNNPACK runs it with
    its fp32 kernel between int8 <-> fp32 conversions."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        return torch.ops.aten.convolution.default(x, c.weight, c.bias, list(c.stride), list(c.padding),
                                                  list(c.dilation), False, [0, 0], c.groups)


def fp32_depthwise(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose depthwise convs are :class:`_FloatConv`."""
    import copy

    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d) and child.groups > 1:
                setattr(parent, name, _FloatConv(child))
    return model


def mixed_precision(name: str, work: Path, threads: int, runs: int, bn_images: np.ndarray, calib: np.ndarray,
                    log) -> dict:
    """ExecuTorch (XNNPACK) batch-1 latency of ``name`` in fp32, in int8, and in int8 with fp32 depthwise
    convs (the obvious way around a slow int8 depthwise kernel)."""
    torch.manual_seed(0)
    model = fold_batchnorm(calibrate_batchnorm(create_model(name), bn_images))
    x = torch.from_numpy(calib[:1])
    # the library's writers without export_model's checks (a random model's int8 agreement means nothing)
    writers = {"fp32": lambda f: _write_executorch(model, x, f, False),
               "int8": lambda f: _int8_executorch(model, x, f, calib, False),
               "int8, fp32 depthwise": lambda f: _int8_executorch(fp32_depthwise(model), x, f, calib, False)}
    arts = {}
    for tag, write in writers.items():
        f = work / f"{name}_{tag.replace(', ', '_').replace(' ', '_')}.pte"
        write(str(f))
        arts[tag] = load_artifact(f, "executorch", num_threads=threads)
    xin = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    ms = dict(zip(arts, (t * 1e3 for t in time_interleaved([lambda a=a: a(xin) for a in arts.values()],
                                                           warmup=max(3, runs // 10), runs=runs))))
    row = {"model": name, "runtime": "executorch", "ms": ms,
           "int8_speedup": ms["fp32"] / ms["int8"], "int8_fp32_depthwise_speedup": ms["fp32"] / ms["int8, fp32 depthwise"]}
    log(f"  {name:<20} fp32 {ms['fp32']:6.3f} ms  int8 {ms['int8']:6.3f} ms ({row['int8_speedup']:.2f}x)  "
        f"int8 with fp32 depthwise {ms['int8, fp32 depthwise']:6.3f} ms ({row['int8_fp32_depthwise_speedup']:.2f}x)")
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="fewer timing runs")
    p.add_argument("--out", default="benchmarks/results/int8_ceiling.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    runs = 40 if args.quick else 200
    log = print
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        log(f"int8 speedup per layer kind (stacks of {DEPTH} at V2 Table 2 shapes, batch 1, {args.threads} threads):")
        krows = kernels(work, args.threads, runs, log)
        bn_images = bn_calibration_images(224, 32)  # as mobilenets bench
        digits = bn_images[0::2]  # the int8 files are calibrated on the digits half
        log("\nfull models on ExecuTorch (XNNPACK), fp32 / int8 / int8 with fp32 depthwise convs:")
        models = [mixed_precision(name, work, args.threads, runs, bn_images, digits, log)
                  for name in ("mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small")]
    result = {"machine": {"processor": platform.processor() or platform.machine(), "torch": torch.__version__,
                          "threads": args.threads},
              "kernels": krows, "models": models}
    out = Path(args.out)
    atomic_write(out, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1)))
    log(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
