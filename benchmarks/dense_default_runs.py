"""The dense-prediction main jobs, timed (not a test): ``mobilenets train-detection`` and ``mobilenets
train-segmentation`` with no arguments, each in a fresh run folder, against the issues' targets (val AP50 >= 0.7
and val mIoU >= 0.7 within 10 minutes on 2 CPU cores). Writes ``benchmarks/results/dense_default_runs.json``
(every epoch's metrics and the wall-clock time at its end) and ``dense_default_runs.png`` (the metric against
minutes).

    python benchmarks/dense_default_runs.py                 # both jobs, their defaults
    python benchmarks/dense_default_runs.py --task detection --set epochs=30
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

TARGETS = {"detection": ("ap50", 0.7), "segmentation": ("miou", 0.7)}
BUDGET_S = 600.0


def _parse(text: str) -> dict:
    """``k=v,k=v`` as TrainConfig overrides (values JSON where they parse, else strings)."""
    out = {}
    for item in filter(None, text.split(",")):
        k, _, v = item.partition("=")
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, (task, r) in zip(axes[0], results.items()):
        key, target = TARGETS[task]
        minutes = [h["elapsed_s"] / 60 for h in r["history"]]
        for prefix, style, label in (("val_", "o-", "val"), ("ema_val_", "o--", "val (EMA)")):
            ax.plot(minutes, [h[prefix + key] for h in r["history"]], style, label=label)
        ax.axhline(target, color="grey", lw=0.8, ls=":", label=f"target {target}")
        ax.axvline(BUDGET_S / 60, color="red", lw=0.8, ls=":", label="10 minutes")
        ax.set(xlabel="minutes (wall clock, from the start of training)", ylabel=key,
               title=f"{r['config']['model']} ({task}), {r['config']['resolution']}px")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", action="append", choices=tuple(TARGETS), help="default: both")
    p.add_argument("--set", default="", help="k=v,k=v TrainConfig overrides (default: none: the main job)")
    p.add_argument("--out-dir", default="benchmarks/results")
    p.add_argument("--runs-dir", help="keep the run folders here (default: temporary, removed)")
    args = p.parse_args()

    import mobilenets
    from mobilenets.cli.common import setup_logging

    setup_logging()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for task in args.task or tuple(TARGETS):
        key, target = TARGETS[task]
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = Path(args.runs_dir) / task if args.runs_dir else Path(tmp) / "run"
            cfg = mobilenets.TrainConfig(task=task, output=str(run_dir), progress=False, **_parse(args.set))
            t0 = time.time()
            result = mobilenets.train(cfg)
            wall = time.time() - t0
        # each epoch's end in wall-clock seconds (epoch_s is the training pass; evaluation is the rest)
        total_epochs = sum(h["epoch_s"] for h in result.history)
        overhead = (wall - total_epochs) / max(len(result.history), 1)
        elapsed, history = 0.0, []
        for h in result.history:
            elapsed += h["epoch_s"] + overhead
            history.append({**h, "elapsed_s": elapsed})
        best = max(max(h["val_" + key], h["ema_val_" + key]) for h in history)
        reached = next((h["elapsed_s"] for h in history if max(h["val_" + key], h["ema_val_" + key]) >= target),
                       None)
        results[task] = {"config": cfg.to_dict(), "wall_s": wall, "best": best, "target": target, "metric": key,
                         "reached_target_at_s": reached, "history": history}
        print(f"{task}: best val {key} {best:.3f} (target {target}) in {wall / 60:.1f} min; "
              + (f"target reached after {reached / 60:.1f} min" if reached else "target not reached"))
    (out_dir / "dense_default_runs.json").write_text(json.dumps(results, indent=1))
    _plot(results, out_dir / "dense_default_runs.png")


if __name__ == "__main__":
    main()
