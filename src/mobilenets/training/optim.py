"""Optimizers and learning-rate schedules (per step)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import TrainConfig

__all__ = ["param_groups", "make_optimizer", "warmup_cosine", "warmup_poly", "make_schedule"]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on norm weights and biases (every 1-d parameter)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    groups = param_groups(model, config.wd)
    if config.opt == "sgd":
        return torch.optim.SGD(groups, lr=config.base_lr, momentum=config.momentum, nesterov=True)
    if config.opt == "rmsprop":  # the V2/V3 papers' optimizer; TF adds eps 1e-3 inside the sqrt: sqrt(1e-3) here
        return torch.optim.RMSprop(groups, lr=config.base_lr, alpha=0.9, eps=0.0316, momentum=config.momentum)
    return torch.optim.AdamW(groups, lr=config.base_lr)


def warmup_cosine(total_steps: int, warmup_steps: int):
    """Linear warmup to 1, then cosine decay to 0 (a LambdaLR factor of the step)."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))

    return factor


def warmup_poly(total_steps: int, warmup_steps: int, power: float = 0.9):
    """Linear warmup, then DeepLab's "poly" decay (1 - t)^0.9 (DeepLabv3 section 4, LR-ASPP's training)."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return max(0.0, 1.0 - min(1.0, t)) ** power

    return factor


def make_schedule(config: TrainConfig, optimizer, steps_per_epoch: int):
    total = steps_per_epoch * config.epochs
    warmup = round(config.warmup_epochs * steps_per_epoch)
    shape = warmup_poly if config.schedule == "poly" else warmup_cosine
    return torch.optim.lr_scheduler.LambdaLR(optimizer, shape(total, warmup))
