"""Does int8 hold on any checkpoint? PTQ (each calibration method) and QAT over independently trained digits
checkpoints, the published weights on the photos, mixed precision's cost, and cross-runtime parity.

    python benchmarks/int8_robustness.py --stage all [--seeds 1 2 3 4 5] [--qat-epochs 2] [--work DIR]

Stages (each appends its rows to ``<work>/rows.jsonl`` and skips rows already there, so stages can run in
separate processes and a stopped run resumes):

- ``train``: the default job (``mobilenets train``: V3-Small on digits, 10 epochs, 64x64) once per seed, one
  thread; ``qat``: ``train --qat`` from each of them (``--qat-epochs``);
- ``ptq``: every seed's checkpoint to int8 on each runtime with each calibration method; the ONNX files also
  run in an emulation of onnxruntime's AVX2 kernels (CPUs without VNNI,
  :func:`mobilenets.export.quantize.emulate_u8s8_avx2`), with the default 7-bit weights and with 8-bit ones;
- ``qatx``: each QAT checkpoint to int8 on each runtime (default method);
- ``photos``: the published files in ../shared/data/pretrained, calibrated and checked on the photos;
- ``mixed``: one checkpoint with each ``keep_float`` choice, agreement and batch-1 latency (1 thread);
- ``report``: ``benchmarks/results/int8_robustness.json`` (per runtime and method: min / median agreement with
  fp32, accuracy drop, cross-runtime parity) and ``int8_robustness.png`` (the distributions).

Every int8 file is run in its own runtime on the 359 digits val images; agreement = argmax equal to the
float model's. For QAT rows, ``agreement`` is with the QAT checkpoint's float model and ``agreement_start``
with the float checkpoint it was fine-tuned from; accuracy drops are against the starting float model.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from mobilenets.checkpoint import atomic_write
from mobilenets.errors import MobileNetsError
from mobilenets.export import export_model, load_artifact
from mobilenets.export.data import load_images
from mobilenets.export.quantize import CALIB_METHODS, DEFAULT_CALIB, emulate_u8s8_avx2
from mobilenets.weights import model_from_weights

FORMATS = ("onnx", "tflite", "executorch")
# the methods run per runtime (each costs a full export; the 2-core machine is shared): onnxruntime's four less
# Distribution (a histogram method like Entropy), the PT2E quantizers' default (histogram) and plain min/max
# (ExecuTorch; LiteRT: the default only unless --all-methods)
PTQ_METHODS = {"onnx": ("minmax", "percentile", "entropy"), "executorch": ("histogram", "minmax"),
               "tflite": ("histogram",)}
PHOTO_FILES = ["mobilenet_v1_0.25_224.h5", "mobilenet_v2_1.0_224_quant.tflite",
               "mobilenet_v3_small_1.0_224.uint8.tflite"]
MIXED = [(), ("stem",), ("classifier",), ("se",), ("hswish",), ("stem", "classifier", "se", "hswish")]


class Rows:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def key(self, row: dict) -> str:
        return json.dumps({k: row[k] for k in ("stage", "source", "format", "method", "keep_float", "extra")
                           if k in row}, sort_keys=True)

    def has(self, **key) -> bool:
        k = self.key(key)
        return any(self.key(r) == k for r in self.rows)

    def add(self, row: dict) -> None:
        self.rows.append(row)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


def _logits(model, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(x[i:i + 64])).numpy() for i in range(0, len(x), 64)])


class Checkpoint:
    """A checkpoint's float logits on the digits val set (and those of the model it started from)."""

    def __init__(self, path: Path, start: Path | None = None) -> None:
        self.path = path
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, report = model_from_weights(path)
        self.val = load_images("digits", preprocessing=report.info.preprocessing, role="eval")
        self.ref = _logits(model.eval(), self.val.images)
        self.start_ref = Checkpoint(start).ref if start is not None else self.ref

    def measure(self, out: np.ndarray) -> dict:
        top = out.argmax(1)
        acc_start = float((self.start_ref.argmax(1) == self.val.labels).mean())
        return {"agreement": float((top == self.ref.argmax(1)).mean()),
                "agreement_start": float((top == self.start_ref.argmax(1)).mean()),
                "acc_fp32": float((self.ref.argmax(1) == self.val.labels).mean()), "acc_fp32_start": acc_start,
                "acc": float((top == self.val.labels).mean()),
                "drop": acc_start - float((top == self.val.labels).mean()), "top1": top.tolist()}


def _export(ckpt: Checkpoint, fmt: str, path: str, **kw) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    export_model(ckpt.path, path, format=fmt, int8=True, calib="digits", eval_size=32, min_int8_agreement=0.0,
                 num_threads=1, **kw)
    return load_artifact(path, fmt, num_threads=1)(ckpt.val.images), time.perf_counter() - t0


def stage_train(work: Path, seeds) -> None:
    from mobilenets.training import TrainConfig, train

    for seed in seeds:
        if not (work / f"seed{seed}" / "best.safetensors").exists():
            train(TrainConfig(output=str(work / f"seed{seed}"), seed=seed, threads=1, progress=False))


def stage_qat(work: Path, seeds, epochs: int) -> None:
    from mobilenets.training.qat import QATConfig, train_qat

    for seed in seeds:
        if not (work / f"qat{seed}" / "qat.safetensors").exists():
            train_qat(QATConfig(weights=str(work / f"seed{seed}" / "best.safetensors"), output=str(work / f"qat{seed}"),
                                epochs=epochs, progress=False))


def stage_ptq(work: Path, seeds, rows: Rows, formats, emulate: bool) -> None:
    """Method-major: every seed with each runtime's default method first, then the other methods (a run cut short
    still covers every checkpoint)."""
    ckpts: dict[int, Checkpoint] = {}
    for rank in range(max(len(PTQ_METHODS[f]) for f in formats)):
        for seed in seeds:
            for fmt in formats:
                if rank >= len(PTQ_METHODS[fmt]):
                    continue
                method = PTQ_METHODS[fmt][rank]
                key = dict(stage="ptq", source=f"seed{seed}", format=fmt, method=method, keep_float=[], extra="")
                if rows.has(**key):
                    continue
                if seed not in ckpts:
                    ckpts[seed] = Checkpoint(work / f"seed{seed}" / "best.safetensors")
                ckpt = ckpts[seed]
                with tempfile.TemporaryDirectory() as d:
                    path = f"{d}/m_int8.{fmt}"
                    out, secs = _export(ckpt, fmt, path, calib_method=method)
                    row = {**key, **ckpt.measure(out), "seconds": secs}
                    if fmt == "onnx" and emulate and method == "minmax":
                        row["avx2_agreement"] = ckpt.measure(emulate_u8s8_avx2(path, ckpt.val.images))["agreement"]
                        full = f"{d}/full.onnx"
                        out_full, _ = _export(ckpt, fmt, full, calib_method=method, reduce_range=False)
                        row["full_range_agreement"] = ckpt.measure(out_full)["agreement"]
                        row["full_range_avx2_agreement"] = ckpt.measure(
                            emulate_u8s8_avx2(full, ckpt.val.images))["agreement"]
                rows.add(row)


def stage_qatx(work: Path, seeds, rows: Rows, formats) -> None:
    for seed in seeds:
        path = work / f"qat{seed}" / "qat.safetensors"
        if not path.exists():
            continue
        ckpt = Checkpoint(path, start=work / f"seed{seed}" / "best.safetensors")
        for fmt in formats:
            method = DEFAULT_CALIB[fmt]  # each runtime's default calibration
            key = dict(stage="qat", source=f"seed{seed}", format=fmt, method=method, keep_float=[], extra="")
            if rows.has(**key):
                continue
            with tempfile.TemporaryDirectory() as d:
                out, secs = _export(ckpt, fmt, f"{d}/m_int8.{fmt}", calib_method=method)
            rows.add({**key, **ckpt.measure(out), "seconds": secs})


def stage_photos(rows: Rows, pretrained: Path, formats) -> None:
    for fname in PHOTO_FILES:
        for fmt in formats:
            key = dict(stage="photos", source=fname, format=fmt, method="auto", keep_float=[], extra="")
            if rows.has(**key):
                continue
            with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                try:
                    r = export_model(pretrained / fname, f"{d}/m{Path(fname).stem}.{fmt}", format=fmt, int8=True,
                                     calib=pretrained / "photos", min_int8_agreement=0.0, num_threads=1)
                except MobileNetsError as e:  # recorded: e.g. ExecuTorch's quantizer on V1 0.25's TF-padded stem
                    rows.add({**key, "error": str(e), "seconds": time.perf_counter() - t0})
                    continue
            rows.add({**key, "agreement": r.top1_agreement, "images": 3, "seconds": time.perf_counter() - t0})


def stage_mixed(work: Path, seed: int, rows: Rows, formats, runs: int) -> None:
    from mobilenets.export.bench import time_interleaved

    ckpt = Checkpoint(work / f"seed{seed}" / "best.safetensors")
    x = ckpt.val.images[:1]
    for fmt in formats:
        if all(rows.has(stage="mixed", source=f"seed{seed}", format=fmt, method="auto", keep_float=list(k), extra="")
               for k in MIXED):
            continue
        with tempfile.TemporaryDirectory() as d:
            arts, measured = [], []
            for keep in MIXED:
                path = f"{d}/m{len(arts)}.{fmt}"
                out, secs = _export(ckpt, fmt, path, keep_float=keep)
                arts.append(load_artifact(path, fmt, num_threads=1))
                measured.append((keep, ckpt.measure(out), secs, Path(path).stat().st_size))
            times = time_interleaved([lambda a=a: a(x) for a in arts], warmup=20, runs=runs)
            for (keep, m, secs, size), t in zip(measured, times):
                rows.add(dict(stage="mixed", source=f"seed{seed}", format=fmt, method="auto", keep_float=list(keep),
                              extra="", **m, seconds=secs, size_bytes=size, latency_ms=t * 1e3,
                              latency_vs_all_int8=t / times[0]))


def report(rows: Rows, out_dir: Path) -> dict:
    def summary(sel: list[dict]) -> dict:
        ag = [r["agreement"] for r in sel]
        res = {"n": len(sel), "min_agreement": min(ag), "median_agreement": statistics.median(ag)}
        if "drop" in sel[0]:
            drops = [r["drop"] for r in sel]
            res.update(max_drop=max(drops), median_drop=statistics.median(drops))
        for extra in ("agreement_start", "avx2_agreement", "full_range_agreement", "full_range_avx2_agreement"):
            vals = [r[extra] for r in sel if extra in r]
            if vals:
                res[f"min_{extra}"], res[f"median_{extra}"] = min(vals), statistics.median(vals)
        return res

    table: dict = {}
    for stage in ("ptq", "qat"):
        for fmt in FORMATS:
            for method in dict.fromkeys(r["method"] for r in rows.rows if r["stage"] == stage and r["format"] == fmt):
                sel = [r for r in rows.rows if r["stage"] == stage and r["format"] == fmt and r["method"] == method]
                table[f"{stage}/{fmt}/{method}"] = summary(sel)
    # cross-runtime parity: the same checkpoint's int8 files (each runtime's default method), top-1 equal
    parity: dict = {}
    for stage in ("ptq", "qat"):
        by_src: dict = {}
        for r in rows.rows:
            if r["stage"] == stage and r["method"] == DEFAULT_CALIB[r["format"]] and "top1" in r:
                by_src.setdefault(r["source"], {})[r["format"]] = np.array(r["top1"])
        for a, b in (("onnx", "tflite"), ("onnx", "executorch"), ("tflite", "executorch")):
            vals = [float((v[a] == v[b]).mean()) for v in by_src.values() if a in v and b in v]
            if vals:
                parity[f"{stage}/{a}~{b}"] = {"n": len(vals), "min": min(vals), "median": statistics.median(vals)}
    photos = {f"{r['source']}/{r['format']}": r.get("agreement", r.get("error")) for r in rows.rows
              if r["stage"] == "photos"}
    mixed = [{k: r[k] for k in ("format", "keep_float", "agreement", "drop", "latency_ms", "latency_vs_all_int8",
                                "size_bytes")} for r in rows.rows if r["stage"] == "mixed"]
    result = {"machine": {"processor": platform.processor() or platform.machine(), "torch": torch.__version__,
                          "threads": 1, "vnni": "avx512_vnni" in Path("/proc/cpuinfo").read_text()
                          if Path("/proc/cpuinfo").exists() else None},
              "table": table, "parity": parity, "photos": photos, "mixed": mixed,
              "rows": [{k: v for k, v in r.items() if k != "top1"} for r in rows.rows]}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / "int8_robustness.json", lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1)))
    _plot(rows, out_dir / "int8_robustness.png")
    for k, v in table.items():
        extra = "".join(f"  {e} min {v['min_' + e] * 100:.2f}" for e in ("avx2_agreement", "full_range_agreement",
                                                                          "full_range_avx2_agreement")
                        if "min_" + e in v)
        print(f"{k:32s} n={v['n']}  agreement min {100 * v['min_agreement']:.2f} median "
              f"{100 * v['median_agreement']:.2f}  drop max {100 * v.get('max_drop', 0):.2f} median "
              f"{100 * v.get('median_drop', 0):.2f}{extra}")
    for k, v in parity.items():
        print(f"parity {k}: n={v['n']} min {100 * v['min']:.2f} median {100 * v['median']:.2f}")
    for k, v in photos.items():
        print(f"photos {k}: " + (f"{100 * v:.1f}% of 3" if isinstance(v, float) else f"failed: {v}"))
    for m in mixed:
        print(f"mixed {m['format']} {'+'.join(m['keep_float']) or 'all int8'}: agreement {100 * m['agreement']:.2f} "
              f"latency {m['latency_ms']:.3f} ms ({m['latency_vs_all_int8']:.2f}x)")
    return result


def _plot(rows: Rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {}
    for r in rows.rows:
        if r["stage"] in ("ptq", "qat"):
            groups.setdefault(f"{r['stage']} {r['format']}\n{r['method']}", []).append(100 * r["agreement"])
            if "avx2_agreement" in r:
                groups.setdefault(f"ptq onnx\nno-VNNI emul.", []).append(100 * r["avx2_agreement"])
                groups.setdefault(f"ptq onnx 8-bit w\nno-VNNI emul.", []).append(100 * r["full_range_avx2_agreement"])
    if not groups:
        return
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(groups)), 4.5))
    names = list(groups)
    for i, n in enumerate(names):
        ys = groups[n]
        ax.scatter(np.full(len(ys), i) + np.linspace(-0.15, 0.15, len(ys)), ys, s=18)
        ax.hlines(statistics.median(ys), i - 0.3, i + 0.3, color="k", lw=1)
    ax.axhline(99, color="g", ls="--", lw=0.8, label="QAT target 99%")
    ax.axhline(98, color="r", ls="--", lw=0.8, label="PTQ target 98%")
    ax.set_xticks(range(len(names)), names, fontsize=7, rotation=60, ha="right")
    ax.set_ylabel("top-1 agreement with fp32 (%), digits val")
    ax.set_title("int8 over independently trained checkpoints (one dot per checkpoint)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", action="append", choices=("train", "qat", "ptq", "qatx", "photos", "mixed", "report",
                                                         "all"), required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    p.add_argument("--qat-epochs", type=int, default=2)
    p.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    p.add_argument("--all-methods", action="store_true", help="every calibration method of every runtime")
    p.add_argument("--no-emulate", action="store_true", help="skip the no-VNNI emulation of the ONNX files")
    p.add_argument("--mixed-seed", type=int, default=1)
    p.add_argument("--runs", type=int, default=200, help="timed runs per mixed-precision file")
    p.add_argument("--work", default="runs/int8_robustness", help="checkpoints and rows.jsonl")
    p.add_argument("--pretrained", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" /
                                               "pretrained"))
    p.add_argument("--out-dir", default="benchmarks/results")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    if a.all_methods:
        PTQ_METHODS.update(CALIB_METHODS)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = Rows(work / "rows.jsonl")
    stages = set(a.stage)
    every = "all" in stages
    if every or "train" in stages:
        stage_train(work, a.seeds)
    if every or "qat" in stages:
        stage_qat(work, a.seeds, a.qat_epochs)
    if every or "ptq" in stages:
        stage_ptq(work, a.seeds, rows, a.formats, not a.no_emulate)
    if every or "qatx" in stages:
        stage_qatx(work, a.seeds, rows, a.formats)
    if (every or "photos" in stages) and Path(a.pretrained).is_dir():
        stage_photos(rows, Path(a.pretrained), a.formats)
    if every or "mixed" in stages:
        stage_mixed(work, a.mixed_seed, rows, a.formats, a.runs)
    if every or "report" in stages:
        report(rows, Path(a.out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
