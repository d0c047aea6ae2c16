"""TF DeepLab's DeepLabv3-MobileNetV2 TFLite graphs (e.g. ``deeplabv3_mnv2_pascal_quant.tflite``) -> our float
``deeplabv3_mobilenet_v2``.

The graph (read op by op; tensor names as TF DeepLab's scopes left them):

==================================  =========================================  ==============================
TFLite ops                          TF scope                                   ours
==================================  =========================================  ==============================
CONV_2D / DEPTHWISE_CONV_2D ...     ``MobilenetV2/Conv``, ``expanded_conv*``   ``backbone`` (positional, as
                                                                               weights/tflite.py)
AVERAGE_POOL_2D (or MEAN) -> CONV   ``image_pooling``                          ``head.image_pooling``
CONV_2D 1x1 on the backbone output  ``aspp0``                                  ``head.aspp0``
CONCATENATION -> CONV_2D 1x1        ``concat_projection``                      ``head.concat_projection``
CONV_2D 1x1 after it                ``logits/semantic``                        ``classifier``
RESIZE_BILINEAR, ARG_MAX            (upsampling, ``predict_labels``)            ``forward``'s resize / argmax
==================================  =========================================  ==============================

Roles are found from the graph's connections (which op feeds which), never from the order of the weighted
ops alone: the file runs ``aspp0`` before ``image_pooling``, while the concatenation (and our module order)
puts the image-pooling branch first. Batch norm is folded into the conv weights (TOCO's ``*_Fold``); the BN
after each conv becomes identity-plus-bias (gamma 1, beta = bias, mean 0, var = 1 - eps). Strides, dilations
(TF-slim style: ``expanded_conv_13`` keeps rate 1, 14-16 get rate 2 at output stride 16) and the resizes'
``align_corners`` are checked against our model from the ops' options.

What the file says about its input (:class:`DeepLabTFLiteInfo`): a fixed 513x513x3 uint8 tensor quantised
with scale 1/128 and zero point 128, so the float network sees ``(q - 128) / 128`` (the TF DeepLab
``(2 / 255) x - 1`` up to 0.4%). Its publishers (google-coral pycoral ``tests/segment_test.py``, the C++
``ModelCorrectnessTest``) feed ``Image.open(f).resize(input_size, Image.ANTIALIAS)``: the whole image
stretched to 513x513 with PIL's antialiasing (Lanczos) filter, no aspect-preserving padding; the output is the
``ArgMax`` class-id map at 513x513.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import MobileNetsError, existing_file
from .layout import weighted_modules
from .tflite import WEIGHTED_OPS, TFLiteGraph, read_tflite
from .validate import check_values

__all__ = ["DeepLabTFLiteInfo", "is_deeplab_tflite", "deeplab_from_tflite", "TF_BN_EPS"]

TF_BN_EPS = 1e-3  # TF-slim MobileNetV2 batch norm (the folded BNs become identity for any eps)
_PASS_THROUGH = ("RESIZE_BILINEAR", "QUANTIZE", "DEQUANTIZE", "RESHAPE")  # ops between a branch and the concat
_POOLS = ("AVERAGE_POOL_2D", "MEAN")


@dataclass(frozen=True)
class DeepLabTFLiteInfo:
    """What a DeepLab TFLite file holds and expects.

    ``input_size`` (H, W) is the graph's fixed input; ``input_quantization`` (scale, zero point) of its uint8
    input, so the float model's input is ``(q - zero_point) * scale`` for uint8 pixels q, i.e.
    ``(x - mean) / std`` for pixels x scaled to [0, 1]. ``resize``: how the publishers fit an image to the
    input ("stretch": resized to exactly ``input_size`` with PIL's antialiasing filter; see the module
    docstring); :meth:`preprocess` does exactly that. ``scopes``: the TF scope of every head layer as found
    in the tensor names (role -> name)."""

    source: str
    width: float
    num_classes: int
    output_stride: int
    input_size: tuple[int, int]
    input_quantization: tuple[float, float]
    align_corners: bool
    output: str  # "argmax" (class ids) or "logits"
    resize: str = "stretch"
    scopes: dict[str, str] = field(default_factory=dict, repr=False, hash=False)

    @property
    def mean(self) -> tuple[float, float, float]:
        return (self.input_quantization[1] / 255.0,) * 3

    @property
    def std(self) -> tuple[float, float, float]:
        return (1.0 / (255.0 * self.input_quantization[0]),) * 3

    def preprocess(self, image) -> torch.Tensor:
        """An image (PIL image or path) -> the float input (1, 3, H, W) the imported model expects: RGB,
        resized to ``input_size`` with ``Image.LANCZOS`` (PIL's ANTIALIAS) unless already that size, then
        ``(q - zero_point) * scale``: what the uint8 TFLite graph computes from the same pixels."""
        from PIL import Image

        from ..data import to_rgb

        if not isinstance(image, Image.Image):
            image = Image.open(existing_file(image, "an image"))
        image = to_rgb(image)
        h, w = self.input_size
        if image.size != (w, h):
            image = image.resize((w, h), Image.LANCZOS)
        q = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)[None].float()
        scale, zero = self.input_quantization
        return (q - zero) * scale


def _kind(layer) -> tuple[str, int, int]:
    """(op, out channels, kernel) of a TFLiteGraph layer (weights in torch layout)."""
    return layer.op, layer.weight.shape[0], layer.weight.shape[-1]


def is_deeplab_tflite(graph: TFLiteGraph) -> bool:
    """Whether ``graph`` (:func:`~mobilenets.weights.tflite.read_tflite`) ends in DeepLabv3's head without
    atrous branches: two 1x1 convs of 256 on the backbone's C channels (image pooling, aspp0), a 1x1 512 ->
    256 projection and 1x1 256 -> classes logits, after a backbone whose last conv outputs C channels."""
    layers = graph.layers
    if len(layers) < 6 or any(l.op != "CONV_2D" or l.weight.shape[-2:] != (1, 1) for l in layers[-4:]):
        return False
    a, b, proj, logits = (tuple(l.weight.shape[:2]) for l in layers[-4:])
    backbone_out = layers[-5].weight.shape[0]
    return (a == b == (256, backbone_out) and proj == (256, 512) and logits[1] == 256
            and layers[-5].op == "CONV_2D")


@dataclass
class _Op:
    index: int
    name: str
    inputs: list[int]
    outputs: list[int]
    options: object | None


def _read_ops(path: Path) -> tuple[list[_Op], dict[int, dict], list[dict]]:
    """The graph's ops (with their builtin options, from the flatbuffer schema), tensor details and input
    details."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter

    try:
        interp = Interpreter(model_path=str(path))
        details = {t["index"]: t for t in interp.get_tensor_details()}
        op_details = interp._get_ops_details()  # the op graph (LiteRT exposes it only under this name)
        inputs = interp.get_input_details()
        subgraph = schema.Model.GetRootAsModel(path.read_bytes(), 0).Subgraphs(0)
        options = [schema.BuiltinOptionsCreator(subgraph.Operators(i).BuiltinOptionsType(),
                                                subgraph.Operators(i).BuiltinOptions())
                   for i in range(subgraph.OperatorsLength())]
    except (ValueError, RuntimeError) as e:
        raise MobileNetsError(f"{path}: not a readable TFLite model ({str(e).splitlines()[0]})") from None
    if len(options) != len(op_details):
        raise MobileNetsError(f"{path}: {len(op_details)} ops in the interpreter, {len(options)} in the file's "
                              "first subgraph")
    ops = [_Op(int(d["index"]), d["op_name"], [int(i) for i in d["inputs"]], [int(o) for o in d["outputs"]], o)
           for d, o in zip(op_details, options)]
    return ops, details, inputs


def deeplab_from_tflite(path) -> tuple[nn.Module, DeepLabTFLiteInfo]:
    """Our float ``deeplabv3_mobilenet_v2`` (eval mode) with the weights of a TF DeepLab DeepLabv3-MobileNetV2
    TFLite file (uint8-quantised weights dequantised), and what the file expects (:class:`DeepLabTFLiteInfo`).

    Raises :class:`MobileNetsError` when the file is not such a graph or does not fit the model layer by
    layer (kinds, shapes, strides, dilations)."""
    from ..segmentation.deeplabv3 import deeplabv3_mobilenet_v2

    path = existing_file(path, "a TFLite file")
    label = str(path)
    graph = read_tflite(path)
    if not is_deeplab_tflite(graph):
        raise MobileNetsError(f"{label}: not a DeepLabv3-MobileNetV2 TFLite graph without atrous branches "
                              f"(its last weighted layers: {[tuple(l.weight.shape) for l in graph.layers[-4:]]})")
    ops, details, inputs = _read_ops(path)
    weighted = [op for op in ops if op.name in WEIGHTED_OPS]
    if len(weighted) != len(graph.layers):
        raise MobileNetsError(f"{label}: {len(weighted)} weighted ops, {len(graph.layers)} weighted layers")
    position = {op.index: i for i, op in enumerate(weighted)}
    producer = {t: op for op in ops for t in op.outputs}
    consumers: dict[int, list[_Op]] = {}
    for op in ops:
        for t in op.inputs:
            consumers.setdefault(t, []).append(op)

    def source(tensor: int) -> _Op | None:
        """The weighted op a tensor comes from, through resizes / (de)quantisation."""
        op = producer.get(tensor)
        while op is not None and op.name in _PASS_THROUGH:
            op = producer.get(op.inputs[0])
        return op

    # Roles from the connections.
    pools = [op for op in ops if op.name in _POOLS]
    concat = [op for op in ops if op.name == "CONCATENATION"]
    if len(pools) != 1 or len(concat) != 1:
        raise MobileNetsError(f"{label}: expected one pooling op and one concatenation in the DeepLab head, found "
                              f"{len(pools)} and {len(concat)}")
    features = pools[0].inputs[0]  # the backbone's output, which the pool and aspp0 read
    image_pooling = next((op for op in consumers.get(pools[0].outputs[0], []) if op.name == "CONV_2D"), None)
    aspp0 = [op for op in consumers.get(features, []) if op.name == "CONV_2D"]
    branch_order = [source(t) for t in concat[0].inputs]
    projection = next((op for op in consumers.get(concat[0].outputs[0], []) if op.name == "CONV_2D"), None)
    logits = next((op for op in consumers.get(projection.outputs[0], []) if op.name == "CONV_2D"), None) \
        if projection else None
    if image_pooling is None or len(aspp0) != 1 or projection is None or logits is None or \
            {id(op) for op in branch_order} != {id(image_pooling), id(aspp0[0])}:
        raise MobileNetsError(f"{label}: the head is not image pooling + one 1x1 branch, concatenated, projected "
                              "and classified (DeepLabv3 without atrous branches)")
    aspp0 = aspp0[0]
    head_roles = {"image_pooling": image_pooling, "aspp0": aspp0, "concat_projection": projection,
                  "logits": logits}
    backbone_ops = [op for op in weighted if op.index not in {o.index for o in head_roles.values()}]
    if [position[op.index] for op in backbone_ops] != list(range(len(backbone_ops))):
        raise MobileNetsError(f"{label}: the head's layers are interleaved with the backbone's")

    # Geometry: input size, output stride (backbone map vs input), resize mode, output kind.
    inp = inputs[0]
    _, in_h, in_w, _ = (int(v) for v in inp["shape"])
    feat_h = int(details[features]["shape"][1])
    strides = [s for s in (8, 16) if -(-in_h // s) == feat_h]
    if not strides:
        raise MobileNetsError(f"{label}: backbone map {feat_h} rows for {in_h} input rows: output stride not 8 / 16")
    resizes = [op.options for op in ops if op.name == "RESIZE_BILINEAR"]
    align = {bool(o.alignCorners) for o in resizes}
    if len(align) > 1:
        raise MobileNetsError(f"{label}: the graph's bilinear resizes disagree on align_corners")
    scale, zero = (float(inp["quantization"][0]), float(inp["quantization"][1]))
    if scale == 0.0:  # a float input: the network's own normalisation, x / 127.5 - 1 in TF DeepLab
        scale, zero = 1.0 / 127.5, 127.5
    stem_out = graph.layers[0].weight.shape[0]
    num_classes = graph.layers[position[logits.index]].weight.shape[0]

    model = None
    for width in (1.0, 0.5, 0.75, 0.35, 1.4, 1.3):  # TF DeepLab released depth multipliers 1.0 and 0.5
        with torch.device("meta"):
            candidate = deeplabv3_mobilenet_v2(width=width, num_classes=num_classes, output_stride=strides[0],
                                               tf_padding=True, bn_eps=TF_BN_EPS)
        mods = weighted_modules(candidate.backbone)
        if len(mods) == len(backbone_ops) and all(
                tuple(m.weight.shape) == tuple(graph.layers[position[op.index]].weight.shape)
                for (_, m, _), op in zip(mods, backbone_ops)):
            model = deeplabv3_mobilenet_v2(width=width, num_classes=num_classes, output_stride=strides[0],
                                           tf_padding=True, bn_eps=TF_BN_EPS)
            break
    if model is None:
        raise MobileNetsError(f"{label}: the backbone's {len(backbone_ops)} layers (stem {stem_out} ch) match "
                              "MobileNetV2 at no width (TF DeepLab stops rounding channels to 8 below depth "
                              "multiplier 1.0, which our width scaling does not reproduce)")

    # Per-layer checks of strides / dilations, then the tensors.
    state: dict[str, torch.Tensor] = {}
    folded: list[str] = []
    backbone_mods = [(f"backbone.{n}", m, f"backbone.{bn}" if bn else None)
                     for n, m, bn in weighted_modules(model.backbone)]
    head = model.head
    head_mods = [("head.image_pooling.conv", head.image_pooling.conv, "head.image_pooling.bn", image_pooling),
                 ("head.aspp0.conv", head.aspp0.conv, "head.aspp0.bn", aspp0),
                 ("head.concat_projection.conv", head.concat_projection.conv, "head.concat_projection.bn",
                  projection),
                 ("classifier", model.classifier, None, logits)]
    rows = [(n, m, bn, op) for (n, m, bn), op in zip(backbone_mods, backbone_ops)] + head_mods
    for name, module, bn, op in rows:
        layer = graph.layers[position[op.index]]
        o = op.options
        stride = (int(o.strideH), int(o.strideW))
        dilation = (int(o.dilationHFactor), int(o.dilationWFactor))
        if (stride, dilation) != (tuple(module.stride), tuple(module.dilation)) or \
                tuple(layer.weight.shape) != tuple(module.weight.shape):
            raise MobileNetsError(
                f"{label}: op {op.index} ({op.name}, {tuple(layer.weight.shape)}, stride {stride}, dilation "
                f"{dilation}) does not fit {name} ({tuple(module.weight.shape)}, stride {tuple(module.stride)}, "
                f"dilation {tuple(module.dilation)})")
        weight = layer.weight
        if name == "head.concat_projection.conv" and branch_order[0] is aspp0:  # our concat: pooling first
            half = weight.shape[1] // 2
            weight = torch.cat([weight[:, half:], weight[:, :half]], dim=1)
        bias = layer.bias if layer.bias is not None else torch.zeros(weight.shape[0])
        state[f"{name}.weight"] = weight
        if bn is None:
            state[f"{name}.bias"] = bias
        else:
            state.update({f"{bn}.weight": torch.ones_like(bias), f"{bn}.bias": bias,
                          f"{bn}.running_mean": torch.zeros_like(bias)})
            folded.append(bn)
    check_values(state, label)
    modules = dict(model.named_modules())
    for bn in folded:  # identity batch norm: (x - 0) / sqrt(1 - eps + eps) * 1 + bias
        state[f"{bn}.running_var"] = torch.full_like(state[f"{bn}.bias"], 1.0 - modules[bn].eps)
    expected = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    if set(state) != expected:
        raise MobileNetsError(f"{label}: internal mapping error; missing {sorted(expected - set(state))[:4]}, "
                              f"unexpected {sorted(set(state) - expected)[:4]}")
    model.load_state_dict(state, strict=False)
    model.eval()

    info = DeepLabTFLiteInfo(
        source=label, width=model.config.width, num_classes=num_classes, output_stride=strides[0],
        input_size=(in_h, in_w), input_quantization=(scale, zero), align_corners=align.pop() if align else True,
        output="argmax" if any(op.name == "ARG_MAX" for op in ops) else "logits",
        # the weight tensor's name starts with its TF scope: "image_pooling/Conv2D_Fold;...", "logits/semantic/..."
        scopes={role: details[op.inputs[1]]["name"].split(";")[0].rsplit("/", 1)[0]
                for role, op in head_roles.items()},
    )
    return model, info
