"""Learning curves of the dense-prediction default jobs under a few settings (not a test).

Used to choose the defaults of ``mobilenets train-detection`` / ``train-segmentation`` (TrainConfig's
TASK_DEFAULTS): each setting is a TrainConfig override; the per-epoch validation metric is what decides, and
the curve is device-independent, so the sweep may run on a GPU and the chosen setting is then timed on the
2-core CPU (benchmarks/dense_default_runs.py). Writes one JSON with every run's history.

    python benchmarks/dense_sweep.py --task detection --device cuda --set lr=0.002 --set lr=0.004,resolution=128
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from dense_default_runs import _parse  # the k=v,k=v TrainConfig overrides (this folder is on sys.path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=("detection", "segmentation"), required=True)
    p.add_argument("--set", action="append", default=[], help="k=v,k=v overrides of one run (repeatable)")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--out", default="benchmarks/results/dense_sweep.json")
    args = p.parse_args()

    import logging

    import mobilenets
    from mobilenets.cli.common import setup_logging

    setup_logging()
    logging.getLogger("mobilenets").setLevel(logging.INFO)
    runs = []
    for i, text in enumerate(args.set or [""]):
        overrides = _parse(text)
        cfg = mobilenets.TrainConfig(task=args.task, device=args.device, workers=args.workers, amp="none",
                                     progress=False, output=f"/tmp/sweep-{args.task}-{i}", **overrides)
        t0 = time.perf_counter()
        result = mobilenets.train(cfg)
        runs.append({"overrides": overrides, "seconds": time.perf_counter() - t0, "best": result.best_metric,
                     "history": result.history})
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
