"""The task interface of the training loop, and what tasks share (loading backbone weights, reductions)."""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

from ..errors import MobileNetsError

__all__ = ["Task", "TaskData", "EvalContext", "running_sums", "all_reduce_sum", "pretrained_info",
           "load_backbone_weights"]

log = logging.getLogger("mobilenets")


@dataclass
class TaskData:
    """The datasets of a run. ``classes``: the names the checkpoint keeps (detection: foreground classes, label
    i + 1; segmentation: every class, background included); ``collate``: the DataLoader's (None: default)."""

    classes: list[str]
    train: Dataset
    val: Dataset
    collate: Callable | None = None
    description: str = ""  # for the log: what the data is


@dataclass
class EvalContext:
    """Where evaluation runs: device, autocast dtype, memory format, and the process group."""

    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    rank: int = 0
    world: int = 1

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)


class Task:
    """One task's part of a training run; the loop calls these in this order:

    ``build_data`` -> ``build_model`` (-> ``load_pretrained``) -> per step ``targets_to`` and ``loss`` (inside
    autocast) -> per epoch ``train_summary`` and ``evaluate`` (every rank, shards of val) -> ``message``.
    ``best_metric`` names the validation metric (higher is better) that picks ``best.safetensors``.
    """

    name: ClassVar[str]
    best_metric: ClassVar[str]
    # normalisation of a model trained from scratch (weights bring their own): torchvision's ImageNet mean/std
    # for classifiers, [-1, 1] for the dense tasks as TF's SSDLite / DeepLab and torchvision's SSDLite take
    default_preprocessing: ClassVar = None
    curve_panels: ClassVar[tuple[tuple[str, tuple[str, ...]], ...]]  # (title, metric keys) per curves.png panel

    def __init__(self, config) -> None:
        self.config = config

    def pretrained(self):
        """The :class:`~mobilenets.weights.WeightsInfo` of ``config.weights`` (checked to fit), or None."""
        raise NotImplementedError

    def build_data(self, preprocessing) -> TaskData:
        raise NotImplementedError

    def build_model(self, num_classes: int, info) -> nn.Module:
        raise NotImplementedError

    def load_pretrained(self, model: nn.Module, info) -> None:
        raise NotImplementedError

    def head_modules(self, model: nn.Module) -> list[nn.Module]:
        """What ``freeze_backbone`` leaves trainable."""
        raise NotImplementedError

    def targets_to(self, targets: Any, device: torch.device) -> Any:
        return targets.to(device, non_blocking=True)

    def loss(self, outputs: Any, targets: Any) -> tuple[torch.Tensor, dict[str, float | torch.Tensor]]:
        """The loss to minimise and per-batch sums to log (``count`` = images; the loop adds them up): numbers or
        0-d tensors, left on the device (the loop reads them every few steps on a GPU, not every step)."""
        raise NotImplementedError

    def train_summary(self, sums: dict[str, float]) -> dict[str, float]:
        """Per-epoch training metrics from the summed batch statistics."""
        n = max(sums.get("count", 0.0), 1.0)
        return {"loss": sums["loss"] / n}

    def evaluate(self, model: nn.Module, loader, ctx: EvalContext) -> dict[str, float]:
        """The val metrics over ``loader`` (each rank holds a shard): sums kept on ``ctx.device`` while the
        batches run, read once through :func:`all_reduce_sum`."""
        raise NotImplementedError

    def message(self, row: dict) -> str:
        """The epoch's log line after ``epoch i/n: ``."""
        raise NotImplementedError

    def checkpoint_preprocessing(self, preprocessing):
        return preprocessing


def running_sums(n: int, ctx: EvalContext) -> torch.Tensor:
    """``n`` zeros on ``ctx.device`` for an evaluation's running sums: float64 (float32 on MPS, which has none)."""
    return torch.zeros(n, dtype=torch.float32 if ctx.device.type == "mps" else torch.float64, device=ctx.device)


def all_reduce_sum(values: torch.Tensor, ctx: EvalContext) -> torch.Tensor:
    """Sum ``values`` (float64 or int64, on the CPU or ``ctx.device``) over the ranks; the sum on the CPU.

    The tasks' ``evaluate`` keep their running sums on the device and call this once, after the last batch:
    one transfer per evaluation instead of one host sync per batch."""
    if ctx.world > 1:
        import torch.distributed as dist

        values = values.to(ctx.device)
        dist.all_reduce(values)
    return values.cpu()


def pretrained_info(source: str | None, backbone: str, width: float):
    """What the initialisation weights are (any format :func:`mobilenets.load_weights` reads), checked against
    the backbone the run builds; None without ``source``."""
    if not source:
        return None
    from ..weights import hub, inspect_weights

    entry = hub.lookup(source, model=backbone, width=width)  # short names ("torchvision") need the backbone
    info = inspect_weights(entry.name if entry is not None else source)
    if info.model != backbone or not math.isclose(info.width, width):
        raise MobileNetsError(f"{source}: weights of {info.model} width {info.width:g}, not "
                              f"{backbone} width {width:g}")
    return info


def load_backbone_weights(backbone: nn.Module, source: str) -> None:
    """Classification weights into a dense-prediction backbone (a :class:`~mobilenets.FeatureExtractor`: the
    stem and stages it keeps; the classifier and the stages past its taps are left out)."""
    from ..weights import load_weights

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        report = load_weights(backbone, source)
    log.info("backbone initialised from %s (%s weights): %d tensors loaded", source, report.info.format,
             len(report.loaded))
