"""Multi-scale feature maps for detection / segmentation backbones ("drop the last layer, attach a head")."""

from __future__ import annotations

import torch
from torch import nn

from .model import FeatureInfo, MobileNet

__all__ = ["FeatureExtractor"]


class FeatureExtractor(nn.Module):
    """The stem and stages of a :class:`MobileNet`, returning the stage-end feature maps at ``out_strides``.

    It holds the model's own ``stem`` and ``stages`` modules (not copies), so its state-dict keys are the
    model's minus the head, and weights for the full model load into it with ``strict=False``.
    """

    def __init__(self, model: MobileNet, out_strides: tuple[int, ...] = (4, 8, 16, 32)) -> None:
        super().__init__()
        taps = {f.stride: f for f in model.feature_info}
        missing = [s for s in out_strides if s not in taps]
        if missing:
            raise ValueError(f"no feature map at stride(s) {missing}; available: {sorted(taps)}")
        self.config = model.config
        self.stem = model.stem
        self.feature_info: list[FeatureInfo] = [taps[s] for s in sorted(out_strides)]
        self._tap_names = {f.module for f in self.feature_info}
        # stages past the deepest tap would receive no gradient: leave them out
        n_stages = max((int(n.split(".")[1]) + 1 for n in self._tap_names if n.startswith("stages.")), default=0)
        self.stages = nn.Sequential(*list(model.stages)[:n_stages])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        x = self.stem(x)
        if "stem" in self._tap_names:
            out.append(x)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if f"stages.{i}" in self._tap_names:
                out.append(x)
        return out
