"""Run an exported artifact in the runtime it is meant for, behind one interface.

``load_artifact(path, format)`` returns an :class:`Artifact`: ``artifact(x)`` takes a float32 NCHW numpy
batch and returns the model's output as numpy: one array for a single-output model (classifier logits,
segmentation logits), a tuple of arrays, in the order of the PyTorch ``forward``'s outputs, for several (a
detector's class logits and box regressions). Each format is run by the runtime users deploy it with:
onnxruntime, the LiteRT interpreter (``ai_edge_litert``), ExecuTorch's runtime (``executorch.runtime``, XNNPACK
kernels), and TorchScript (``torch.jit.load``).

Every exported file carries a JSON document, ``artifact.metadata`` (:func:`read_metadata`): the task,
preprocessing and class names (:func:`mobilenets.export.dense.metadata_document`), in the place each format
keeps such data: ONNX ``metadata_props`` under the key ``"mobilenets"``, a TFLite
``metadata`` entry named ``"mobilenets"`` (the file's own flatbuffer field), an ExecuTorch constant method
``mobilenets_metadata`` returning the string, and a TorchScript extra file ``mobilenets.json``
(:func:`write_metadata` / :mod:`mobilenets.export.dense` say what the document holds).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import MobileNetsError, existing_file, one_line
from .options import EXTRAS, FORMATS, SUFFIXES

__all__ = ["FORMATS", "SUFFIXES", "Artifact", "load_artifact", "require", "read_metadata", "write_metadata",
           "METADATA_KEY"]

# the name the metadata document is stored under, in every format (ExecuTorch: METADATA_METHOD; TorchScript:
# METADATA_FILE)
METADATA_KEY = "mobilenets"
METADATA_METHOD = "mobilenets_metadata"
METADATA_FILE = "mobilenets.json"
TFLITE_IDENTIFIER = b"TFL3"


def require(fmt: str, module: str):
    """Import ``module`` for ``fmt``, or raise a one-line error naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MobileNetsError(f"format {fmt!r} needs {module} ({e}); install it with: "
                              f"pip install 'mobilenets[{EXTRAS[fmt]}]'") from None


# what an artifact call returns: one array, or a tuple for a model with several outputs
Outputs = np.ndarray | tuple[np.ndarray, ...]


@dataclass
class Artifact:
    """A loaded artifact. ``fixed_batch`` is the batch size baked into the file (None: dynamic batch, up to
    ``max_batch`` when the format needs a bound); larger batches are run in chunks. ``num_outputs``: how many
    arrays a call returns (1: a bare array, as for classifiers; more: a tuple). ``metadata``: the file's
    mobilenets document (``{}`` for files without one: written elsewhere, or a classifier exported by
    mobilenets before its files carried one)."""

    format: str
    path: Path
    fixed_batch: int | None
    _run: Callable[[np.ndarray], list[np.ndarray]]  # every output, in forward's order
    max_batch: int | None = None
    num_outputs: int = 1
    metadata: dict = field(default_factory=dict)

    def __call__(self, x: np.ndarray) -> Outputs:
        x = np.ascontiguousarray(x, dtype=np.float32)
        b = self.fixed_batch or self.max_batch
        if b is None or len(x) == b or (self.fixed_batch is None and len(x) <= b):
            outs = self._run(x)
        else:
            if self.fixed_batch and len(x) % b:
                raise MobileNetsError(f"{self.path}: a batch of {len(x)} does not split into the file's batch {b}")
            chunks = [self._run(x[i:i + b]) for i in range(0, len(x), b)]
            outs = [np.concatenate(parts) for parts in zip(*chunks)]
        return outs[0] if len(outs) == 1 else tuple(outs)


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
    meta = _parse_metadata(sess.get_modelmeta().custom_metadata_map.get(METADATA_KEY), path)
    return Artifact("onnx", path, batch, lambda x: sess.run(None, {inp.name: x}), num_outputs=len(sess.get_outputs()),
                    metadata=meta)


def _tflite(path: Path, num_threads: int) -> Artifact:
    from ..weights.tflite import check_structure

    interp_mod = require("tflite", "ai_edge_litert.interpreter")
    check_structure(path)  # the interpreter crashes the process on some malformed files
    interp = interp_mod.Interpreter(model_path=str(path), num_threads=num_threads)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    outs = _tflite_outputs(interp)
    batch = int(inp["shape"][0])

    # int8 files (litert-torch's PT2E path) take and give quantized tensors: quantize the float input with
    # the file's own (scale, zero point) and dequantize each output with its own, as a deployed app does
    in_dtype, (in_scale, in_zero) = inp["dtype"], inp["quantization"]

    def dequantize(out: dict) -> np.ndarray:
        y = interp.get_tensor(out["index"])
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            return (y.astype(np.float32) - zero) * np.float32(scale)
        return y.copy()

    def run(x: np.ndarray) -> list[np.ndarray]:
        if in_dtype != np.float32:
            info = np.iinfo(in_dtype)
            x = np.clip(np.round(x / in_scale) + in_zero, info.min, info.max).astype(in_dtype)
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        return [dequantize(out) for out in outs]

    meta = _parse_metadata(_tflite_metadata(Path(path).read_bytes()), path)
    return Artifact("tflite", path, batch, run, num_outputs=len(outs), metadata=meta)


def _tflite_outputs(interp) -> list[dict]:
    """The output details in the order of the PyTorch ``forward``'s outputs. litert-torch names them
    ``output_0``, ``output_1``, ... in its signature; the flat output list need not follow that order."""
    details = interp.get_output_details()
    signatures = interp._get_full_signature_list() or {}
    if len(details) > 1 and len(signatures) == 1:
        named = next(iter(signatures.values())).get("outputs", {})
        if all(k.startswith("output_") and k[7:].isdigit() for k in named) and len(named) == len(details):
            by_index = {d["index"]: d for d in details}
            return [by_index[named[k]] for k in sorted(named, key=lambda k: int(k[7:]))]
    return details


def _executorch(path: Path, num_threads: int) -> Artifact:
    rt = require("executorch", "executorch.runtime")
    # ExecuTorch's XNNPACK backend sizes its thread pool itself (all cores): pin it for fair comparison, before
    # any program is loaded (sized after this load, it hung the program's first call on a 2-core machine asked
    # for 1 thread)
    _set_executorch_threads(num_threads)
    program = rt.Runtime.get().load_program(str(path))
    method = program.load_method("forward")
    # a dynamic-batch program reports the upper bound it was planned for
    max_batch = int(method.metadata.input_tensor_meta(0).sizes()[0])
    return Artifact("executorch", path, None, lambda x: [y.numpy() for y in method.execute([torch.from_numpy(x)])],
                    max_batch=max_batch, num_outputs=int(method.metadata.num_outputs()),
                    metadata=_executorch_metadata(program, path))


_executorch_pool: int | None = None  # the thread count this process sized ExecuTorch's pool to


def _set_executorch_threads(num_threads: int) -> None:
    """Size ExecuTorch's process-wide XNNPACK thread pool, once per process: the reset is "unsafe" (its name)
    while programs loaded earlier are alive; resizing it under a loaded program hung that program's next
    call, or corrupted the heap ("malloc(): unaligned tcache chunk detected"). A later request for another
    size keeps the pool as it is, with a warning."""
    global _executorch_pool
    if _executorch_pool is not None:
        if num_threads != _executorch_pool:
            import logging

            logging.getLogger("mobilenets").warning(
                "ExecuTorch's thread pool was sized to %d threads in this process; keeping it (not %d)",
                _executorch_pool, num_threads)
        return
    try:
        from executorch.extension.pybindings import portable_lib

        reset = getattr(portable_lib, "_unsafe_reset_threadpool", None)
        count = getattr(portable_lib, "_threadpool_get_thread_count", None)
        if reset is not None and (count is None or count() != num_threads):
            reset(num_threads)
        _executorch_pool = num_threads
    except ImportError:  # pragma: no cover - depends on the executorch build
        pass


def _executorch_metadata(program, path) -> dict:
    meta = None
    if METADATA_METHOD in program.method_names:
        meta = program.load_method(METADATA_METHOD).execute([])[0]
    return _parse_metadata(meta, path)


def _torchscript(path: Path, num_threads: int) -> Artifact:
    import warnings

    extra = {METADATA_FILE: ""}
    with warnings.catch_warnings():  # deprecated upstream (see core._write_torchscript)
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)  # files this package wrote
    module.eval()

    def run(x: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            y = module(torch.from_numpy(x))
        return [t.numpy() for t in y] if isinstance(y, (tuple, list)) else [y.numpy()]

    meta = _parse_metadata(extra[METADATA_FILE] or None, path)
    n = len(meta.get("outputs", ())) or 1  # TorchScript does not declare its outputs; the document does
    return Artifact("torchscript", path, None, run, num_outputs=n, metadata=meta)


_LOADERS = {"onnx": _onnx, "tflite": _tflite, "executorch": _executorch, "torchscript": _torchscript}


def load_artifact(path: Path | str, format: str, *, num_threads: int = 2) -> Artifact:
    """Load an exported file into its runtime, limited to ``num_threads`` CPU threads."""
    if format not in _LOADERS:
        raise MobileNetsError(f"unknown format {format!r}; choose from {', '.join(FORMATS)}")
    path = existing_file(path, "an exported model file")
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or not 1 <= num_threads <= 1024:
        raise MobileNetsError(f"num_threads must be an integer in [1, 1024], got {num_threads!r}")
    with _unreadable(path, format):
        return _LOADERS[format](path, num_threads)


@contextmanager
def _unreadable(path: Path, format: str):
    """Any error a runtime raises on a damaged, foreign or crafted file, as one :class:`MobileNetsError`."""
    if path.stat().st_size == 0:
        raise MobileNetsError(f"{path}: empty file, not a {format} model")
    try:
        yield
    except MobileNetsError:
        raise
    except Exception as e:  # protobuf, flatbuffers, struct, the runtimes' own: many types
        first = str(e).strip().split("\n")[0]
        raise MobileNetsError(f"{path}: not a readable {format} file ({type(e).__name__}: {one_line(first, 160)})") \
            from None


# ------------------------------------------------------------------------------------------------ metadata


def _parse_metadata(text, path) -> dict:
    if text is None:
        return {}
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", errors="replace")
    try:
        meta = json.loads(text)
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise MobileNetsError(f"{path}: its '{METADATA_KEY}' metadata is not a JSON object")
    names = meta.get("class_names")
    if names is not None and not (isinstance(names, list) and len(names) <= 100_000 and all(
            isinstance(n, str) and n.isprintable() for n in names)):
        raise MobileNetsError(f"{path}: its metadata's class_names are not a list of printable names")
    size = meta.get("input_size")
    if size is not None and not (isinstance(size, list) and len(size) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 16_384 for v in size)):
        raise MobileNetsError(f"{path}: its metadata's input_size is not two sides in pixels")
    return meta


def _tflite_metadata(data: bytes) -> bytes | None:
    """The bytes of the file's ``metadata`` entry named :data:`METADATA_KEY` (None when absent)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == METADATA_KEY.encode():
            return model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    return None


def _tflite_with_metadata(data: bytes, document: str) -> bytes:
    """``data`` (a TFLite flatbuffer) with a ``metadata`` entry :data:`METADATA_KEY` holding ``document``.

    The way TensorFlow's own metadata writer (``tflite_support.metadata.MetadataPopulator``) does it: unpack the
    model with the schema's object API, append a buffer and a ``Metadata`` row naming it, pack it again. Files
    whose tensors live outside the flatbuffer (``Buffer.offset``, used above 2 GB) are refused."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(data, 0)
    if any(b.offset for b in model.buffers or ()):
        raise MobileNetsError("this TFLite file keeps its tensors outside the flatbuffer; metadata is not supported")
    model.metadata = [m for m in (model.metadata or []) if m.name not in (METADATA_KEY, METADATA_KEY.encode())]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(document.encode("utf-8"), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_KEY, len(model.buffers) - 1
    model.metadata.append(entry)
    builder = flatbuffers.Builder(len(data) + len(document) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def write_metadata(path: Path | str, format: str, document: str) -> None:
    """Store ``document`` (a JSON string) in an ONNX or TFLite file already written at ``path``, in place.
    ExecuTorch and TorchScript files get theirs while they are written (a constant method, an extra file:
    :mod:`mobilenets.export.core`)."""
    if format == "onnx":
        onnx = require("onnx", "onnx")
        model = onnx.load(str(path), load_external_data=False)
        for prop in list(model.metadata_props):
            if prop.key == METADATA_KEY:
                model.metadata_props.remove(prop)
        model.metadata_props.add(key=METADATA_KEY, value=document)
        onnx.save(model, str(path))
    elif format == "tflite":
        Path(path).write_bytes(_tflite_with_metadata(Path(path).read_bytes(), document))
    else:
        raise MobileNetsError(f"{format} files take their metadata while they are written")


def read_metadata(path: Path | str, format: str) -> dict:
    """The mobilenets metadata document of an exported file (``{}`` when it has none), without running it."""
    if format not in _LOADERS:
        raise MobileNetsError(f"unknown format {format!r}; choose from {', '.join(FORMATS)}")
    path = existing_file(path, "an exported model file")
    with _unreadable(path, format):
        if format == "onnx":
            onnx = require("onnx", "onnx")
            props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
            return _parse_metadata(props.get(METADATA_KEY), path)
        if format == "tflite":
            require("tflite", "ai_edge_litert")
            data = path.read_bytes()
            if data[4:8] != TFLITE_IDENTIFIER:
                raise MobileNetsError(f"{path}: not a TFLite flatbuffer (no 'TFL3' identifier)")
            return _parse_metadata(_tflite_metadata(data), path)
        if format == "executorch":  # the program only: no forward method, no thread-pool change
            rt = require("executorch", "executorch.runtime")
            return _executorch_metadata(rt.Runtime.get().load_program(str(path)), path)
        return _torchscript_metadata(path)


def _torchscript_metadata(path: Path) -> dict:
    """The metadata file inside a TorchScript archive, read as a zip member: loading the archive would run its
    code (``__setstate__`` and friends), which reading a document must not."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        if not any("/code/" in n for n in z.namelist()):
            raise MobileNetsError(f"{path}: not a TorchScript archive")
        member = next((i for i in z.infolist() if i.filename.endswith(f"/extra/{METADATA_FILE}")), None)
        if member is None:
            return {}
        if member.file_size > 64 << 20:
            raise MobileNetsError(f"{path}: its metadata file is {member.file_size} bytes; refused")
        return _parse_metadata(z.read(member), path)
