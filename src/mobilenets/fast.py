"""Preparing a model for fast inference, on a GPU above all: batch norm folded into the convolutions, channels_last,
bf16 / fp16 weights, ``torch.compile`` and CUDA graphs for fixed input shapes.

Every step is a PyTorch feature used the standard way; this module only puts them in the right order and turns
what cannot work on this machine into one :class:`~mobilenets.errors.MobileNetsError` line:

- BN folded (:func:`mobilenets.export.fuse.fold_batchnorm`): the same function, one operator less per layer
  (batch norms that are no plain BN after a conv, e.g. timm's BatchNormAct2d or V4's attention pre-norm, stay).
- channels_last: the memory format cuDNN's and oneDNN's fastest convolutions use.
- ``precision`` bf16 / fp16: the weights are cast once (not autocast per operator); inputs are cast on the way
  in and outputs come back as float32. fp16 needs a GPU (CPUs lack fast fp16 convolutions).
- ``compile``: ``torch.compile`` (Inductor) specialised to the shapes it sees.
- ``cuda_graphs``: one CUDA graph per input shape, captured on first use and replayed after: batch-1 inference
  is launch overhead (~150 small kernels), which a graph replay removes. With ``compile`` this is
  ``torch.compile(mode="reduce-overhead")`` (Inductor's CUDA graph trees); without, a
  :class:`torch.cuda.CUDAGraph` captured around the eager model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import MobileNetsError, one_line

if TYPE_CHECKING:  # torch is imported where the work is done: the CLI builds its parser from this module
    import torch
    from torch import nn

__all__ = ["InferenceOptions", "FastModel", "prepare_for_inference", "PRECISIONS"]

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # torch dtype names


@dataclass(frozen=True)
class InferenceOptions:
    """How :func:`prepare_for_inference` prepares a model (the defaults: eager fp32 with BN folded, which computes
    the same function as the model in eval mode)."""

    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16: GPU only)
    channels_last: bool = False
    fold_bn: bool = True
    compile: bool = False  # torch.compile
    cuda_graphs: bool = False  # CUDA graphs per input shape (GPU only)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise MobileNetsError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for name in ("channels_last", "fold_bn", "compile", "cuda_graphs"):
            if not isinstance(getattr(self, name), bool):
                raise MobileNetsError(f"{name} must be True or False, got {getattr(self, name)!r}")

    @property
    def dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, _DTYPES[self.precision])

    def check_device(self, device: torch.device) -> None:
        """A one-line error for an option this device cannot run."""
        if self.cuda_graphs and device.type != "cuda":
            raise MobileNetsError(f"CUDA graphs need a CUDA device, not {device.type} (drop --cuda-graphs)")
        if self.precision == "fp16" and device.type != "cuda":
            raise MobileNetsError(f"fp16 inference needs a GPU, not {device.type}; use bf16 (or fp32)")


class _CudaGraphs:
    """The eager module replayed from one CUDA graph per (shape, dtype, strides) of its input: the input is copied
    into the graph's static input, the graph replayed, the static output returned (overwritten by the next call:
    :class:`FastModel` copies it out)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.graphs: dict[tuple, tuple] = {}

    def __call__(self, x: torch.Tensor):
        import torch

        key = (tuple(x.shape), x.dtype, x.stride())
        if key not in self.graphs:
            static_in = x.clone(memory_format=torch.preserve_format)
            side = torch.cuda.Stream(device=x.device)  # warm-up on a side stream, as torch.cuda.graphs documents
            side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(side):
                for _ in range(3):
                    self.module(static_in)
            torch.cuda.current_stream(x.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.module(static_in)
            self.graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self.graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out


class FastModel:
    """A model prepared by :func:`prepare_for_inference`: call it with float images (N, 3, H, W) on any device;
    it returns float32 outputs on its device. ``module`` is the prepared (folded, cast) eval-mode module."""

    def __init__(self, module: nn.Module, device: torch.device, options: InferenceOptions, runner) -> None:
        self.module, self.device, self.options, self._run = module, device, options, runner
        self._first = True

    @property
    def dtype(self) -> torch.dtype:
        return self.options.dtype

    def _to_float(self, out):
        import torch

        copy = self.options.cuda_graphs  # a graph's output buffer is reused by the next replay
        if isinstance(out, torch.Tensor):
            return out.float() if out.dtype != torch.float32 or not copy else out.clone()
        if isinstance(out, (tuple, list)):
            return type(out)(self._to_float(o) for o in out)
        if isinstance(out, dict):
            return {k: self._to_float(v) for k, v in out.items()}
        return out

    def __call__(self, x: torch.Tensor):
        import torch

        with torch.inference_mode():
            return self._call(x)

    def _call(self, x: torch.Tensor):
        import torch

        fmt = torch.channels_last if self.options.channels_last and x.dim() == 4 else torch.contiguous_format
        x = x.to(self.device, self.options.dtype, non_blocking=True).contiguous(memory_format=fmt)
        if not self._first:
            return self._to_float(self._run(x))
        try:  # compilation happens on the first call: its failure is one line, not Inductor's traceback
            out = self._to_float(self._run(x))
        except MobileNetsError:
            raise
        except Exception as e:  # noqa: BLE001 - torch.compile / CUDA graph capture raise many types
            if not (self.options.compile or self.options.cuda_graphs):
                raise
            what = "torch.compile" if self.options.compile else "CUDA graph capture"
            raise MobileNetsError(f"{what} failed ({type(e).__name__}: {one_line(e, 200)}); run without "
                                  f"--{'compile' if self.options.compile else 'cuda-graphs'}") from None
        self._first = False
        return out


def prepare_for_inference(model: nn.Module, device: torch.device | str = "cpu",
                          options: InferenceOptions | None = None) -> FastModel:
    """``model`` (not modified) prepared for inference on ``device`` as ``options`` say (see the module doc).

    >>> fast = prepare_for_inference(create_model("mobilenet_v3_large"), "cuda",
    ...                              InferenceOptions(precision="bf16", channels_last=True, cuda_graphs=True))
    >>> logits = fast(images)  # float32, on the GPU
    """
    import copy

    import torch

    from .device import resolve_device

    options = options or InferenceOptions()
    device = device if isinstance(device, torch.device) else resolve_device(device)
    options.check_device(device)
    if options.fold_bn:
        from .export.fuse import fold_batchnorm

        try:
            module = fold_batchnorm(model)
        except ValueError as e:
            raise MobileNetsError(f"{e}; prepare with fold_bn=False") from None
    else:
        module = copy.deepcopy(model).eval()
    module = module.to(device=device, dtype=options.dtype)
    if options.channels_last:
        module = module.to(memory_format=torch.channels_last)
    module.requires_grad_(False)
    runner = module
    if options.compile:
        runner = torch.compile(module, mode="reduce-overhead" if options.cuda_graphs else None, dynamic=False)
    elif options.cuda_graphs:
        runner = _CudaGraphs(module)
    return FastModel(module, device, options, runner)
