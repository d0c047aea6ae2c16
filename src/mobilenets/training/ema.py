"""The exponential moving average of a model's weights that training evaluates beside the model itself."""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn

__all__ = ["WeightEMA"]


class WeightEMA(nn.Module):
    """An exponential moving average of ``model``'s parameters and buffers (batch-norm statistics included),
    updated after each optimizer step with timm's warm-up: decay_t = min(decay, (1 + t) / (10 + t)) at the
    t-th update, so early on the average follows the model quickly and the initial weights and statistics (a
    running variance of 1 next to trained ones of 1e-3) do not linger in short runs. The first update copies
    the model. Integer buffers (``num_batches_tracked``) follow the model.

    The state dict has the layout of ``torch.optim.swa_utils.AveragedModel(..., use_buffers=True)`` (``module.*``
    and ``n_averaged``), which runs saved before: their states resume. Not AveragedModel itself: it copies its
    update counter to the model's device at every update (a blocking copy) and the warm-up needs it back as a
    number, so each training step waited for the GPU twice. Here the counter stays on the CPU and the decay is a
    Python float: an update only queues kernels.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.module = copy.deepcopy(model).requires_grad_(False)
        self.decay = decay
        # on the CPU (the loop never moves the average as a whole; loading a state copies into it): read for free
        self.register_buffer("n_averaged", torch.tensor(0, dtype=torch.long))

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        """Fold ``model``'s current parameters and buffers into the average."""
        averaged = list(itertools.chain(self.module.parameters(), self.module.buffers()))
        current = [t.detach() for t in itertools.chain(model.parameters(), model.buffers())]
        if len(averaged) != len(current):
            raise ValueError(f"the model has {len(current)} parameters and buffers, the average {len(averaged)}")
        t = int(self.n_averaged)
        if t == 0:
            torch._foreach_copy_(averaged, current)
        else:
            floats = [i for i, a in enumerate(averaged) if a.is_floating_point()]
            others = [i for i, a in enumerate(averaged) if not a.is_floating_point()]
            if floats:
                torch._foreach_lerp_([averaged[i] for i in floats], [current[i] for i in floats],
                                     1.0 - min(self.decay, (1.0 + t) / (10.0 + t)))
            if others:
                torch._foreach_copy_([averaged[i] for i in others], [current[i] for i in others])
        self.n_averaged += 1
