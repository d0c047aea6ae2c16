"""``export_model``: write a model to a deployment format, then prove the file computes the same function.

Every export goes to a temporary file next to the target, is loaded in its own runtime and run on sample
inputs, and is renamed into place only when it matches PyTorch (fp32: max |difference| within
``1e-4 x`` the largest |logit|; int8: top-1 agreement with fp32 at least ``min_int8_agreement``), and its
metadata document (task, preprocessing, class names: :func:`mobilenets.export.dense.metadata_document`) reads
back unchanged. Detectors and segmenters take the same path with their own checks
(:mod:`mobilenets.export.dense`).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import MobileNetsError, file_mode, one_line, output_file
from ..preprocess import IMAGENET, MAX_CROP, Preprocessing
from . import dense
from .data import ImageSet, load_images
from .fuse import fold_batchnorm
from .quantize import (
    CALIB_SELECTIONS,
    ORT_METHODS,
    Int8Options,
    annotate_float_parts,
    name_onnx_nodes,
    onnx_nodes_to_exclude,
    pt2e_config,
)
from .options import INT8_FORMATS
from .runtimes import FORMATS, METADATA_FILE, METADATA_METHOD, SUFFIXES, load_artifact, require, write_metadata

__all__ = ["ExportReport", "export_model", "default_output", "FP32_RTOL", "INT8_FORMATS"]

FP32_RTOL = 1e-4  # fp32 artifacts: max |diff| <= FP32_RTOL * max |logit| (the issue's acceptance bound)
MAX_DYNAMIC_BATCH = 64  # ExecuTorch plans memory for an upper bound on the batch


@dataclass
class ExportReport:
    """What was written and how it was checked."""

    format: str
    path: str
    size_bytes: int
    model: str
    input_shape: tuple[int, ...]  # (batch, C, H, W); batch -1 when dynamic
    int8: bool
    max_abs_diff: float  # against PyTorch fp32 on the check inputs
    logit_scale: float  # max |PyTorch logit| on the check inputs
    tolerance: float | None  # the fp32 bound (None for int8, which is checked by agreement)
    n_check: int  # inputs in the check
    top1_agreement: float | None = None  # int8: argmax equal to fp32's, on the evaluation images
    accuracy_fp32: float | None = None  # on labelled evaluation images
    accuracy: float | None = None  # this artifact's accuracy on the same images
    eval_source: str | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    task: str = "classification"
    # detectors / segmenters: per output {"output", "max_abs_diff", "scale", "bound"} (max_abs_diff and
    # logit_scale above are those of the output closest to its bound)
    outputs: list[dict] = field(default_factory=list)
    detections: dict | None = None  # detectors: dense.DetectionAgreement.to_dict() on the val images
    pixel_agreement: float | None = None  # segmenters: argmax equal to PyTorch's, fraction of val pixels
    check_source: str | None = None  # dense models: the val images the task checks ran on

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """A few human-readable lines."""
        b = "dynamic" if self.input_shape[0] == -1 else str(self.input_shape[0])
        lines = [f"wrote {self.path} ({self.size_bytes / 1e6:.2f} MB): {self.model} as "
                 f"{'int8 ' if self.int8 else ''}{self.format}, input {'x'.join(map(str, self.input_shape[1:]))}, "
                 f"batch {b}, in {self.seconds:.1f}s"]
        if self.outputs:
            parts = [f"{o['output']} max |diff| {o['max_abs_diff']:.3g} (scale {o['scale']:.3g}"
                     + (f", bound {o['bound']:.3g})" if o["bound"] is not None else ")") for o in self.outputs]
            lines.append(f"verified in its runtime on {self.n_check} inputs vs PyTorch: " + "; ".join(parts))
        else:
            check = f"verified in its runtime on {self.n_check} inputs: max |diff| vs PyTorch " \
                    f"{self.max_abs_diff:.3g} (logit scale {self.logit_scale:.3g}"
            check += f", bound {self.tolerance:.3g})" if self.tolerance is not None else ")"
            lines.append(check)
        if self.detections is not None:
            agreement = dense.DetectionAgreement(**self.detections)
            lines.append(f"detections on {self.check_source}, from the file's outputs, its stored default boxes and "
                         f"the numpy post-processing, vs PyTorch's: {agreement.summary()}")
        if self.pixel_agreement is not None:
            lines.append(f"argmax on {self.check_source}: {100 * self.pixel_agreement:.4f}% of pixels equal to "
                         f"PyTorch's (bound {100 * dense.MIN_PIXEL_AGREEMENT:g}%)")
        if self.top1_agreement is not None:
            lines.append(f"top-1 agreement with fp32 on {self.eval_source}: {100 * self.top1_agreement:.2f}%")
        if self.accuracy is not None:
            lines.append(f"accuracy on {self.eval_source}: fp32 {100 * self.accuracy_fp32:.2f}%, this artifact "
                         f"{100 * self.accuracy:.2f}% (drop {100 * (self.accuracy_fp32 - self.accuracy):.2f} points)")
        lines += self.notes
        return "\n".join(one_line(line) for line in lines)  # (paths and data names are data: escaped)


# ---------------------------------------------------------------------------------------------- writers


# Every writer takes (model, example input, path, dynamic batch) and, for detectors and segmenters, ``metadata``:
# the JSON document (dense.metadata_document) stored in the file where the format keeps such data.


def _write_onnx(model: nn.Module, x: torch.Tensor, path: str, dynamic: bool, metadata: str | None = None) -> None:
    require("onnx", "onnxscript")
    dyn = ({0: torch.export.Dim("batch", min=1, max=1 << 16)},) if dynamic else None
    torch.onnx.export(model, (x,), path, dynamo=True, input_names=["input"], output_names=dense.output_names(model),
                      dynamic_shapes=dyn, external_data=False, verbose=False)
    if metadata is not None:
        write_metadata(path, "onnx", metadata)


def _write_tflite(model: nn.Module, x: torch.Tensor, path: str, dynamic: bool, metadata: str | None = None) -> None:
    litert_torch = require("tflite", "litert_torch")
    litert_torch.convert(model, (x,)).export(path)
    if metadata is not None:
        write_metadata(path, "tflite", metadata)


def _lower_executorch(model: nn.Module, x: torch.Tensor, dynamic: bool, metadata: str | None = None) -> bytes:
    require("executorch", "executorch")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    dyn = ({0: torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)},) if dynamic else None
    ep = torch.export.export(model, (x,), dynamic_shapes=dyn)
    # the metadata as a constant method (ExecuTorch's place for configuration values: a method with no inputs
    # returning the string, callable from the C++ and Python runtimes)
    constants = {METADATA_METHOD: metadata} if metadata is not None else None
    return to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()],
                                       constant_methods=constants).to_executorch().buffer


def _write_executorch(model: nn.Module, x: torch.Tensor, path: str, dynamic: bool,
                      metadata: str | None = None) -> None:
    Path(path).write_bytes(_lower_executorch(model, x, dynamic, metadata))


def _write_torchscript(model: nn.Module, x: torch.Tensor, path: str, dynamic: bool,
                       metadata: str | None = None) -> None:
    # trace (the models have no data-dependent control flow; Conv2dSame's padding is fixed by H x W),
    # then freeze: weights become constants, which lets TorchScript fold and fuse conv + activation
    # (TorchScript is deprecated upstream in favour of torch.export, but remains the format C++/LibTorch and
    # PyTorch Mobile users load; the warnings say nothing about this file)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        frozen = torch.jit.freeze(torch.jit.trace(model, x, check_trace=False))
        extra = {METADATA_FILE: metadata} if metadata is not None else None
        torch.jit.save(frozen, path, _extra_files=extra)


_WRITERS = {"onnx": _write_onnx, "tflite": _write_tflite, "executorch": _write_executorch,
            "torchscript": _write_torchscript}
# formats whose file takes any batch size (TFLite files from litert-torch have a fixed input shape)
DYNAMIC_BATCH = {"onnx": True, "tflite": False, "executorch": True, "torchscript": True}


# ------------------------------------------------------------------------------------------------ int8


def _int8_onnx(model: nn.Module, x: torch.Tensor, path: str, calib: np.ndarray, dynamic: bool,
               metadata: str | None = None, options: Int8Options = Int8Options()) -> None:
    """onnxruntime post-training static quantization: QDQ format, per-channel int8 weights, uint8
    activations (onnxruntime's recommended x86 settings), calibrated on ``calib`` with ``options``' method
    (MinMax by default). Weights are 7-bit unless ``options.reduce_range`` is False: the same file then
    computes the same function on x86 CPUs with and without VNNI (:mod:`mobilenets.export.quantize`)."""
    require("onnx", "onnxruntime")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib[i:i + 1] for i in range(len(calib)))

        def get_next(self):
            nxt = next(self.it, None)
            return None if nxt is None else {"input": nxt}

    method = options.method("onnx")
    reduce_range = True if options.reduce_range is None else options.reduce_range
    with tempfile.TemporaryDirectory() as d:
        fp32, pre = os.path.join(d, "fp32.onnx"), os.path.join(d, "pre.onnx")
        _write_onnx(model, x, fp32, dynamic)
        quant_pre_process(fp32, pre)  # shape inference + graph optimisation before quantizing
        name_onnx_nodes(fp32, pre)  # node names from the module paths, for nodes_to_exclude
        exclude = onnx_nodes_to_exclude(pre, options.keep_float) if options.keep_float else None
        # the histogram calibrators print their settings: keep them out of the command's output
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(pre, path, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=exclude, calibrate_method=getattr(CalibrationMethod, ORT_METHODS[method]))
    if metadata is not None:
        write_metadata(path, "onnx", metadata)


def calibrate(gm: nn.Module, calib: np.ndarray, *, batch: int) -> None:
    """Run every calibration image through the prepared graph ``gm``, ``batch`` at a time (the last batch may
    be smaller). Skipping a remainder once left a set of fewer than 8 images (the three photos) unobserved:
    the weight observers then held one-element "per-channel" scales, which XNNPACK refused."""
    if len(calib) == 0:
        raise MobileNetsError("no calibration images")
    with torch.no_grad():
        for i in range(0, len(calib), batch):
            gm(torch.from_numpy(calib[i:i + batch]))


def _int8_executorch(model: nn.Module, x: torch.Tensor, path: str, calib: np.ndarray, dynamic: bool,
                     metadata: str | None = None, options: Int8Options = Int8Options()) -> None:
    """PT2E static quantization with ExecuTorch's XNNPACK quantizer (symmetric per-channel int8 weights,
    int8 activations; activation observer per ``options``: MinMaxObserver by default, measured better than the
    quantizer's HistogramObserver, see :data:`~mobilenets.export.quantize.DEFAULT_CALIB`), calibrated on
    ``calib``, then lowered to XNNPACK's quantized kernels. ReLU6 is first written as a clamp
    (:class:`_QuantFriendlyReLU6`); h-swish keeps its own op, which XNNPACK quantizes."""
    require("executorch", "executorch")
    model = _quant_friendly_activations(model, hard_swish=False)
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    config = pt2e_config(get_symmetric_quantization_config, method=options.method("executorch"))
    quantizer = annotate_float_parts(XNNPACKQuantizer().set_global(config), options.keep_float)
    dyn = ({0: torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)},) if dynamic else None
    gm = prepare_pt2e(torch.export.export(model, (x,), dynamic_shapes=dyn).module(), quantizer)
    calibrate(gm, calib, batch=8 if dynamic else 1)
    gm = convert_pt2e(gm)
    Path(path).write_bytes(_lower_executorch(gm, x, dynamic, metadata))


class _QuantFriendlyHardSwish(nn.Module):
    """``x * relu6(x + 3) / 6`` (= ``nn.Hardswish``) written with ops litert-torch's quantizer quantizes
    (add, clamp folded into the add's int8 range, mul). litert-torch emits ``nn.Hardswish`` as an int8
    HARD_SWISH that XNNPACK does not take, which splits the graph into ~20 delegate partitions and made
    int8 slower than fp32 on V3; written this way the whole int8 graph is one XNNPACK partition. The
    constants are 4-D so litert-torch's layout pass keeps these ops in NHWC (0-d constants made it wrap
    each one in two TRANSPOSEs)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("three", torch.full((1, 1, 1, 1), 3.0))
        self.register_buffer("sixth", torch.full((1, 1, 1, 1), 1.0 / 6.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * nn.functional.relu6(x + self.three) * self.sixth


class _QuantFriendlyHardSigmoid(_QuantFriendlyHardSwish):
    """``relu6(x + 3) / 6`` (= ``nn.Hardsigmoid``); see :class:`_QuantFriendlyHardSwish`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.relu6(x + self.three) * self.sixth


class _QuantFriendlyReLU6(nn.Module):
    """``clamp(x, 0, 6)`` (= ``nn.ReLU6``). litert-torch's int8 file of a conv followed by ``nn.ReLU6``
    (``aten.hardtanh``) computes the wrong function: the published MobileNetV2 exported that way kept 0 of 3
    photo top-1s (max |logit diff| 13.5 at logit scale 16.7); with a plain clamp it keeps 3 of 3 (max diff
    0.89) and runs faster (2.49 vs 3.16 ms, 2 threads). ExecuTorch's XNNPACK int8 file has the same fault:
    the published V1 0.25 kept 1 of 3 photo top-1s (max diff 13.7 at logit scale 21.4), 3 of 3 with the
    clamp (max diff 3.67)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, 0.0, 6.0)


def _quant_friendly_activations(model: nn.Module, *, hard_swish: bool = True) -> nn.Module:
    """A copy of ``model`` with every ``nn.ReLU6`` and (``hard_swish``) every ``nn.Hardswish`` /
    ``nn.Hardsigmoid`` in the forms above (the same function)."""
    import copy

    model = copy.deepcopy(model)
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if type(child) is nn.Hardswish and hard_swish:
                setattr(parent, name, _QuantFriendlyHardSwish())
            elif type(child) is nn.Hardsigmoid and hard_swish:
                setattr(parent, name, _QuantFriendlyHardSigmoid())
            elif type(child) is nn.ReLU6:
                setattr(parent, name, _QuantFriendlyReLU6())
    return model


def _observe_residual_inputs(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Route every residual ``add`` through the observer already on its input.

    When a residual sum feeds the next block's residual sum (V2's stages of 3 and 4 blocks, V3's repeated
    rows), ``prepare_pt2e`` gives the first sum an observer for its conv consumer but leaves the second
    ``add`` reading the raw float tensor; the converted file then runs those adds in float32 between
    DEQUANTIZE / QUANTIZE pairs (V2: 9 of 10 adds, 22 extra ops), not the int8 graph the quantizer was
    asked for (integer-only accelerators reject float ops). Reading the observer's output instead
    quantizes the edge with the scale the tensor already has."""
    for node in list(gm.graph.nodes):
        observers = [u for u in node.users
                     if u.op == "call_module" and str(u.target).startswith("activation_post_process")]
        if node.op == "call_module" or len(observers) != 1:
            continue
        for user in list(node.users):
            if user.op == "call_function" and user.target == torch.ops.aten.add.Tensor:
                user.replace_input_with(node, observers[0])
    gm.recompile()
    return gm


def _int8_tflite(model: nn.Module, x: torch.Tensor, path: str, calib: np.ndarray, dynamic: bool,
                 metadata: str | None = None, options: Int8Options = Int8Options()) -> None:
    """litert-torch's PT2E static quantization (symmetric per-channel int8 weights, int8 activations,
    histogram calibration on ``calib``), converted to an int8 TFLite file (int8 input and output, whose
    scale and zero point the LiteRT loader applies) that LiteRT runs on XNNPACK's int8 kernels: V3 files are
    int8 end to end (activation observer per ``options``); V2 keeps its last ReLU6 and the 7x7 global pool in
    float (litert-torch's quantizer leaves a pool whose input is a clamp unannotated). h-swish, hard-sigmoid and ReLU6 are first rewritten into
    quantizable ops (:func:`_quant_friendly_activations`), and residual adds observed
    (:func:`_observe_residual_inputs`)."""
    litert_torch = require("tflite", "litert_torch")
    model = _quant_friendly_activations(model)
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    config = pt2e_config(get_symmetric_quantization_config, method=options.method("tflite"))
    quantizer = annotate_float_parts(PT2EQuantizer().set_global(config), options.keep_float)
    gm = _observe_residual_inputs(prepare_pt2e(torch.export.export(model, (x,)).module(), quantizer))
    calibrate(gm, calib, batch=1)  # litert-torch files have batch 1
    gm = convert_pt2e(gm, fold_quantize=False)  # litert-torch folds the weight quantization itself
    litert_torch.convert(gm, (x,), quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(path)
    if metadata is not None:
        write_metadata(path, "tflite", metadata)


_INT8_WRITERS = {"onnx": _int8_onnx, "tflite": _int8_tflite, "executorch": _int8_executorch}


# ---------------------------------------------------------------------------------------------- export


def _resolve(model_or_ckpt, refresh: bool = False) -> tuple[nn.Module, str, Preprocessing | None, list[str] | None]:
    if isinstance(model_or_ckpt, nn.Module):
        cfg = getattr(model_or_ckpt, "config", None)
        name = getattr(cfg, "name", type(model_or_ckpt).__name__)
        return model_or_ckpt, name, None, None
    from ..weights import model_from_weights

    # any weights file mobilenets reads: our checkpoints, torchvision/timm files, Keras .h5, TFLite
    model, report = model_from_weights(model_or_ckpt, refresh=refresh)
    info = report.info
    names = list(info.class_names) if info.class_names is not None else None
    return model.eval(), info.model, info.preprocessing, names


def default_output(source: str | os.PathLike, format: str, *, int8: bool = False) -> Path:
    """The file an export of ``source`` writes when no path is given: the source's base name (a URL's
    sanitised last path segment, :func:`mobilenets.weights.source.source_name`) with the format's suffix,
    in the current folder; never a path built from the source's folders or URL."""
    from ..weights.source import source_name

    return Path(Path(source_name(source)).stem + ("_int8" if int8 else "") + SUFFIXES[format])


# suffixes that say what a file holds: an export named with another format's (or a weights file's) is refused
_TELLING_SUFFIXES = {*SUFFIXES.values(), ".pth", ".safetensors", ".h5", ".keras"}


def _check_suffix(path: Path, format: str) -> None:
    """``m.tflite`` must not receive ONNX bytes: a suffix naming another format is refused (names the format
    does not claim, ``m.bin``, are left to the caller)."""
    if path.suffix.lower() in _TELLING_SUFFIXES and path.suffix.lower() != SUFFIXES[format]:
        raise MobileNetsError(f"{path}: a {format} export named {path.suffix}, the suffix of another kind of file; "
                              f"name it {path.with_suffix(SUFFIXES[format]).name}")


def _check_options(*, input_size, calib_size, eval_size, min_int8_agreement, num_threads, check_images) -> None:
    def integer(v, lo, hi) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi

    checks = [
        (input_size is None or integer(input_size, 32, MAX_CROP),
         f"input_size must be an integer in [32, {MAX_CROP}], got {input_size!r}"),
        (integer(calib_size, 1, 100_000), f"calib_size must be an integer in [1, 100000], got {calib_size!r}"),
        (eval_size is None or integer(eval_size, 1, 1_000_000),
         f"eval_size must be an integer in [1, 1000000], got {eval_size!r}"),
        (isinstance(min_int8_agreement, (int, float)) and not isinstance(min_int8_agreement, bool)
         and 0 <= min_int8_agreement <= 1, f"min_int8_agreement must be in [0, 1], got {min_int8_agreement!r}"),
        (integer(num_threads, 1, 1024), f"num_threads must be an integer in [1, 1024], got {num_threads!r}"),
        (integer(check_images, 1, 100_000), f"check_images must be an integer in [1, 100000], got {check_images!r}"),
    ]
    for ok, message in checks:
        if not ok:
            raise MobileNetsError(message)


def _torch_logits(model: nn.Module, x: np.ndarray, batch: int = 32) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(x[i:i + batch])).numpy() for i in range(0, len(x), batch)])


def _temp_path(path: Path) -> str:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    return tmp


def _keeps_module_mode(fn):
    """``fn(model_or_ckpt, ...)`` that gives a caller's module back in the train / eval mode it came in (the
    export and its checks run it in eval mode)."""
    @functools.wraps(fn)
    def wrapper(model_or_ckpt, *args, **kwargs):
        mode = model_or_ckpt.training if isinstance(model_or_ckpt, nn.Module) else None
        try:
            return fn(model_or_ckpt, *args, **kwargs)
        finally:
            if mode is not None:
                model_or_ckpt.train(mode)
    return wrapper


@_keeps_module_mode
def export_model(
    model_or_ckpt: nn.Module | str | Path,
    path: str | Path | None = None,
    *,
    format: str,
    int8: bool = False,
    calib: str | Path | None = None,
    eval_data: str | Path | None = None,
    input_size: int | None = None,
    dynamic_batch: bool = True,
    calib_size: int = 200,
    eval_size: int | None = 500,
    min_int8_agreement: float = 0.9,
    num_threads: int = 2,
    refresh: bool = False,
    check_images: int = dense.DEFAULT_CHECK_IMAGES,
    calib_method: str = "auto",
    calib_select: str = "spread",
    keep_float: Sequence[str] = (),
    reduce_range: bool | None = None,
) -> ExportReport:
    """Export a model (an ``nn.Module``, or a weights file: a mobilenets checkpoint or any file
    :func:`mobilenets.model_from_weights` reads) to ``format`` ("onnx",
    "tflite", "executorch", "torchscript") at ``path`` (default: the checkpoint's name with the format's
    suffix, in the current folder: see :func:`default_output`), with batch norm folded into the convolutions,
    and verify the written file in its runtime. Every file carries a metadata document (task, model,
    preprocessing spelled out, class names: :func:`mobilenets.export.dense.metadata_document`;
    :func:`mobilenets.export.read_metadata` reads it), checked after the write like the outputs.

    ``input_size``: the square input side (default: the checkpoint's preprocessing crop; a detector object:
    its configured ``image_size``; else 224).
    ``dynamic_batch``: let the file take any batch size where the format allows (ONNX, ExecuTorch up to
    64, TorchScript). ``int8``: post-training static quantization (ONNX via onnxruntime's QDQ quantizer,
    TFLite via litert-torch's PT2E quantizer, ExecuTorch via the XNNPACK PT2E quantizer), calibrated on
    ``calib_size`` images from ``calib``
    ("digits" or an image folder, see :mod:`mobilenets.export.data`). ``eval_data`` (default: ``calib``;
    labelled folders or "digits" also give accuracies): the images the int8 top-1 agreement is measured on.
    ``refresh``: download a weights URL again even if it is cached.
    int8 options (:mod:`mobilenets.export.quantize`): ``calib_method`` (per format, from
    :data:`~mobilenets.export.quantize.CALIB_METHODS`; "auto": the measured best), ``calib_select``: "spread"
    (evenly over the source) or "random" (a seeded sample) ``calib_size`` images, ``keep_float``: parts left in
    float32 (stem, classifier, se, hswish), ``reduce_range``: ONNX 7-bit weights (None: on; the file then holds
    on x86 CPUs without VNNI).

    Detectors and segmenters (:mod:`mobilenets.export.dense`): the tensor-only ``forward`` is exported (a
    detector's two outputs ``cls_logits``, ``box_regression``), with a metadata document inside the file (task,
    preprocessing, class names; a detector's post-processing configuration and default boxes for the exported
    input size, recomputed for any ``input_size``). They are verified on the first ``check_images`` val images
    of ``eval_data`` (None: the built-in shapes set; else a dataset root the task's loaders read): every output
    within 1e-4 x its scale, and PyTorch's detections (detectors) or per-pixel argmax on >= 99.5% of pixels
    (segmenters) reproduced from the file. int8 is not offered for them.
    Raises :class:`MobileNetsError` when the check fails (the file is then not written).
    """
    t0 = time.perf_counter()
    if format not in FORMATS:
        raise MobileNetsError(f"unknown format {format!r}; choose from {', '.join(FORMATS)}")
    if int8 and format not in INT8_FORMATS:
        raise MobileNetsError(f"int8 export is available for {', '.join(INT8_FORMATS)}, not {format!r}")
    if int8 and calib is None:
        raise MobileNetsError("int8 export needs calibration images: pass calib (an image folder or 'digits')")
    _check_options(input_size=input_size, calib_size=calib_size, eval_size=eval_size,
                   min_int8_agreement=min_int8_agreement, num_threads=num_threads, check_images=check_images)
    if isinstance(keep_float, str):
        keep_float = (keep_float,)
    options = Int8Options(calib_method=calib_method, keep_float=tuple(keep_float), reduce_range=reduce_range)
    if calib_select not in CALIB_SELECTIONS:
        raise MobileNetsError(f"calib_select must be one of {', '.join(CALIB_SELECTIONS)}, got {calib_select!r}")
    if int8:
        options.validate(format)
    elif options != Int8Options():
        raise MobileNetsError("calib_method / keep_float / reduce_range apply to int8 exports only (pass int8=True)")
    if path is None:
        if isinstance(model_or_ckpt, nn.Module):
            raise MobileNetsError("an output path is needed when exporting a model object")
        path = default_output(model_or_ckpt, format, int8=int8)
    path = output_file(path, f"{format} file")
    _check_suffix(path, format)
    source = None if isinstance(model_or_ckpt, nn.Module) else Path(os.fsdecode(model_or_ckpt)).expanduser()
    if source is not None and path.exists() and source.is_file() and os.path.samefile(path, source):
        # (a .pt state dict exported to TorchScript, whose default name is the same .pt)
        raise MobileNetsError(f"{path}: is the weights file being exported; give another output path (-o)")
    model, name, prep, class_names = _resolve(model_or_ckpt, refresh)
    task = dense.task_of(model)
    if task != "classification" and int8:
        # one agreement metric per task and calibration on dense val sets would be needed; not done yet
        raise MobileNetsError(f"int8 export is available for classifiers only, not for the {task} model {name}")
    size = input_size or (prep.crop if prep is not None else None)
    if size is None:
        size = (dense.default_size(model) if task == "detection" else None) or 224
    prep = prep or (IMAGENET if task == "classification" else dense.default_preprocessing(task, size))
    if prep.crop != size:
        prep = prep.with_size(size)
    in_chans = getattr(getattr(model, "config", None), "in_chans", 3)

    try:
        folded = fold_batchnorm(model)
    except ValueError as e:  # a batch norm no convolution feeds (a model object of the caller's)
        raise MobileNetsError(f"{name}: cannot fold its batch norms ({e})") from None
    dynamic = dynamic_batch and DYNAMIC_BATCH[format]
    example = torch.randn(2 if dynamic else 1, in_chans, size, size, generator=torch.Generator().manual_seed(0))

    calib_set = eval_set = None
    # what travels with the file, every task: preprocessing, class names (dense.metadata_document)
    metadata = dense.metadata_document(model, name=name, size=size, prep=prep, class_names=class_names)
    if task != "classification":  # read the val images before writing anything: bad data fails fast
        eval_set = dense.load_val_images(task, eval_data, prep, check_images)
    elif int8:
        calib_set = load_images(calib, preprocessing=prep, role="calib", class_names=class_names, limit=calib_size,
                                select=calib_select)
        eval_set = load_images(eval_data or calib, preprocessing=prep, role="eval", class_names=class_names,
                               limit=eval_size)
    elif eval_data is not None:
        eval_set = load_images(eval_data, preprocessing=prep, role="eval", class_names=class_names, limit=eval_size)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(path)
    try:
        try:
            if int8:
                _INT8_WRITERS[format](folded, example, tmp, calib_set.images, dynamic, metadata=metadata,
                                      options=options)
            else:
                _WRITERS[format](folded, example, tmp, dynamic, metadata=metadata)
        except MobileNetsError:
            raise
        except Exception as e:  # the exporters raise many types; report it in one line
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise MobileNetsError(f"{format} export of {name} failed: {type(e).__name__}: {first}") from e
        if task == "classification":
            report = _verify(model, tmp, format=format, int8=int8, example=example, eval_set=eval_set,
                             min_int8_agreement=min_int8_agreement, num_threads=num_threads, metadata=metadata)
        else:
            report = _verify_dense(model, tmp, format=format, task=task, example=example, val=eval_set, size=size,
                                   metadata=metadata, num_threads=num_threads)
        os.chmod(tmp, file_mode())  # the temp file is 0600 (mkstemp); the export gets open()'s mode
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    report.path, report.model, report.size_bytes = str(path), name, path.stat().st_size
    report.input_shape = (-1 if dynamic else example.shape[0], in_chans, size, size)
    report.seconds = time.perf_counter() - t0
    return report


def _verify(model: nn.Module, tmp: str, *, format: str, int8: bool, example: torch.Tensor,
            eval_set: ImageSet | None, min_int8_agreement: float, num_threads: int,
            metadata: str | None = None) -> ExportReport:
    model = model.eval()
    art = load_artifact(tmp, format, num_threads=num_threads)
    if metadata is not None and art.metadata != json.loads(metadata):
        raise MobileNetsError(f"{format} check failed: the metadata read back from the file is not the one written")
    # random inputs (a batch of 2 where the batch is dynamic: proves a second batch size runs too), plus
    # up to 8 real images
    check = [torch.randn(3, *example.shape[1:], generator=torch.Generator().manual_seed(1)).numpy()]
    if eval_set is not None:
        check.append(eval_set.images[:8])
    xs = np.concatenate(check).astype(np.float32)
    ref, out = _torch_logits(model, xs), art(xs)
    if out.shape != ref.shape or not np.isfinite(out).all():
        raise MobileNetsError(f"{format} check failed: output shape {out.shape} (PyTorch {ref.shape}) or "
                              f"non-finite values")
    # int8: the difference on the real images only (random inputs lie outside the calibrated ranges)
    n_rand = len(check[0]) if int8 and len(xs) > len(check[0]) else 0
    diff, scale = float(np.abs(out - ref)[n_rand:].max()), float(np.abs(ref)[n_rand:].max())
    report = ExportReport(format, tmp, 0, "", (), int8, diff, scale, None, len(xs) - n_rand)
    if not int8:
        report.tolerance = FP32_RTOL * max(scale, 1e-12)
        if diff > report.tolerance:
            raise MobileNetsError(f"{format} check failed: max |diff| vs PyTorch {diff:.3g} exceeds "
                                  f"{FP32_RTOL:g} x logit scale {scale:.3g}")
    if eval_set is not None:
        e_ref, e_out = _torch_logits(model, eval_set.images), art(eval_set.images)
        report.eval_source = f"{eval_set.source} ({len(eval_set.images)} images)"
        report.top1_agreement = float((e_ref.argmax(1) == e_out.argmax(1)).mean())
        if eval_set.labels is not None:
            report.accuracy_fp32 = float((e_ref.argmax(1) == eval_set.labels).mean())
            report.accuracy = float((e_out.argmax(1) == eval_set.labels).mean())
        if int8 and report.top1_agreement < min_int8_agreement:
            raise MobileNetsError(f"int8 {format} check failed: top-1 agreement with fp32 "
                                  f"{100 * report.top1_agreement:.1f}% < {100 * min_int8_agreement:g}% on "
                                  f"{report.eval_source}")
    if art.metadata:
        report.notes.append(_metadata_note(art.metadata, format))
    return report


def _metadata_note(meta: dict, format: str) -> str:
    """One line on what the file's metadata says (the summary's last line)."""
    names = meta.get("class_names")
    inp = meta.get("input", {})
    where = {"onnx": "metadata_props", "tflite": "metadata entry", "executorch": "constant method",
             "torchscript": "extra file"}[format]
    classes = f"{len(names)} class names" if names else "no class names"
    return (f"metadata ('mobilenets' {where}): {classes}; input {inp.get('layout')} {inp.get('channel_order')}, "
            f"{inp.get('resize')}, scaling {inp.get('scaling')}")


def _verify_dense(model: nn.Module, tmp: str, *, format: str, task: str, example: torch.Tensor, val: ImageSet,
                  size: int, metadata: str | None, num_threads: int) -> ExportReport:
    """The checks of a detector's or segmenter's file (see :mod:`mobilenets.export.dense`): 3 random inputs
    (a batch size other than the example's) and the val images, in batches of 8."""
    from ..detection.ssdlite import SSDLite

    model = model.eval()
    art = load_artifact(tmp, format, num_threads=num_threads)
    if metadata is not None and art.metadata != json.loads(metadata):
        raise MobileNetsError(f"{format} check failed: the metadata read back from the file is not the one written")
    rand = torch.randn(3, *example.shape[1:], generator=torch.Generator().manual_seed(1)).numpy()
    xs = np.concatenate([rand, val.images]).astype(np.float32)
    names = dense.output_names(model)
    diffs = dense.OutputDiff(names, format)
    det_ref: list[list[np.ndarray]] = []
    det_out: list[list[np.ndarray]] = []
    equal = pixels = 0
    step = 8
    for start in range(0, len(xs), step):
        x = xs[start:start + step]
        ref = dense.torch_outputs(model, x)
        out = diffs.update(ref, art(x))
        first_val = max(0, len(rand) - start)  # the val images of this batch
        if task == "detection":
            det_ref.append([r[first_val:] for r in ref])
            det_out.append([o[first_val:] for o in out])
        else:
            equal += int((ref[0][first_val:].argmax(1) == out[0][first_val:].argmax(1)).sum())
            pixels += ref[0][first_val:].argmax(1).size
    rows = diffs.rows(FP32_RTOL)
    worst = max(rows, key=lambda r: r["max_abs_diff"] / max(r["scale"], 1e-12))
    report = ExportReport(format, tmp, 0, "", (), False, worst["max_abs_diff"], worst["scale"], worst["bound"],
                          len(xs), task=task, outputs=rows,
                          check_source=f"{val.source} ({len(val.images)} images)")
    if task == "detection" and isinstance(model, SSDLite):
        ref_all = [np.concatenate(parts) for parts in zip(*det_ref)]
        out_all = [np.concatenate(parts) for parts in zip(*det_out)]
        agreement = dense.check_detections(model, art, val.images, ref_all, out_all, size=size, fmt=format)
        report.detections = agreement.to_dict()
    elif task == "detection":
        report.notes.append("not a mobilenets detector: raw outputs checked, no default boxes stored")
    else:
        report.pixel_agreement = equal / max(pixels, 1)
        if report.pixel_agreement < dense.MIN_PIXEL_AGREEMENT:
            raise MobileNetsError(f"{format} check failed: argmax equal to PyTorch's on "
                                  f"{100 * report.pixel_agreement:.3f}% of pixels of {report.check_source}, below "
                                  f"{100 * dense.MIN_PIXEL_AGREEMENT:g}%")
    if art.metadata.get("default_boxes") is not None:
        report.notes.append(f"default boxes: {len(dense.default_boxes_from(art.metadata))} for "
                            f"{size}x{size} inputs, in the file's metadata ('mobilenets')")
    return report
