"""Turning a ``--device`` string into a :class:`torch.device` that exists on this machine; counting how often
code waits for a GPU."""

from __future__ import annotations

import os

import torch

from .errors import MobileNetsError

__all__ = ["resolve_device", "local_gpu", "count_host_syncs"]


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


def count_host_syncs(fn) -> int:
    """How many times ``fn()`` makes the host wait for the GPU (``torch.cuda.set_sync_debug_mode("warn")``
    warns at each such call: ``.item()``, boolean indexing, a blocking copy...). The GPU checks in the tests
    and ``benchmarks/gpu.py`` use it to show a training step or an evaluation does not wait per batch."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchronizing CUDA operation" in str(w.message) for w in caught)
