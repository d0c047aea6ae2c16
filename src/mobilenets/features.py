"""Multi-scale feature maps for detection / segmentation backbones ("drop the last layer, attach a head").

A tap is a block of the body and a point inside it (:class:`Tap`): the block's ``"output"``, or the
``"expansion"`` / ``"depthwise"`` outputs inside an inverted residual (TF-slim's ``layer_N/expansion_output``
and ``layer_N/depthwise_output`` end points, which the papers' SSDLite and LR-ASPP heads read). Which block to
tap follows from the table's strides (:func:`stage_end_taps`, :func:`downsampling_expansion_tap`), never from
module names.
"""

from dataclasses import dataclass
from typing import List, Sequence

import torch
from torch import nn

from .errors import MobileNetsError
from .model import BlockInfo, FeatureInfo, FeatureInfoList, MobileNet, _checkpoint

__all__ = ["FeatureExtractor", "Tap", "stage_end_taps", "downsampling_expansion_tap", "POINTS"]

POINTS = ("output", "expansion", "depthwise")


@dataclass(frozen=True)
class Tap:
    """Block ``block`` (flat body index, :attr:`MobileNet.block_info`; -1 means the stem) at ``point``."""

    block: int
    point: str = "output"


def stage_end_taps(model: MobileNet, out_strides: Sequence[int]) -> list[Tap]:
    """The last block reaching each of ``out_strides`` (actual strides; the stem for stride 2 where no block
    ends at 2): the stage-end feature maps of a classification backbone."""
    taps = []
    for s in sorted(out_strides):
        ends = [b.index for b in model.block_info if b.stride == s]
        if ends:
            taps.append(Tap(ends[-1]))
        elif s == 2 and model.feature_info[0].module == "stem":
            taps.append(Tap(-1))
        else:
            available = sorted({b.stride for b in model.block_info} | ({2} if model.feature_info[0].module == "stem"
                                                                        else set()))
            raise MobileNetsError(f"no feature map at stride {s}; available: {available}")
    return taps


def downsampling_expansion_tap(model: MobileNet, table_stride: int) -> Tap:
    """The expansion output of the block that downsamples into table stride ``table_stride``: e.g. for 32, V2's
    layer 15 (576 ch, stride 16), V3-Large's 13th bneck (672), V3-Small's 9th (288): the SSDLite "C4" tap
    (V2 section 6.2, V3 section 6.3; TF-slim counts the stem as layer 1, so V2 "layer 15" is body block 13), computed at the higher resolution before the stride-2 depthwise conv."""
    from .blocks import InvertedResidual

    for b in model.block_info:
        if b.table_stride == table_stride:
            if not isinstance(_block(model, b), InvertedResidual):
                break
            return Tap(b.index, "expansion")
    raise MobileNetsError(f"{model.config.name}: no inverted-residual block downsamples to stride {table_stride}")


def _block(model: MobileNet, info: BlockInfo) -> nn.Module:
    return model.get_submodule(info.module)


class FeatureExtractor(nn.Module):
    """The stem and the body of a :class:`MobileNet` up to its deepest tap, returning the tapped feature maps
    in order.

    It holds the model's own ``stem`` and ``stages`` modules (not copies), so its state-dict keys are the
    model's minus the head, and weights for the full model load into it with ``strict=False``. Give either
    ``out_strides`` (stage ends) or explicit ``taps``. Like the model it is scriptable, exportable and
    fx-traceable; ``feature_info`` has timm's accessors (``channels()``, ``reduction()``, ``module_name()``)
    and ``pretrained_cfg`` / ``default_cfg`` are the model's.
    """

    __jit_unused_properties__ = ["pretrained_cfg", "default_cfg"]
    _points: List[List[str]]  # per kept block, in order: the points tapped in it (TorchScript needs the type)

    def __init__(self, model: MobileNet, out_strides: Sequence[int] = (4, 8, 16, 32), *,
                 taps: Sequence[Tap] | None = None) -> None:
        super().__init__()
        taps = list(taps) if taps is not None else stage_end_taps(model, out_strides)
        n_blocks = len(model.block_info)
        for t in taps:
            if not -1 <= t.block < n_blocks or t.point not in POINTS or (t.block == -1 and t.point != "output"):
                raise MobileNetsError(f"bad tap {t} for {model.config.name} ({n_blocks} blocks; points {POINTS})")
            if t.point != "output" and not hasattr(_block(model, model.block_info[t.block]), "forward_intermediates"):
                raise MobileNetsError(f"block {t.block} of {model.config.name} has no {t.point} output")
        taps = sorted(set(taps), key=lambda t: (t.block, POINTS.index(t.point) if t.point != "output" else 9))
        self.config = model.config
        self.preprocessing = model.preprocessing
        self.taps = taps
        self.stem = model.stem
        self.feature_info = FeatureInfoList(self._info(model, t) for t in taps)
        last = max(t.block for t in taps)
        # stages past the deepest tap would receive no gradient: leave them out (keys stay the model's)
        keep: list[list[int]] = []
        self._points = []
        for b in model.block_info[:last + 1]:
            stage, j = (int(p) for p in b.module.split(".")[1:3])
            while len(keep) <= stage:
                keep.append([])
            keep[stage].append(j)
            self._points.append([t.point for t in taps if t.block == b.index])
        self.stages = nn.Sequential(*(nn.Sequential(*(model.stages[i][j] for j in js)) for i, js in enumerate(keep)))
        self.block_info = model.block_info[:last + 1]  # list[BlockInfo]: the blocks it holds (same module paths)
        self._stem_tap = any(t.block == -1 for t in taps)
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """As :meth:`MobileNet.set_grad_checkpointing`, block by block (blocks tapped inside are not
        checkpointed)."""
        self.grad_checkpointing = bool(enable)

    @property
    def pretrained_cfg(self) -> dict:
        """The model's :attr:`MobileNet.pretrained_cfg` (input size, mean / std, crop), for timm's data config."""
        from .model import _pretrained_cfg

        return _pretrained_cfg(self.config, self.preprocessing)

    @property
    def default_cfg(self) -> dict:
        return self.pretrained_cfg

    @staticmethod
    def _info(model: MobileNet, t: Tap) -> FeatureInfo:
        if t.block == -1:
            return FeatureInfo("stem", model.stem.conv.out_channels, 2)
        b = model.block_info[t.block]
        if t.point == "output":
            return FeatureInfo(b.module, b.out_chs, b.stride)
        # an inner point is computed before the block's own downsampling (expansion) or after it (depthwise)
        conv_dw = _block(model, b).conv_dw
        stride = b.stride if t.point == "depthwise" else b.stride // conv_dw.stride[0]
        return FeatureInfo(f"{b.module}.{t.point}", b.exp_chs, stride)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        out: List[torch.Tensor] = []
        x = self.stem(x)
        if self._stem_tap:
            out.append(x)
        i = 0
        for stage in self.stages:  # TorchScript unrolls these loops: one block (and one type) per iteration
            for block in stage:
                points = self._points[i]
                i += 1
                inner_tap = len(points) > 1 or (len(points) == 1 and points[0] != "output")
                # hasattr is decided per block when scripting: blocks without inner points need no such method
                if hasattr(block, "forward_intermediates") and inner_tap:
                    inner = block.forward_intermediates(x)
                    x = inner["output"]
                    for p in points:
                        out.append(inner[p])
                else:
                    # spelled out for TorchScript, which skips the branch only on a literal is_scripting()
                    if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
                        x = _checkpoint(block, x)
                    else:
                        x = block(x)
                    if len(points) > 0:
                        out.append(x)
        return out
