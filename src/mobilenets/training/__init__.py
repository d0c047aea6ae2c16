"""Training: one loop for every task (:func:`train`), one config (:class:`TrainConfig`).

- ``config.py``: the config and each task's defaults
- ``loop.py``: the loop (DDP, AMP, EMA, channels_last, progress, checkpoints, resume)
- ``state.py``: RNG states and finding the run to resume
- ``optim.py``: optimizers and schedules
- ``records.py``: metrics.csv, TensorBoard, curves.png
- ``distributed.py``: torchrun plumbing
"""

from .config import AMP_MODES, AUGMENTS, DENSE_AUGMENTS, HEADS, OPTIMIZERS, SCHEDULES, TASK_DEFAULTS, TrainConfig
from .loop import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train", "TASK_DEFAULTS", "OPTIMIZERS", "AMP_MODES", "AUGMENTS", "DENSE_AUGMENTS",
           "SCHEDULES", "HEADS"]
