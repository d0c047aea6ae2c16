"""Cost accounting the papers' way: multiply-adds of convolutions and fully connected layers only.

Batch norm, activations, pooling, the squeeze-excite gating multiply and residual adds are not counted
(V1 section 3.1 counts "Mult-Adds" of the conv layers; V2/V3 use the same convention, see SPEC.md). V4's
Mobile MQA adds the two attention matmuls (``q k^T`` and ``attn v``), which are not modules: each MQA block
gives one "attention" row beside its projection convs. Softmax and layer scale are not counted.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from torch import nn

from .attention import MobileMQA
from .blocks import SqueezeExcite

__all__ = ["profile", "Profile", "LayerCost", "OP_TYPES"]

# Operator types, in the order of V1 Table 2 (plus squeeze-excite, which V1 does not have).
OP_TYPES = ("pointwise conv", "depthwise conv", "full conv", "fully connected", "squeeze-excite", "attention")


@dataclass(frozen=True)
class LayerCost:
    """One conv / linear layer (or the attention matmuls of one MQA block, op type "attention", no parameters):
    its module name, operator type, output shape (C, H, W or features), parameter count (weight and bias) and
    multiply-adds for one image."""

    name: str
    op_type: str
    out_shape: tuple[int, ...]
    params: int
    madds: int


@dataclass
class Profile:
    """Per-layer costs and totals of one model at one input size.

    ``params`` counts every parameter of the model (batch norm included, as torchvision and timm do);
    ``layer_params`` only those of the conv / FC layers, which is what the V1 Table 2 percentages use.
    """

    input_size: tuple[int, int]
    layers: list[LayerCost]
    params: int
    madds: int = field(init=False)
    layer_params: int = field(init=False)

    def __post_init__(self) -> None:
        self.madds = sum(r.madds for r in self.layers)
        self.layer_params = sum(r.params for r in self.layers)

    def by_type(self) -> "OrderedDict[str, tuple[int, int]]":
        """``{op_type: (madds, params)}`` over the conv / FC layers, in :data:`OP_TYPES` order."""
        out: OrderedDict[str, tuple[int, int]] = OrderedDict()
        for t in OP_TYPES:
            rows = [r for r in self.layers if r.op_type == t]
            if rows:
                out[t] = (sum(r.madds for r in rows), sum(r.params for r in rows))
        return out

    def breakdown(self) -> "OrderedDict[str, tuple[float, float]]":
        """``{op_type: (% of MAdds, % of parameters)}``: the V1 Table 2 view (conv / FC weights only)."""
        return OrderedDict(
            (t, (100.0 * m / self.madds, 100.0 * p / self.layer_params)) for t, (m, p) in self.by_type().items()
        )


def _op_type(name: str, module: nn.Module, in_se: bool) -> str:
    if in_se:
        return "squeeze-excite"
    if isinstance(module, nn.Linear):
        return "fully connected"
    if module.groups > 1:
        return "depthwise conv"
    if module.kernel_size == (1, 1):
        return "pointwise conv"
    return "full conv"


@torch.no_grad()
def profile(model: nn.Module, input_size: int | tuple[int, int] = 224) -> Profile:
    """Count parameters and multiply-adds of ``model`` for one image of ``input_size`` (int or (H, W)).

    Runs one forward pass on zeros (the model is put in eval mode for it, then restored) and records every
    ``nn.Conv2d`` and ``nn.Linear``: a conv costs out_h * out_w * out_c * (in_c / groups) * k_h * k_w MAdds
    and a linear in * out.
    """
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    se_members = {id(m) for se in model.modules() if isinstance(se, SqueezeExcite) for m in se.modules()}
    rows: list[LayerCost] = []
    hooks = []

    def hook_for(name: str, module: nn.Module):
        def hook(mod, inputs, output):
            params = sum(p.numel() for p in mod.parameters(recurse=False))
            if isinstance(mod, nn.Linear):
                madds = mod.in_features * mod.out_features * (output.numel() // output.shape[-1] // output.shape[0])
            else:
                kh, kw = mod.kernel_size
                madds = output[0].numel() * (mod.in_channels // mod.groups) * kh * kw
            rows.append(LayerCost(name, _op_type(name, mod, id(mod) in se_members), tuple(output.shape[1:]),
                                  params, madds))
        return hook

    def attention_hook_for(name: str):
        def hook(mod, inputs, output):
            queries = inputs[0].shape[-2] * inputs[0].shape[-1]
            keys = mod.key_proj.last_keys
            rows.append(LayerCost(f"{name}.attention", "attention", (mod.heads * mod.value_dim,) + tuple(output.shape[2:]),
                                  0, mod.attention_madds(queries, keys)))
        return hook

    def keys_hook(mod, inputs, output):  # the key positions M (after any stride-2 downsampling)
        mod.last_keys = output.shape[-2] * output.shape[-1]

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            hooks.append(module.register_forward_hook(hook_for(name, module)))
        if isinstance(module, MobileMQA):
            hooks.append(module.key_proj.register_forward_hook(keys_hook))
            hooks.append(module.register_forward_hook(attention_hook_for(name)))
    was_training = model.training
    in_chans = model.config.in_chans if hasattr(model, "config") else 3
    try:
        model.eval()
        p = next(model.parameters(), None)
        model(torch.zeros(1, in_chans, h, w, device=p.device if p is not None else "cpu"))
    finally:
        for hk in hooks:
            hk.remove()
        for m in model.modules():
            if isinstance(m, MobileMQA) and hasattr(m.key_proj, "last_keys"):
                del m.key_proj.last_keys
        model.train(was_training)
    return Profile((h, w), rows, sum(p.numel() for p in model.parameters()))
