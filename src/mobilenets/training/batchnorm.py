"""Batch-norm statistics that fit the weights: finding loaded statistics that are not real, unfolding folded
ones, and recomputing running statistics from training images ("precise BN").

Two ways loaded weights can carry statistics unrelated to the activations the network produces:

- **folded**: TFLite files (and checkpoints converted from them) fold each batch norm into the convolution
  before it, so the loader gives the BN identity statistics (gamma 1, mean 0, var 1 - eps: ``weights/tflite.py``).
  In eval mode that computes the published function exactly, but in train mode each BN normalises its input
  by batch statistics and so computes something else, and statistics later averaged from training batches
  belong to that other function. :func:`unfold_batchnorm` measures each folded BN's real input statistics in
  eval mode (where the network is the published one) and stores them, adjusting gamma and beta so the eval-mode
  function is unchanged: afterwards train mode computes (up to batch noise) the published function too.
- **missing**: default statistics (mean 0, var 1) next to trained affine parameters, as in a file saved from
  a model whose statistics were never tracked. :func:`precise_bn` recomputes them.

:func:`precise_bn` is also what makes evaluation during short schedules trustworthy: running statistics
averaged with momentum 0.1 over a few dozen steps still weigh the initial ones (0.9^18 = 15% after 18 steps)
and statistics of weights that have since changed. A precise-BN pass (pycls / detectron2's ``PreciseBN``:
forward some training batches in train mode with cumulative averaging, no gradient, no optimizer step)
gives the statistics of the weights being evaluated.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

__all__ = ["folded_batchnorms", "missing_statistics", "unfold_batchnorm", "precise_bn", "batchnorms"]

_BN = nn.modules.batchnorm._BatchNorm


def batchnorms(model: nn.Module) -> dict[str, nn.Module]:
    """The batch norms of ``model`` that track running statistics, by module name."""
    return {n: m for n, m in model.named_modules()
            if isinstance(m, _BN) and m.track_running_stats and m.running_mean is not None}


def _all(t: torch.Tensor, value: float, rel: float = 0.0) -> bool:
    return bool(torch.all(torch.abs(t.float() - value) <= rel * abs(value)))


def folded_batchnorms(model: nn.Module) -> list[str]:
    """Names of the batch norms holding folded (identity) statistics: gamma 1, mean 0 and var 1 - eps, what
    the TFLite loader writes (a freshly initialised BN has var 1 and is not counted)."""
    return [n for n, m in batchnorms(model).items()
            if m.affine and _all(m.weight, 1.0) and _all(m.running_mean, 0.0) and m.eps > 0
            and _all(m.running_var, 1.0 - m.eps, 1e-6) and not _all(m.running_var, 1.0)]


def missing_statistics(model: nn.Module) -> list[str]:
    """Names of the batch norms whose statistics are the defaults (mean 0, var 1) although their affine
    parameters are not (trained weights saved without running statistics)."""
    return [n for n, m in batchnorms(model).items()
            if _all(m.running_mean, 0.0) and _all(m.running_var, 1.0)
            and m.affine and not (_all(m.weight, 1.0) and _all(m.bias, 0.0))]


def _all_reduce(tensors: list[torch.Tensor], world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        for t in tensors:
            dist.all_reduce(t)


@torch.no_grad()
def unfold_batchnorm(model: nn.Module, names: Iterable[str], batches: Iterable[torch.Tensor], *,
                     forward: Callable | None = None, world: int = 1) -> int:
    """Give the batch norms ``names`` their measured input statistics without changing what ``model``
    computes in eval mode: with the old statistics (m0, v0) and affine (g, b) and the measured (m, v),
    ``g' = g sqrt(v + eps) / sqrt(v0 + eps)`` and ``b' = b + g (m - m0) / sqrt(v0 + eps)``. ``batches`` are
    input tensors on the model's device (``forward`` runs one, default ``model(x)``); under torchrun each
    rank passes its own and the sums are all-reduced. Returns the number of images seen."""
    bns = {n: m for n, m in batchnorms(model).items() if n in set(names)}
    if not bns:
        return 0
    sums: dict[str, list[torch.Tensor]] = {}

    def hook(name):
        def record(_module, inputs):
            x = inputs[0].detach().double()
            s = sums.setdefault(name, [torch.zeros((), dtype=torch.float64, device=x.device),
                                       torch.zeros(x.shape[1], dtype=torch.float64, device=x.device),
                                       torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)])
            dims = [0, *range(2, x.ndim)]
            s[0] += x.numel() // x.shape[1]
            s[1] += x.sum(dims)
            s[2] += (x * x).sum(dims)
        return record

    was_training = model.training
    handles = [m.register_forward_pre_hook(hook(n)) for n, m in bns.items()]
    images = 0
    try:
        model.eval()  # the function the weights were published with
        for x in batches:
            (forward or model)(x)
            images += len(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    n_images = torch.tensor([float(images)], dtype=torch.float64)
    _all_reduce([n_images, *[t for n in sorted(sums) for t in sums[n]]], world)
    for name, m in bns.items():
        if name not in sums:
            continue
        count, s, sq = sums[name]
        mean = s / count
        var = (sq / count - mean * mean).clamp_min(0.0)
        m0, v0 = m.running_mean.double(), m.running_var.double()
        g, b = m.weight.double(), m.bias.double()
        scale = torch.sqrt(v0 + m.eps)
        m.weight.copy_(g * torch.sqrt(var + m.eps) / scale)
        m.bias.copy_(b + g * (mean - m0) / scale)
        m.running_mean.copy_(mean)
        m.running_var.copy_(var)  # the variance train mode divides by (no Bessel correction: thousands of values)
    return int(n_images.item())


@torch.no_grad()
def precise_bn(model: nn.Module, batches: Iterable[torch.Tensor], *, forward: Callable | None = None,
               modules: Iterable[nn.Module] | None = None, world: int = 1) -> int:
    """Recompute the running statistics of the batch norms in ``modules`` (default: all of ``model``) as the
    cumulative average over ``batches`` (inputs on the model's device) in train mode: no gradient, no
    optimizer step; every other module runs in eval mode (no dropout: the pass is deterministic given its
    batches; other batch norms keep their statistics) and every mode is restored afterwards. Under torchrun
    the statistics are averaged over the ranks. Returns the number of images seen (0: nothing changed)."""
    scope = list(modules) if modules is not None else [model]
    bns = list({id(m): m for s in scope for m in batchnorms(s).values()}.values())
    if not bns:
        return 0
    modes = {m: m.training for m in model.modules()}
    saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in bns]
    images = 0
    try:
        model.eval()  # dropout and drop-path off, batch norms outside ``modules`` keep their statistics
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average: every batch weighs the same
            m.train()
        for x in batches:
            (forward or model)(x)
            images += len(x)
    except BaseException:
        for m, (_, mean, var, n) in zip(bns, saved):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(n)
        raise
    finally:
        for m, (momentum, *_rest) in zip(bns, saved):
            m.momentum = momentum
        for m, mode in modes.items():
            m.training = mode
    if images == 0:
        for m, (_, mean, var, n) in zip(bns, saved):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(n)
        return 0
    if world > 1:
        stats = [t for m in bns for t in (m.running_mean, m.running_var)]
        _all_reduce(stats, world)
        for t in stats:
            t.div_(world)
    return images
