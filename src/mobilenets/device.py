"""Turning a ``--device`` string into a :class:`torch.device` that exists on this machine."""

from __future__ import annotations

import os

import torch

from .errors import MobileNetsError

__all__ = ["resolve_device", "local_gpu"]


def local_gpu() -> torch.device:
    """This process's GPU: ``cuda:<LOCAL_RANK>`` (torchrun starts one process per GPU and numbers them 0, 1, ...
    on each machine), checked against the GPUs this machine has. More processes than GPUs is a one-line
    :class:`MobileNetsError` here instead of every rank dying with "CUDA error: invalid device ordinal"."""
    rank = int(os.environ.get("LOCAL_RANK", "0"))
    nproc = int(os.environ.get("LOCAL_WORLD_SIZE", "0"))  # torchrun's --nproc-per-node
    count = torch.cuda.device_count()
    if rank >= count or nproc > count:  # every rank says so, not only the ones without a GPU
        asked = f"{nproc} processes per machine" if nproc else f"a process with LOCAL_RANK {rank}"
        raise MobileNetsError(f"torchrun asked for {asked} but this machine has {count} GPU(s): use "
                              f"--nproc-per-node {count} (one process per GPU), or --device cpu")
    return torch.device("cuda", rank)


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` (cuda:<LOCAL_RANK> when a GPU is visible, else cpu), ``cpu``, ``cuda``, ``cuda:N``, ``mps``...;
    a device this machine does not have is a one-line :class:`MobileNetsError`."""
    if spec == "auto":
        if torch.cuda.is_available():
            return local_gpu()
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError, ValueError):
        raise MobileNetsError(f"bad device {spec!r} (expected auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise MobileNetsError(f"device {spec!r}: no CUDA GPU is visible on this machine (use --device cpu)")
        if device.index is None:  # plain "cuda": this process's GPU (torchrun's LOCAL_RANK)
            device = local_gpu()
        if device.index >= torch.cuda.device_count():
            raise MobileNetsError(f"device {spec!r}: only {torch.cuda.device_count()} GPU(s) visible")
    elif device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise MobileNetsError(f"device {spec!r}: MPS is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise MobileNetsError(f"device {spec!r}: unsupported device type {device.type!r}")
    return device
