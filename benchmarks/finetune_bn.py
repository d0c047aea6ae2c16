"""Batch-norm statistics in short fine-tuning / training runs (issue 15): validation vs training accuracy after
2 epochs, and what the fixes cost, before and after.

The data is the 4-class photo-crop folder of tests/test_finetune.py (400 train / 120 val crops of four
photographs that ship with scikit-image, 112 px files, trained at 96). Scenarios, each over several seeds:

- ``tflite``: fine-tune the published MobileNetV3-Small TFLite file (../shared/data/pretrained), whose batch
  norm is folded into the convolutions;
- ``scratch``: the same model from random initialisation.

Variants: ``before`` (the loop as it was: loaded statistics kept, running statistics with momentum 0.1 from the
first step, no precise BN), ``no-precise-bn`` (folded statistics unfolded, BN momentum warm-up, ``precise_bn=0``)
and ``default`` (the same plus the default precise-BN pass before each evaluation). One thread (``threads=1``),
batch 32, the rest TrainConfig's defaults. Not a test: run it by hand.

    python benchmarks/finetune_bn.py --json benchmarks/results/finetune_bn.json
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import re
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TFLITE = ROOT.parent / "shared" / "data" / "pretrained" / "mobilenet_v3_small_1.0_224.uint8.tflite"


def _before(monkeypatch_run) -> None:
    """Make the loop behave as before the fix (for the 'before' variant)."""
    from mobilenets.training import loop

    real_prepare = loop._Run._prepare

    def prepare(self):
        real_fix, loop._Run._fix_loaded_statistics = loop._Run._fix_loaded_statistics, lambda self: None
        try:
            real_prepare(self)
        finally:
            loop._Run._fix_loaded_statistics = real_fix
        self.bn_momenta = {}  # no momentum warm-up

    monkeypatch_run.append((loop._Run, "_prepare", real_prepare))
    loop._Run._prepare = prepare


def run(data: Path, scenario: str, variant: str, seed: int, out: Path, precise_bn: int | None = None) -> dict:
    import mobilenets
    from mobilenets import TrainConfig

    undo: list = []
    if variant == "before":
        _before(undo)
    try:
        cfg = TrainConfig(data=str(data), model="mobilenet_v3_small", resolution=96, epochs=2, batch_size=32,
                          threads=1, progress=False, seed=seed, output=str(out),
                          weights=str(TFLITE) if scenario == "tflite" else None,
                          precise_bn=0 if variant in ("before", "no-precise-bn") else
                          precise_bn if precise_bn is not None else TrainConfig.precise_bn)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = mobilenets.train(cfg)
        seconds = time.perf_counter() - t0
    finally:
        for owner, name, value in undo:
            setattr(owner, name, value)
    log = (out / "train.log").read_text()
    f = r.final
    return {"scenario": scenario, "variant": variant, "seed": seed, "train_top1": f["train_top1"],
            "val_top1": f["val_top1"], "ema_val_top1": f.get("ema_val_top1"), "best_val_top1": r.best_metric,
            "epoch_s": [h["epoch_s"] for h in r.history],
            "precise_bn_s": [float(x) for x in re.findall(r"precise BN ([\d.]+)s", log)],
            "unfold_s": [float(x) for x in re.findall(r"same eval-mode function; ([\d.]+)s", log)],
            "run_s": seconds}


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from tests.test_finetune import make_photo_folder

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--scenarios", nargs="+", default=["tflite", "scratch"])
    p.add_argument("--variants", nargs="+", default=["before", "no-precise-bn", "default"])
    p.add_argument("--precise-bn", type=int, help="images per precise-BN pass in the default variant (default: "
                                                   "TrainConfig's)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = make_photo_folder(Path(tmp) / "photos")
        for scenario in args.scenarios:
            for variant in args.variants:
                for seed in range(args.seeds):
                    row = run(data, scenario, variant, seed, Path(tmp) / f"{scenario}-{variant}-{seed}",
                              args.precise_bn)
                    rows.append(row)
                    print(f"{scenario:8s} {variant:14s} seed {seed}: train {row['train_top1']:5.1f}  val "
                          f"{row['val_top1']:5.1f}  EMA val {row['ema_val_top1']:5.1f}  best "
                          f"{row['best_val_top1']:5.1f}"
                          f"  | epochs {'/'.join(f'{s:.1f}' for s in row['epoch_s'])}s  precise BN "
                          f"{'/'.join(f'{s:.1f}' for s in row['precise_bn_s']) or '-'}s  unfold "
                          f"{'/'.join(f'{s:.1f}' for s in row['unfold_s']) or '-'}s", flush=True)
    summary = {}
    for scenario in args.scenarios:
        for variant in args.variants:
            sel = [r for r in rows if r["scenario"] == scenario and r["variant"] == variant]
            gap = [r["train_top1"] - r["val_top1"] for r in sel]
            summary[f"{scenario}/{variant}"] = {
                "train_top1_mean": statistics.mean(r["train_top1"] for r in sel),
                "val_top1_mean": statistics.mean(r["val_top1"] for r in sel),
                "val_top1_min": min(r["val_top1"] for r in sel), "val_top1_max": max(r["val_top1"] for r in sel),
                "ema_val_top1_mean": statistics.mean(r["ema_val_top1"] for r in sel),
                "train_minus_val_max": max(gap), "train_minus_val_min": min(gap)}
            s = summary[f"{scenario}/{variant}"]
            print(f"{scenario}/{variant}: train {s['train_top1_mean']:.1f}, val {s['val_top1_mean']:.1f} "
                  f"({s['val_top1_min']:.1f}..{s['val_top1_max']:.1f}), EMA val {s['ema_val_top1_mean']:.1f}, "
                  f"train - val {s['train_minus_val_min']:.1f}..{s['train_minus_val_max']:.1f}")
    if args.json:
        import torch

        from mobilenets import TrainConfig

        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                         "torch": torch.__version__, "threads": 1, "runs": rows,
                                         "precise_bn": args.precise_bn or TrainConfig.precise_bn,
                                         "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
