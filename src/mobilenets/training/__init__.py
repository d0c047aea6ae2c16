"""Training: one loop for every task (:func:`train`), one config (:class:`TrainConfig`).

- ``config.py``: the config and each task's defaults
- ``loop.py``: the loop (DDP, AMP, EMA, channels_last, progress, checkpoints, resume)
- ``state.py``: RNG states and finding the run to resume
- ``optim.py``: optimizers and schedules
- ``ema.py``: the moving average of the weights (without a host sync per step)
- ``batchnorm.py``: folded / missing batch-norm statistics, precise BN
- ``records.py``: metrics.csv, TensorBoard, curves.png
- ``distributed.py``: torchrun plumbing
- ``qat.py``: quantization-aware fine-tuning (``train --qat``)
"""

from .config import AMP_MODES, AUGMENTS, DENSE_AUGMENTS, HEADS, OPTIMIZERS, SCHEDULES, TASK_DEFAULTS, TrainConfig

__all__ = ["TrainConfig", "TrainResult", "train", "TASK_DEFAULTS", "OPTIMIZERS", "AMP_MODES", "AUGMENTS", "DENSE_AUGMENTS",
           "SCHEDULES", "HEADS"]


def __getattr__(name: str):
    """``train`` and ``TrainResult`` on first use: the config above is torch-free (the command line's --help
    reads its defaults), the loop is not."""
    if name in ("train", "TrainResult"):
        from . import loop

        return getattr(loop, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
