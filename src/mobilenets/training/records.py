"""What a run writes besides checkpoints: metrics.csv, TensorBoard scalars and curves.png."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..checkpoint import atomic_write

__all__ = ["write_csv", "write_curves", "tensorboard_scalars"]


def write_csv(history: list[dict], path: Path) -> None:
    keys = list(dict.fromkeys(k for h in history for k in h))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(history)
    atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue()))


def tensorboard_scalars(writer, row: dict, step: int) -> None:
    """``train_loss`` -> ``train/loss``, ``ema_val_ap`` -> ``ema_val/ap``, others as they are."""
    for k, v in row.items():
        if k == "epoch" or not isinstance(v, (int, float)):
            continue
        for prefix in ("ema_val_", "train_", "val_"):
            if k.startswith(prefix):
                k = prefix[:-1] + "/" + k[len(prefix):]
                break
        writer.add_scalar(k, v, step)
    writer.flush()


def write_curves(history: list[dict], panels, path: Path) -> None:
    """One panel per (title, metric keys): train / val / val (EMA) of each key against the epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (title, keys) in zip(axes[0], panels):
        for key in keys:
            for prefix, style, label in (("train_", "o-", "train"), ("val_", "o-", "val"),
                                         ("ema_val_", "o--", "val (EMA)")):
                if any(prefix + key in h for h in history):
                    name = label if len(keys) == 1 else f"{label} {key}"
                    ax.plot(ep, [h.get(prefix + key) for h in history], style, label=name)
        ax.set(xlabel="epoch", ylabel=title, title=title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))
