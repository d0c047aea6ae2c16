"""torchvision ``ssdlite320_mobilenet_v3_large`` state dicts -> ``ssdlite_mobilenet_v3_large(config="torchvision")``.

torchvision's ``SSDLiteFeatureExtractorMobileNet`` cuts the classification ``features`` in two at C4, the
block whose expansion output is tapped (``c4``: features index 13 for V3-Large): ``features.0`` = the stem and
blocks up to it plus that block's expansion conv (``block[0]``), ``features.1`` = the rest of that block
(``block[1:]``, which keeps its original indices 1, 2, 3) and the blocks after it. Its extra layers are
``backbone.extra`` and its predictors ``head.{classification,regression}_head.module_list``:

=============================================  ===============================  ======================================
torchvision                                    ours                             what
=============================================  ===============================  ======================================
``backbone.features.0.0.{0,1}``                ``backbone.stem.{conv,bn}``      stem conv + BN
``backbone.features.0.N.block.*`` (N < c4)     ``backbone.stages.S.J.*``        bneck N (weights/torchvision V3)
``backbone.features.0.{c4}.{0,1}``             ``...conv_pw``, ``...bn1``       C4's expansion conv + BN
``backbone.features.1.0.{1.0,1.1}``            ``...conv_dw``, ``...bn2``       C4's depthwise conv + BN
``backbone.features.1.0.2.{fc1,fc2}``          ``...se.conv_reduce/expand``     C4's squeeze-excite
``backbone.features.1.0.3.{0,1}``              ``...conv_pwl``, ``...bn3``      C4's projection + BN
``backbone.features.1.M.*`` (M >= 1)           block c4 - 1 + M                 the blocks after C4, last conv
``backbone.extra.I.{0,1,2}.{0,1}``             ``extras.I.*``                   conv_pw/bn1, conv_dw/bn2, conv_out/bn3
``head.classification_head.module_list.I``     ``cls_head.I``                   ``0.0`` dw conv, ``0.1`` BN,
``head.regression_head.module_list.I``         ``box_head.I``                   ``1`` 1x1 conv with bias
=============================================  ===============================  ======================================
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ..errors import MobileNetsError
from .layout import BlockTable, model_blocks, rename_blocks
from .torchvision import V3
from .validate import load_exact

__all__ = ["ssdlite_table", "detect", "to_ours", "load_torchvision_ssdlite"]

_SE = {"2.fc1": "se.conv_reduce", "2.fc2": "se.conv_expand"}

# The C4 block, its two halves joined: the expansion from features.0.{c4} ("0" conv, "1" BN), the rest from
# features.1.0 (block[1:] keeps the indices 1 (depthwise), 2 (SE), 3 (projection); 2 without SE).
_C4_SPLIT = (
    {"0": "conv_pw", "1": "bn1", "1.0": "conv_dw", "1.1": "bn2", **_SE, "3.0": "conv_pwl", "3.1": "bn3"},
    {"0": "conv_pw", "1": "bn1", "1.0": "conv_dw", "1.1": "bn2", "2.0": "conv_pwl", "2.1": "bn3"},
)
# torchvision ssdlite.py _extra_block: three Conv2dNormActivation (0 conv, 1 BN, 2 ReLU6)
_EXTRA = {"0.0": "conv_pw", "0.1": "bn1", "1.0": "conv_dw", "1.1": "bn2", "2.0": "conv_out", "2.1": "bn3"}
# torchvision ssdlite.py _prediction_block: Conv2dNormActivation (depthwise) then a 1x1 Conv2d
_PREDICTOR = {"0.0": "conv_dw", "0.1": "bn", "1": "conv_pw"}


def ssdlite_table(c4: int) -> BlockTable:
    """The key table for a torchvision SSDLite whose backbone is cut at features index ``c4``."""
    return BlockTable(
        prefixes=(
            (r"backbone\.features\.0\.0\.", "stem", 0),
            (r"backbone\.features\.0\.(?P<n>\d+)\.", "body.{n}", -1),
            (r"backbone\.features\.1\.(?P<n>\d+)\.", "body.{n}", c4 - 1),
            (r"backbone\.extra\.(?P<n>\d+)\.", "extras.{n}", 0),
            (r"head\.classification_head\.module_list\.(?P<n>\d+)\.", "cls_head.{n}", 0),
            (r"head\.regression_head\.module_list\.(?P<n>\d+)\.", "box_head.{n}", 0),
        ),
        variants=(*V3.variants, *_C4_SPLIT, _EXTRA, _PREDICTOR),
    )


def detect(keys) -> bool:
    """Whether ``keys`` are a torchvision SSDLite state dict (a split ``backbone.features``, ``backbone.extra``
    and ``head.*_head.module_list``)."""
    keys = set(keys)
    return (any(k.startswith("head.classification_head.module_list.") for k in keys)
            and any(k.startswith("backbone.extra.") for k in keys)
            and any(k.startswith("backbone.features.1.") for k in keys))


def _c4(keys) -> int:
    found = [int(m[1]) for k in keys if (m := re.match(r"backbone\.features\.0\.(\d+)\.", k))]
    if not found:
        raise MobileNetsError("not a torchvision SSDLite state dict (no backbone.features.0.* keys)")
    return max(found)


def _template() -> nn.Module:
    from ..detection.ssdlite import ssdlite_mobilenet_v3_large

    with torch.device("meta"):
        return ssdlite_mobilenet_v3_large(config="torchvision")


def to_ours(state: dict[str, torch.Tensor], model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """``state`` (torchvision keys) under our keys for ``model`` (default: a torchvision-config
    ``ssdlite_mobilenet_v3_large``; only the grouping of its backbone blocks into stages is read from it).
    ``num_batches_tracked`` is dropped. Raises :class:`MobileNetsError` for keys the table cannot place."""
    canonical = rename_blocks(state, ssdlite_table(_c4(state)))
    blocks = model_blocks((model if model is not None else _template()).backbone)
    out = {}
    for key, value in canonical.items():
        if key.startswith("body."):
            n, rest = key[len("body."):].split(".", 1)
            key = f"backbone.{blocks[int(n)]}.{rest}" if int(n) < len(blocks) else f"backbone.{key}"
        elif key.startswith("stem."):
            key = f"backbone.{key}"
        out[key] = value
    return out


def load_torchvision_ssdlite(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a torchvision ``ssdlite320_mobilenet_v3_large`` state dict into ``model`` (an
    ``ssdlite_mobilenet_v3_large(config="torchvision")`` with the same class count; torchvision's COCO weights
    have 91), all or nothing: any missing, unexpected or mis-shaped tensor is a :class:`MobileNetsError` listing
    them, and nothing is loaded."""
    config = getattr(model, "config", None)
    if getattr(config, "config", None) != "torchvision":
        raise MobileNetsError("torchvision SSDLite weights need ssdlite_mobilenet_v3_large(config='torchvision'), "
                              f"got {getattr(config, 'name', type(model).__name__)} "
                              f"config={getattr(config, 'config', None)!r}")
    if not detect(state):
        raise MobileNetsError("not a torchvision ssdlite320_mobilenet_v3_large state dict "
                              "(no backbone.features.1 / backbone.extra / head.classification_head keys)")
    load_exact(model, to_ours(state, model), "torchvision SSDLite weights", "the model")
