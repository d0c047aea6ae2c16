"""torchvision state dicts: ``mobilenet_v2``, ``mobilenet_v3_large``, ``mobilenet_v3_small``.

torchvision names blocks by position: ``features.0`` is the stem (Conv2dNormActivation: ``0`` conv,
``1`` BN), ``features.1 ..`` the blocks, then the last 1x1 conv. Inside a block the positions shift with
the optional expansion conv and squeeze-excite, hence one variant per combination below. torchvision's
V3 head is ``classifier.0`` (Linear 960->1280, our 1x1 ``head_conv``), ``classifier.3`` (the classifier).
"""

from __future__ import annotations

import torch

from .layout import BlockTable, rename_blocks

__all__ = ["detect", "to_canonical", "bn_eps", "V2", "V3"]


def bn_eps(model: str) -> float:
    """torchvision builds its V3 models with BatchNorm2d(eps=0.001) (torchvision/models/mobilenetv3.py),
    its V2 with the PyTorch default 1e-5."""
    return 1e-3 if model.startswith("mobilenet_v3") else 1e-5

_CONV_BN = {"0": "conv", "1": "bn"}  # Conv2dNormActivation: stem and last 1x1 conv

V2 = BlockTable(
    prefixes=(
        (r"features\.0\.", "stem", 0),
        (r"features\.(?P<n>\d+)\.", "body.{n}", -1),
        (r"classifier\.1\.", "classifier", 0),
    ),
    variants=(
        _CONV_BN,
        # t = 1 (first block): no expansion conv
        {"conv.0.0": "conv_dw", "conv.0.1": "bn2", "conv.1": "conv_pwl", "conv.2": "bn3"},
        # t = 6
        {"conv.0.0": "conv_pw", "conv.0.1": "bn1", "conv.1.0": "conv_dw", "conv.1.1": "bn2",
         "conv.2": "conv_pwl", "conv.3": "bn3"},
    ),
)

_SE = {"fc1": "se.conv_reduce", "fc2": "se.conv_expand"}

V3 = BlockTable(
    prefixes=(
        (r"features\.0\.", "stem", 0),
        (r"features\.(?P<n>\d+)\.", "body.{n}", -1),
        (r"classifier\.0\.", "head_conv", 0),
        (r"classifier\.3\.", "classifier", 0),
    ),
    variants=(
        _CONV_BN,
        # expansion + SE
        {"block.0.0": "conv_pw", "block.0.1": "bn1", "block.1.0": "conv_dw", "block.1.1": "bn2",
         **{f"block.2.{k}": v for k, v in _SE.items()}, "block.3.0": "conv_pwl", "block.3.1": "bn3"},
        # expansion, no SE
        {"block.0.0": "conv_pw", "block.0.1": "bn1", "block.1.0": "conv_dw", "block.1.1": "bn2",
         "block.2.0": "conv_pwl", "block.2.1": "bn3"},
        # no expansion (exp == in), SE
        {"block.0.0": "conv_dw", "block.0.1": "bn2", **{f"block.1.{k}": v for k, v in _SE.items()},
         "block.2.0": "conv_pwl", "block.2.1": "bn3"},
        # no expansion, no SE
        {"block.0.0": "conv_dw", "block.0.1": "bn2", "block.1.0": "conv_pwl", "block.1.1": "bn3"},
    ),
)


def detect(keys: set[str]) -> bool:
    return any(k.startswith("features.") for k in keys) and any(k.startswith("classifier.") for k in keys)


def to_canonical(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    is_v3 = any(".block." in k for k in state)
    out = rename_blocks(state, V3 if is_v3 else V2)
    if "head_conv.weight" in out and out["head_conv.weight"].ndim == 2:  # their Linear 960 -> 1280: our 1x1 conv
        out["head_conv.weight"] = out["head_conv.weight"][:, :, None, None]
    return out
