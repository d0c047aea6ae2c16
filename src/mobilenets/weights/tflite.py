"""TFLite flatbuffers, float or uint8/int8 quantized, read through the LiteRT runtime (``ai-edge-litert``).

A TFLite graph keeps no layer names worth trusting (TOCO, MLIR and Keras conversions all differ), but its
weighted ops run in the network's order, which is our modules' order. The table is therefore by position,
one row per kind of weighted layer (checked kind by kind and shape by shape, never assumed):

=========================  =========================  ===========================================
TFLite op (in graph order)  our module                 layout
=========================  =========================  ===========================================
CONV_2D                     Conv2d (+ the BN after it)  OHWI -> permute(0, 3, 1, 2)
DEPTHWISE_CONV_2D           depthwise Conv2d (+ BN)     (1, kh, kw, C) -> permute(3, 0, 1, 2)
CONV_2D 1x1 (the last)      classifier (Linear)         (out, 1, 1, in) -> (out, in)
FULLY_CONNECTED             classifier (Linear)         (out, in)
=========================  =========================  ===========================================

Batch norm is folded into the conv weight and bias, so a conv followed by BN gets the folded weight and its
BN becomes identity-plus-bias: gamma 1, beta = the folded bias, mean 0, var 1 - eps (set for the target
model's eps at load time). Quantized tensors are dequantized, w = scale * (q - zero_point), per tensor or
per channel (``quantized_dimension``); float16 weights behind a DEQUANTIZE op are read from its input.

Activations are taken from the architecture, not the file: TOCO's uint8 V3 graphs record no fused
activations at all (the clamps live only in the quantization ranges; see PROVENANCE.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import MobileNetsError
from .layout import meta_model
from .layout import weighted_modules as _weighted_modules

__all__ = ["TFLiteGraph", "read_tflite", "to_canonical", "infer_name"]

WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
_RANK = {"CONV_2D": 4, "DEPTHWISE_CONV_2D": 4, "FULLY_CONNECTED": 2}
_LAYOUT = {
    "CONV_2D": lambda w: w.permute(0, 3, 1, 2),
    "DEPTHWISE_CONV_2D": lambda w: w.permute(3, 0, 1, 2),
    "FULLY_CONNECTED": lambda w: w,
}


@dataclass
class TFLiteLayer:
    op: str
    weight: torch.Tensor  # torch layout, dequantized float32
    bias: torch.Tensor | None


@dataclass
class TFLiteGraph:
    layers: list[TFLiteLayer]
    input_quantization: tuple[float, int]  # (scale, zero point); (0.0, 0) for a float input


def _dequantize(value: np.ndarray, detail: dict) -> np.ndarray:
    q = detail.get("quantization_parameters") or {}
    scales, zeros = q.get("scales", np.zeros(0)), q.get("zero_points", np.zeros(0))
    if value.dtype.kind not in "fiu":
        raise MobileNetsError(f"tensor {detail.get('name', '?')!r} has dtype {value.dtype}, not a number type")
    if value.dtype.kind == "f" or len(scales) == 0:
        return value.astype(np.float32)
    shape = [1] * value.ndim
    if len(scales) > 1:  # per-channel
        dim = q.get("quantized_dimension", 0)
        if not 0 <= dim < value.ndim or value.shape[dim] != len(scales):
            raise MobileNetsError(f"tensor {detail.get('name', '?')!r}: {len(scales)} quantization scales do not "
                                  f"match its shape {value.shape} (dimension {dim})")
        shape[dim] = len(scales)
    if len(zeros) not in (1, len(scales)):
        raise MobileNetsError(f"tensor {detail.get('name', '?')!r}: {len(zeros)} zero points for {len(scales)} "
                              "scales")
    return ((value.astype(np.float32) - zeros.reshape(shape if len(zeros) > 1 else [1] * value.ndim)
             .astype(np.float32)) * scales.reshape(shape))


def check_structure(path: Path) -> None:
    """Refuse a TFLite flatbuffer the LiteRT interpreter would crash on: it trusts the file's structure, and a
    model without a subgraph took the whole process down (a segmentation fault, no message). Needs at least one
    subgraph with inputs and outputs, and every tensor's buffer, operator's opcode and tensor index in range;
    read with the schema's pure-Python accessors, whose out-of-range reads raise instead of crashing."""
    import struct

    from ai_edge_litert import schema_py_generated as schema

    def ints(vector) -> np.ndarray:  # an absent vector reads as 0
        return vector if isinstance(vector, np.ndarray) else np.zeros(0, dtype=np.int64)

    def refuse(why: str):
        raise MobileNetsError(f"not a readable TFLite model ({why})")

    try:
        model = schema.Model.GetRootAs(path.read_bytes(), 0)
        buffers, codes = model.BuffersLength(), model.OperatorCodesLength()
        if model.SubgraphsLength() < 1:
            refuse("no subgraph")
        for g in range(model.SubgraphsLength()):
            graph = model.Subgraphs(g)
            tensors = graph.TensorsLength()
            ends = [ints(graph.InputsAsNumpy()), ints(graph.OutputsAsNumpy())]
            if g == 0 and (not len(ends[0]) or not len(ends[1])):
                refuse("its main subgraph has no inputs or no outputs")
            if any(((v < 0) | (v >= tensors)).any() for v in ends):
                refuse(f"subgraph {g}: an input or output index outside its {tensors} tensors")
            if any(not 0 <= graph.Tensors(t).Buffer() < max(buffers, 1) for t in range(tensors)):
                refuse(f"subgraph {g}: a tensor names a buffer outside the file's {buffers}")
            for o in range(graph.OperatorsLength()):
                op = graph.Operators(o)
                if not 0 <= op.OpcodeIndex() < codes:
                    refuse(f"subgraph {g}, operator {o}: an opcode index outside the file's {codes}")
                for v in (ints(op.InputsAsNumpy()), ints(op.OutputsAsNumpy())):
                    if ((v < -1) | (v >= tensors)).any():  # -1: an optional input left out
                        refuse(f"subgraph {g}, operator {o}: a tensor index outside its {tensors} tensors")
    except (struct.error, IndexError, TypeError, ValueError, AttributeError, OverflowError) as e:
        refuse(f"{type(e).__name__}: {str(e)[:120]}")


def read_tflite(path: Path) -> TFLiteGraph:
    """The weighted layers of a TFLite model, in graph order, dequantized to float32 torch tensors."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise MobileNetsError("reading .tflite files needs the LiteRT runtime: "
                              "pip install 'mobilenets[tflite]'") from None
    check_structure(path)
    try:
        interp = Interpreter(model_path=str(path))
        ops = interp._get_ops_details()  # the op graph (LiteRT exposes it only under this name)
        details = {t["index"]: t for t in interp.get_tensor_details()}
        producer = {int(o): op for op in ops for o in op["outputs"]}

        def constant(index: int) -> np.ndarray:
            src = producer.get(index)
            if src is not None and src["op_name"] == "DEQUANTIZE":  # float16 / hybrid weights
                index = int(src["inputs"][0])
            return _dequantize(interp.get_tensor(index), details[index])

        layers = []
        for op in ops:
            if op["op_name"] not in WEIGHTED_OPS:
                continue
            if len(op["inputs"]) < 2:
                raise MobileNetsError(f"a {op['op_name']} op without weights")
            w_idx, b_idx = int(op["inputs"][1]), (int(op["inputs"][2]) if len(op["inputs"]) > 2 else -1)
            w = constant(w_idx)
            if w.ndim != _RANK[op["op_name"]]:
                raise MobileNetsError(f"a {op['op_name']} op whose weights have shape {w.shape}, not rank "
                                      f"{_RANK[op['op_name']]}")
            weight = _LAYOUT[op["op_name"]](torch.from_numpy(w)).contiguous()
            bias = torch.from_numpy(constant(b_idx)) if b_idx >= 0 else None
            if bias is not None and tuple(bias.shape) != (weight.shape[0],):
                raise MobileNetsError(f"a {op['op_name']} op whose bias has shape {tuple(bias.shape)}, not "
                                      f"({weight.shape[0]},)")
            layers.append(TFLiteLayer(op["op_name"], weight, bias))
        inp = interp.get_input_details()[0]
    except (ValueError, RuntimeError, KeyError, IndexError, TypeError) as e:
        first = str(e).strip().split("\n")[0]
        raise MobileNetsError(f"not a readable TFLite model ({first[:160] or type(e).__name__})") from None
    return TFLiteGraph(layers, tuple(inp.get("quantization", (0.0, 0))))


def _kind(m: nn.Module) -> tuple[str, int]:
    if isinstance(m, nn.Linear):
        return "linear", 1
    dw = m.groups > 1 and m.groups == m.in_channels
    return ("dw" if dw else "conv"), m.kernel_size[0]


def _graph_kind(layer: TFLiteLayer, is_last: bool) -> tuple[str, int]:
    if layer.op == "FULLY_CONNECTED" or (is_last and layer.weight.shape[-1] == 1 and layer.op == "CONV_2D"):
        return "linear", 1
    return ("dw" if layer.op == "DEPTHWISE_CONV_2D" else "conv"), layer.weight.shape[-1]


def infer_name(graph: TFLiteGraph) -> str:
    """The registered model whose layer kinds and kernel sizes, in order, are the graph's."""
    from ..registry import list_models

    kinds = [_graph_kind(l, i == len(graph.layers) - 1) for i, l in enumerate(graph.layers)]
    classes = graph.layers[-1].weight.shape[0] if graph.layers else 1000
    for name in list_models():
        if [_kind(m) for _, m, _ in _weighted_modules(meta_model(name, classes))] == kinds:
            return name
    raise MobileNetsError(f"the TFLite graph's {len(kinds)} weighted layers match no registered MobileNet")


def to_canonical(graph: TFLiteGraph, name: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(canonical tensors, canonical prefixes of the batch norms that hold folded biases)."""
    from .layout import to_canonical as canon

    classes = graph.layers[-1].weight.shape[0] if graph.layers else 1000
    template = meta_model(name, classes)
    mods = _weighted_modules(template)
    if len(mods) != len(graph.layers):
        raise MobileNetsError(f"the TFLite graph has {len(graph.layers)} weighted layers, {name} has {len(mods)}")
    state: dict[str, torch.Tensor] = {}
    folded = []
    for (mod_name, m, bn), layer in zip(mods, graph.layers):
        w = layer.weight.reshape(layer.weight.shape[0], -1) if isinstance(m, nn.Linear) else layer.weight
        bias = layer.bias if layer.bias is not None else torch.zeros(w.shape[0])
        state[f"{mod_name}.weight"] = w
        if bn is None:
            state[f"{mod_name}.bias"] = bias
        else:
            ones = torch.ones(w.shape[0])
            state.update({f"{bn}.weight": ones, f"{bn}.bias": bias, f"{bn}.running_mean": torch.zeros_like(ones),
                          f"{bn}.running_var": ones.clone()})  # set to 1 - eps at load time
            folded.append(bn)
    canonical = canon(state, template)
    folded_canonical = [k[: -len(".weight")] for k in canon({f"{b}.weight": None for b in folded}, template)]
    return canonical, folded_canonical
