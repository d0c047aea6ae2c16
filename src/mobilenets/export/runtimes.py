"""Run an exported artifact in the runtime it is meant for, behind one interface.

``load_artifact(path, format)`` returns an :class:`Artifact`: ``artifact(x)`` takes a float32 NCHW numpy
batch and returns the logits as numpy. Each format is run by the runtime users deploy it with: onnxruntime,
the LiteRT interpreter (``ai_edge_litert``), ExecuTorch's runtime (``executorch.runtime``, XNNPACK kernels),
and TorchScript (``torch.jit.load``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import MobileNetsError, existing_file

__all__ = ["FORMATS", "SUFFIXES", "Artifact", "load_artifact", "require"]

FORMATS = ("onnx", "tflite", "executorch", "torchscript")
SUFFIXES = {"onnx": ".onnx", "tflite": ".tflite", "executorch": ".pte", "torchscript": ".pt"}
# the pip extra that provides each format's exporter and runtime
EXTRAS = {"onnx": "onnx", "tflite": "tflite-export", "executorch": "executorch", "torchscript": None}


def require(fmt: str, module: str):
    """Import ``module`` for ``fmt``, or raise a one-line error naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MobileNetsError(f"format {fmt!r} needs {module} ({e}); install it with: "
                              f"pip install 'mobilenets[{EXTRAS[fmt]}]'") from None


@dataclass
class Artifact:
    """A loaded artifact. ``fixed_batch`` is the batch size baked into the file (None: dynamic batch, up to
    ``max_batch`` when the format needs a bound); larger batches are run in chunks."""

    format: str
    path: Path
    fixed_batch: int | None
    _run: Callable[[np.ndarray], np.ndarray]
    max_batch: int | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        b = self.fixed_batch or self.max_batch
        if b is None or len(x) == b or (self.fixed_batch is None and len(x) <= b):
            return self._run(x)
        if self.fixed_batch and len(x) % b:
            raise MobileNetsError(f"{self.path}: a batch of {len(x)} does not split into the file's batch {b}")
        return np.concatenate([self._run(x[i:i + b]) for i in range(0, len(x), b)])


def _onnx(path: Path, num_threads: int) -> Artifact:
    ort = require("onnx", "onnxruntime")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = num_threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # flush denormals to zero (onnxruntime's documented session option): tiny activations of poorly scaled
    # weights otherwise fall onto the CPU's slow denormal path; the logits are unaffected within the checks
    opts.add_session_config_entry("session.set_denormal_as_zero", "1")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
    return Artifact("onnx", path, batch, lambda x: sess.run(None, {inp.name: x})[0])


def _tflite(path: Path, num_threads: int) -> Artifact:
    interp_mod = require("tflite", "ai_edge_litert.interpreter")
    interp = interp_mod.Interpreter(model_path=str(path), num_threads=num_threads)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    batch = int(inp["shape"][0])

    # int8 files (litert-torch's PT2E path) take and give quantized tensors: quantize the float input with
    # the file's own (scale, zero point) and dequantize the logits, as a deployed app does
    in_dtype, (in_scale, in_zero) = inp["dtype"], inp["quantization"]
    out_dtype, (out_scale, out_zero) = out["dtype"], out["quantization"]

    def run(x: np.ndarray) -> np.ndarray:
        if in_dtype != np.float32:
            info = np.iinfo(in_dtype)
            x = np.clip(np.round(x / in_scale) + in_zero, info.min, info.max).astype(in_dtype)
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        y = interp.get_tensor(out["index"])
        if out_dtype != np.float32:
            return (y.astype(np.float32) - out_zero) * np.float32(out_scale)
        return y.copy()

    return Artifact("tflite", path, batch, run)


def _executorch(path: Path, num_threads: int) -> Artifact:
    rt = require("executorch", "executorch.runtime")
    program = rt.Runtime.get().load_program(str(path))
    method = program.load_method("forward")
    # a dynamic-batch program reports the upper bound it was planned for
    max_batch = int(method.metadata.input_tensor_meta(0).sizes()[0])
    # ExecuTorch's XNNPACK backend sizes its thread pool itself (all cores): pin it for fair comparison
    _set_executorch_threads(num_threads)
    return Artifact("executorch", path, None, lambda x: method.execute([torch.from_numpy(x)])[0].numpy(),
                    max_batch=max_batch)


def _set_executorch_threads(num_threads: int) -> None:
    try:
        from executorch.extension.pybindings import portable_lib

        fn = getattr(portable_lib, "_unsafe_reset_threadpool", None)
        if fn is not None:
            fn(num_threads)
    except ImportError:  # pragma: no cover - depends on the executorch build
        pass


def _torchscript(path: Path, num_threads: int) -> Artifact:
    import warnings

    with warnings.catch_warnings():  # deprecated upstream (see core._write_torchscript)
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu")  # only files this package just wrote
    module.eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    return Artifact("torchscript", path, None, run)


_LOADERS = {"onnx": _onnx, "tflite": _tflite, "executorch": _executorch, "torchscript": _torchscript}


def load_artifact(path: Path | str, format: str, *, num_threads: int = 2) -> Artifact:
    """Load an exported file into its runtime, limited to ``num_threads`` CPU threads."""
    if format not in _LOADERS:
        raise MobileNetsError(f"unknown format {format!r}; choose from {', '.join(FORMATS)}")
    path = existing_file(path, "an exported model file")
    return _LOADERS[format](path, num_threads)
