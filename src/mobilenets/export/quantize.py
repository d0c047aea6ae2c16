"""int8 options shared by the three int8 runtimes: calibration method, float parts, and the ONNX file's
portability to x86 CPUs without VNNI.

**Calibration.** Each runtime's quantizer offers its own range estimators (:data:`CALIB_METHODS`):
onnxruntime's ``CalibrationMethod`` (MinMax, Percentile, Entropy, Distribution) and, for the PT2E quantizers
(ExecuTorch's XNNPACK, litert-torch), the activation observer (``HistogramObserver``, the quantizers' own
default, or ``MinMaxObserver`` / ``MovingAverageMinMaxObserver``). ``"auto"`` takes :data:`DEFAULT_CALIB`,
chosen per runtime by ``benchmarks/int8_robustness.py`` (its JSON holds the figures).

**Mixed precision.** :data:`FLOAT_PARTS` names the parts that can stay in float32 (``keep_float``): the first
conv (``stem``), the classifier (the last 1x1 convs after the global pool and the final linear layer),
squeeze-excite gates (``se``) and h-swish (``hswish``). onnxruntime gets them as ``nodes_to_exclude``
(ONNX node names are made from the PyTorch module path of each node, :func:`name_onnx_nodes`); the PT2E
quantizers as module names / types they leave unannotated.

**No-VNNI x86 CPUs.** onnxruntime multiplies uint8 activations by int8 weights. Without VNNI, its AVX2 kernels
(``vpmaddubsw``) add the products of adjacent pairs of the reduction axis into a *saturating* int16 before
widening to int32: ``255 x 127 x 2 = 64770`` does not fit in 32767, so a file with full 8-bit weights
computes a different function on those CPUs than on VNNI / ARM ones. With 7-bit weights
(``reduce_range=True``, weights in [-64, 64]) every pair sum is at most ``255 x 64 x 2 = 32640``: no
saturation on any CPU. The file is written on one machine and run on others, so the default is
``reduce_range=True`` everywhere (:func:`onnx_weights_fit_int16_pairs` checks a file;
:func:`emulate_u8s8_avx2` runs a file as the AVX2 kernels would, to measure what saturation costs). XNNPACK
(ExecuTorch, LiteRT) runs int8 x int8 with 16-bit widening before its multiply-adds on x86, so it has no such
case.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..errors import MobileNetsError

__all__ = ["Int8Options", "CALIB_METHODS", "DEFAULT_CALIB", "FLOAT_PARTS", "CALIB_SELECTIONS",
           "name_onnx_nodes", "onnx_nodes_to_exclude", "onnx_weights_fit_int16_pairs", "emulate_u8s8_avx2",
           "pt2e_float_filter", "pt2e_config"]

CALIB_METHODS = {
    "onnx": ("minmax", "percentile", "entropy", "distribution"),
    "tflite": ("histogram", "minmax", "moving_average"),
    "executorch": ("histogram", "minmax", "moving_average"),
}
# "auto": per runtime, the method with the best worst-case agreement over the default-job digits checkpoints
# of benchmarks/int8_robustness.py (benchmarks/results/int8_robustness.json). onnxruntime: min/max, percentile
# and entropy tie (min 99.72% over 5 checkpoints), min/max is the cheapest. ExecuTorch: min/max 99.72% minimum
# over 5 checkpoints (100% on 4), the quantizer's default HistogramObserver 98.61%. LiteRT: the quantizer's
# histogram default (min 99.44% over 5; min/max not measured for lack of CPU time).
DEFAULT_CALIB = {"onnx": "minmax", "tflite": "histogram", "executorch": "minmax"}
FLOAT_PARTS = ("stem", "classifier", "se", "hswish")
CALIB_SELECTIONS = ("spread", "random")  # an even spread over the source's order, or a seeded random sample

ORT_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy", "distribution": "Distribution"}
INT16_MAX = 32767  # the saturating int16 sum of two u8 x s8 products (vpmaddubsw)


@dataclass(frozen=True)
class Int8Options:
    """How an int8 file is made. ``calib_method``: one of :data:`CALIB_METHODS` for the format, or "auto"
    (:data:`DEFAULT_CALIB`). ``keep_float``: parts of :data:`FLOAT_PARTS` left in float32.
    ``reduce_range``: ONNX only, 7-bit weights (None: True, see the module docstring)."""

    calib_method: str = "auto"
    keep_float: tuple[str, ...] = ()
    reduce_range: bool | None = None

    def method(self, fmt: str) -> str:
        return DEFAULT_CALIB[fmt] if self.calib_method == "auto" else self.calib_method

    def validate(self, fmt: str) -> None:
        methods = CALIB_METHODS[fmt]
        if self.calib_method != "auto" and self.calib_method not in methods:
            raise MobileNetsError(f"calibration method {self.calib_method!r} is not offered for {fmt}; choose from "
                                  f"auto, {', '.join(methods)}")
        bad = [p for p in self.keep_float if p not in FLOAT_PARTS]
        if bad:
            raise MobileNetsError(f"unknown float part {bad[0]!r}; choose from {', '.join(FLOAT_PARTS)}")
        if self.reduce_range is not None and fmt != "onnx":
            raise MobileNetsError("reduce_range (--full-range-weights) applies to the onnx format only")


# ------------------------------------------------------------------------------- which modules stay float


def _part_of(scopes: Sequence[str], classes: Sequence[str], parts: Sequence[str]) -> bool:
    """Whether a node of module path ``scopes`` (outermost first, e.g. ``['', 'stages', 'stages.0.0.se', ...]``)
    and module classes ``classes`` belongs to one of ``parts``."""
    top = next((s.split(".")[0] for s in scopes if s), "")  # the model's child module the node is in
    return (("stem" in parts and top == "stem")
            or ("classifier" in parts and top in ("head_conv", "head_act", "classifier"))
            or ("se" in parts and any(c.endswith("SqueezeExcite") for c in classes))
            or ("hswish" in parts and any(c.endswith(("Hardswish", "_QuantFriendlyHardSwish")) for c in classes)))


def _list_prop(text: str | None) -> list[str]:
    try:
        value = ast.literal_eval(text) if text else []
    except (ValueError, SyntaxError):
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def name_onnx_nodes(fp32_path: str, pre_path: str) -> None:
    """Rename every node of ``pre_path`` (the pre-processed copy of the exported ``fp32_path``) to
    ``<module path>|<module classes>|<index>``, in place. The pre-processing drops the exporter's per-node
    metadata and splits some nodes (HardSwish into HardSigmoid + Mul) into unnamed ones: a node takes the
    module of the exported node that produced one of its outputs, or else that of the nearest node
    downstream that has one."""
    import onnx

    scope_of: dict[str, tuple[list[str], list[str]]] = {}
    for node in onnx.load(fp32_path).graph.node:
        props = {p.key: p.value for p in node.metadata_props}
        info = (_list_prop(props.get("pkg.torch.onnx.name_scopes")),
                _list_prop(props.get("pkg.torch.onnx.class_hierarchy")))
        for out in node.output:
            scope_of[out] = info
    model = onnx.load(pre_path)
    nodes = list(model.graph.node)
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for t in node.input:
            consumers.setdefault(t, []).append(i)
    resolved: dict[int, tuple[list[str], list[str]]] = {}
    for i in reversed(range(len(nodes))):  # topological order: consumers come later
        info = next((scope_of[o] for o in nodes[i].output if o in scope_of), None)
        if info is None:
            info = next((resolved[j] for o in nodes[i].output for j in consumers.get(o, ()) if j in resolved),
                        ([], []))
        resolved[i] = info
    for i, node in enumerate(nodes):
        scopes, classes = resolved[i]
        node.name = f"{'/'.join(s for s in scopes if s)}|{','.join(c.rsplit('.', 1)[-1] for c in classes)}|{i}"
    onnx.save(model, pre_path)


def onnx_nodes_to_exclude(pre_path: str, parts: Sequence[str]) -> list[str]:
    """The nodes of a file named by :func:`name_onnx_nodes` that belong to ``parts``."""
    import onnx

    names = []
    for node in onnx.load(pre_path).graph.node:
        path, classes, _ = (node.name.split("|") + ["", "", ""])[:3]
        scopes = [""] + path.split("/") if path else [""]
        if _part_of(scopes, classes.split(","), parts):
            names.append(node.name)
    return names


def pt2e_float_filter(parts: Sequence[str]):
    """A predicate on the nodes of an exported graph: True for the nodes of ``parts`` (from each node's
    ``nn_module_stack``), which the quantizer is then told to leave in float."""

    def in_parts(node: torch.fx.Node) -> bool:
        stack = node.meta.get("nn_module_stack") or {}
        scopes = [path for path, _ in stack.values()]
        classes = [cls if isinstance(cls, str) else getattr(cls, "__qualname__", str(cls))
                   for _, cls in stack.values()]
        return _part_of(scopes, classes, parts)

    return in_parts


def pt2e_config(get_config, *, method: str, is_qat: bool = False):
    """The quantizer's symmetric per-channel config (``get_config``: the quantizer module's
    ``get_symmetric_quantization_config``) with the activation observer ``method`` in place of its
    HistogramObserver."""
    import dataclasses

    from torchao.quantization.pt2e.observer import HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver

    config = get_config(is_per_channel=True, is_qat=is_qat)
    if is_qat or method == "histogram":
        return config
    observer = {"minmax": MinMaxObserver, "moving_average": MovingAverageMinMaxObserver,
                "histogram": HistogramObserver}[method]
    act = config.input_activation
    act = dataclasses.replace(act, observer_or_fake_quant_ctr=observer.with_args(eps=2 ** -12))
    return dataclasses.replace(config, input_activation=act, output_activation=act)


def annotate_float_parts(quantizer, parts: Sequence[str]):
    """Wrap ``quantizer.annotate`` so that the nodes of ``parts`` end without a quantization annotation:
    the quantizer annotates as usual, then the annotations of those nodes are dropped, and the edges into
    and out of them stay float."""
    if not parts:
        return quantizer
    inside = pt2e_float_filter(parts)
    annotate = quantizer.annotate

    def annotate_all_but(model: torch.fx.GraphModule) -> torch.fx.GraphModule:
        model = annotate(model)
        for node in model.graph.nodes:
            if inside(node):
                node.meta.pop("quantization_annotation", None)
        # a node outside whose input spec shares a dropped node's observer would point at nothing: drop those
        # inputs from its annotation too (they are then float edges)
        from torchao.quantization.pt2e.quantizer import SharedQuantizationSpec

        for node in model.graph.nodes:
            ann = node.meta.get("quantization_annotation")
            if ann is None:
                continue
            for arg in list(ann.input_qspec_map):
                spec = ann.input_qspec_map[arg]
                if inside(arg) and isinstance(spec, SharedQuantizationSpec):
                    del ann.input_qspec_map[arg]
            out = ann.output_qspec
            if isinstance(out, SharedQuantizationSpec):
                edge = out.edge_or_node
                src = edge[0] if isinstance(edge, tuple) else edge
                if inside(src):
                    ann.output_qspec = None
        return model

    quantizer.annotate = annotate_all_but
    return quantizer


# --------------------------------------------------------------------------- ONNX on x86 CPUs without VNNI


def _initializers(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _quantized_weights(path: str):
    """(node, int weight, weight scale, input DequantizeLinear node) of every Conv / Gemm / MatMul of a QDQ file
    whose activation and weight inputs are dequantized int8 tensors: the ops onnxruntime runs as
    QLinearConv / QGemm with 8-bit integer products."""
    import onnx

    model = onnx.load(path)
    inits = _initializers(model)
    producer = {o: n for n in model.graph.node for o in n.output}
    rows = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        x_dq, w_dq = producer.get(node.input[0]), producer.get(node.input[1])
        if not (x_dq is not None and w_dq is not None and x_dq.op_type == w_dq.op_type == "DequantizeLinear"):
            continue
        if w_dq.input[0] not in inits:
            continue
        rows.append((node, inits[w_dq.input[0]], x_dq, w_dq))
    return model, inits, rows


def _group(node) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


def onnx_weights_fit_int16_pairs(path: str) -> tuple[int, int]:
    """(largest |int8 weight| of the file's integer convs / GEMMs other than depthwise convs, how many such
    ops). At most 64 (7-bit weights): every adjacent pair of uint8 x int8 products fits the int16 that
    onnxruntime's AVX2 kernels add them in (255 x 64 x 2 = 32640 <= 32767), so the file computes the same on
    CPUs with and without VNNI."""
    _, _, rows = _quantized_weights(path)
    largest, count = 0, 0
    for node, w, _, _ in rows:
        if node.op_type == "Conv" and _group(node) > 1:  # depthwise: 16-bit widened, no pair sums
            continue
        largest, count = max(largest, int(np.abs(w.astype(np.int32)).max())), count + 1
    return largest, count


def emulate_u8s8_avx2(path: str, images: np.ndarray, *, saturate: bool = True) -> np.ndarray:
    """The logits of the QDQ file ``path`` on ``images`` as onnxruntime computes them on an x86 CPU with AVX2
    but no VNNI: the integer convs and GEMMs add each adjacent pair (along the reduction axis, in the NHWC
    (kernel row, kernel column, channel) order of its QLinearConv) of uint8 x int8 products in a saturating
    int16, then the pairs in int32 (``vpmaddubsw`` + ``vpmaddwd``), and the zero-point correction is exact;
    depthwise convs widen to 16 bits first (no pair sums). ``saturate=False`` gives the exact integer
    result (what a VNNI CPU computes), so the two runs differ only by the saturation. Every other op runs in
    ``onnx.reference``. Slow (pure PyTorch integer arithmetic); meant for measurement."""
    import onnx
    from onnx import helper
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import OpRun

    model, inits, rows = _quantized_weights(path)
    unsupported = {r[0].op_type for r in rows} - {"Conv", "Gemm"}
    if unsupported:
        raise MobileNetsError(f"emulation of {sorted(unsupported)} is not implemented")
    domain = "mobilenets.emulate"
    for node, _, x_dq, w_dq in rows:
        kind = node.op_type
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        bias = node.input[2] if len(node.input) > 2 else ""
        x_zp = x_dq.input[2] if len(x_dq.input) > 2 else ""
        new = helper.make_node(f"Emu{kind}", [node.input[0], x_dq.input[1], x_zp, w_dq.input[0], w_dq.input[1], bias],
                               list(node.output), domain=domain, name=node.name)
        new.attribute.extend(helper.make_attribute(k, v) for k, v in attrs.items())
        new.attribute.append(helper.make_attribute("saturate", int(saturate)))
        node.CopyFrom(new)
    model.opset_import.append(helper.make_opsetid(domain, 1))

    def pair_sums(xq: torch.Tensor, wq: torch.Tensor, sat: bool) -> torch.Tensor:
        """xq (N, K, L) uint8 values, wq (O, K) int8 values (int32 tensors) -> (N, O, L) sum over K of the
        int16-saturated adjacent pair sums."""
        n, k, L = xq.shape
        if k % 2:
            xq, wq = torch.nn.functional.pad(xq, (0, 0, 0, 1)), torch.nn.functional.pad(wq, (0, 1))
        acc = torch.zeros(n, wq.shape[0], L, dtype=torch.int32)
        for p in range(0, xq.shape[1], 2):
            s = xq[:, p, None, :] * wq[None, :, p, None] + xq[:, p + 1, None, :] * wq[None, :, p + 1, None]
            acc += s.clamp(-32768, INT16_MAX) if sat else s
        return acc

    def unquantize(x: np.ndarray, scale, zp) -> torch.Tensor:
        zp = 0 if zp is None else int(np.asarray(zp).reshape(-1)[0])
        return torch.from_numpy(np.round(x / np.float32(scale)).astype(np.int32) + zp), zp

    class EmuConv(OpRun):
        op_domain = domain

        def _run(self, x, xs, xzp, wq, ws, b=None, group=1, pads=None, strides=None, dilations=None,
                 kernel_shape=None, auto_pad=None, saturate=1):
            xq, zp = unquantize(x, xs, xzp)
            w = torch.from_numpy(wq.astype(np.int32))
            o, cin_g, kh, kw = w.shape
            pads = list(pads or [0, 0, 0, 0])
            strides, dilations = list(strides or [1, 1]), list(dilations or [1, 1])
            xp = torch.nn.functional.pad(xq, (pads[1], pads[3], pads[0], pads[2]), value=zp)
            if group > 1:  # depthwise: exact
                acc = torch.nn.functional.conv2d(xp.double(), w.double(), stride=strides, dilation=dilations,
                                                 groups=group).round().to(torch.int64)
            else:
                cols = torch.nn.functional.unfold(xp.float(), (kh, kw), dilation=dilations, stride=strides)
                n, _, L = cols.shape
                cols = cols.round().to(torch.int32).view(n, cin_g, kh * kw, L).transpose(1, 2).reshape(n, -1, L)
                wk = w.view(o, cin_g, kh * kw).transpose(1, 2).reshape(o, -1)  # (kh, kw, c) order
                acc = pair_sums(cols, wk, bool(saturate)).to(torch.int64)
                h_out = (xp.shape[2] - dilations[0] * (kh - 1) - 1) // strides[0] + 1
                acc = acc.view(n, o, h_out, -1)
            wsum = w.view(o, -1).sum(1).to(torch.int64)
            acc = acc - zp * wsum.view(1, o, 1, 1)
            y = acc.double() * float(np.asarray(xs)) * torch.from_numpy(np.asarray(ws, np.float64)).view(1, -1, 1, 1)
            if b is not None:
                y = y + torch.from_numpy(np.asarray(b, np.float64)).view(1, -1, 1, 1)
            return (y.float().numpy(),)

    class EmuGemm(OpRun):
        op_domain = domain

        def _run(self, x, xs, xzp, wq, ws, b=None, alpha=1.0, beta=1.0, transA=0, transB=0, saturate=1):
            xq, zp = unquantize(x, xs, xzp)
            w = torch.from_numpy(wq.astype(np.int32))
            w = w if transB else w.t()  # (O, K)
            acc = pair_sums(xq.unsqueeze(-1), w.contiguous(), bool(saturate)).squeeze(-1).to(torch.int64)
            acc = acc - zp * w.sum(1).to(torch.int64).view(1, -1)
            scale = torch.from_numpy(np.asarray(ws, np.float64)).view(1, -1)
            y = alpha * acc.double() * float(np.asarray(xs)) * scale
            if b is not None:
                y = y + beta * torch.from_numpy(np.asarray(b, np.float64)).view(1, -1)
            return (y.float().numpy(),)

    sess = ReferenceEvaluator(model, new_ops=[EmuConv, EmuGemm])
    name = model.graph.input[0].name
    outs = [sess.run(None, {name: images[i:i + 16].astype(np.float32)})[0] for i in range(0, len(images), 16)]
    return np.concatenate(outs)
