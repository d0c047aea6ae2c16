"""Inference-time graph simplification: fold every batch norm into the convolution before it.

In eval mode BN is the per-channel affine ``y = (x - mean) / sqrt(var + eps) * gamma + beta``. After a
convolution it folds exactly into that convolution: ``W' = W * s``, ``b' = (b - mean) * s + beta`` with
``s = gamma / sqrt(var + eps)`` per output channel. The folded model computes the same function with one
operator less per layer, and every conv is directly followed by its activation (ReLU, ReLU6, h-swish), the
pattern the runtimes (onnxruntime's Conv+Activation fusion, XNNPACK's clamp/hardswish fusion, oneDNN under
``torch.jit.freeze``) fuse into a single kernel.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["fold_batchnorm", "fold_conv_bn"]


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` (its running statistics and affine parameters) into ``conv`` in place: ``conv`` gains a
    bias if it had none. ``bn`` is left unchanged; the caller replaces it with ``nn.Identity``."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("batch norm without running statistics cannot be folded")
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.affine:
        scale = scale * bn.weight.double()
    w = conv.weight.double() * scale.reshape(-1, 1, 1, 1)
    b = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    b = (b - bn.running_mean.double()) * scale
    if bn.affine:
        b = b + bn.bias.double()
    conv.weight.copy_(w.to(conv.weight.dtype))
    if conv.bias is None:
        conv.bias = nn.Parameter(b.to(conv.weight.dtype))
    else:
        conv.bias.copy_(b.to(conv.bias.dtype))


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with each BatchNorm2d folded into the convolution it follows.

    The pairs are found structurally: in every module, a ``BatchNorm2d`` attribute is paired with the
    ``Conv2d`` registered just before it (``conv``/``bn`` in ConvNormAct, ``conv_dw``/``bn1``,
    ``conv_pw``/``bn2``, ``conv_pwl``/``bn3`` in the blocks: the order they are built and applied in).
    Folded BNs become ``nn.Identity``, so the module tree and the convs' parameter names stay as they
    were (convs gain a ``bias``). Raises ``ValueError`` if a BN has no conv right before it. The input
    model is not modified.

    Only plain ``nn.BatchNorm2d`` modules are folded: subclasses that do more (timm's ``BatchNormAct2d``
    applies the activation inside the norm module) are left as they are, for the runtime to fuse.

    A module may name batch norms that normalise its *input* in a ``_prenorm`` tuple (V4's Mobile MQA:
    ``norm``): no conv precedes them, so they stay (an exact per-channel affine that the runtimes run as such;
    folding it forward into the strided depthwise key / value convs would change their zero padding).
    """
    model = copy.deepcopy(model).eval()
    for parent in model.modules():
        prev_name, prev = None, None
        prenorm = getattr(parent, "_prenorm", ())
        for name, child in list(parent.named_children()):
            if type(child) is nn.BatchNorm2d and name in prenorm:
                continue
            if type(child) is nn.BatchNorm2d:
                if not isinstance(prev, nn.Conv2d) or prev.out_channels != child.num_features:
                    raise ValueError(f"cannot fold batch norm {name!r}: no conv with {child.num_features} "
                                     f"output channels right before it (found {prev_name!r})")
                fold_conv_bn(prev, child)
                setattr(parent, name, nn.Identity())
            if child is not None:
                prev_name, prev = name, child
    return model
