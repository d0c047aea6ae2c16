"""The Faster R-CNN box coder SSD uses (torchvision ``det_utils.BoxCoder``, TF OD API ``FasterRcnnBoxCoder``), and
default-box tiling.

Codes are (tx, ty, tw, th) per default box: tx = wx (cx - cx_a) / w_a, ty = wy (cy - cy_a) / h_a,
tw = ww log(w / w_a), th = wh log(h / h_a), with weights (wx, wy, ww, wh) = (10, 10, 5, 5) in both configurations
(torchvision's order; TF's codes are (ty, tx, th, tw)). Boxes are XYXY in pixels.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torchvision.ops import box_convert

from .recipes import BoxShape

__all__ = ["encode_boxes", "decode_boxes", "tile_default_boxes"]


def _centre_size(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(cx, cy, w, h) of XYXY boxes with torchvision ``BoxCoder``'s float arithmetic (x1 + w / 2, not
    ``box_convert``'s (x1 + x2) / 2: the two differ in the last bit, and matching torchvision's decoded boxes
    bit for bit needs this one)."""
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


def encode_boxes(boxes: torch.Tensor, default_boxes: torch.Tensor,
                 weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0)) -> torch.Tensor:
    """Codes (..., 4) of ``boxes`` (XYXY) relative to ``default_boxes`` (XYXY, same leading shape): the exact
    inverse of :func:`decode_boxes` (where that one's clamp does not bite); torchvision ``encode_boxes``."""
    wx, wy, ww, wh = weights
    gx, gy, gw, gh = _centre_size(boxes)
    ax, ay, aw, ah = _centre_size(default_boxes.to(boxes.dtype))
    return torch.stack((wx * (gx - ax) / aw, wy * (gy - ay) / ah, ww * torch.log(gw / aw), wh * torch.log(gh / ah)),
                       dim=-1)


def decode_boxes(codes: torch.Tensor, default_boxes: torch.Tensor, weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
                 *, clamp: float | None = None) -> torch.Tensor:
    """Boxes (XYXY, shape of ``codes``) from codes (..., 4) relative to ``default_boxes`` (XYXY, broadcastable).
    ``clamp`` caps tw / ww and th / wh before the exponential (torchvision: log(1000 / 16); TF: none)."""
    wx, wy, ww, wh = weights
    ax, ay, aw, ah = _centre_size(default_boxes.to(codes.dtype))
    dw, dh = codes[..., 2] / ww, codes[..., 3] / wh
    if clamp is not None:
        dw, dh = dw.clamp(max=clamp), dh.clamp(max=clamp)
    cxcywh = torch.stack((codes[..., 0] / wx * aw + ax, codes[..., 1] / wy * ah + ay,
                          torch.exp(dw) * aw, torch.exp(dh) * ah), dim=-1)
    return box_convert(cxcywh, "cxcywh", "xyxy")


def tile_default_boxes(box_shapes: Sequence[Sequence[BoxShape]], map_sizes: Sequence[tuple[int, int]],
                       image_size: tuple[int, int], *, square: bool) -> torch.Tensor:
    """Default boxes (A, 4), XYXY in pixels of an ``image_size`` (H, W) input, for feature maps of ``map_sizes``
    [(h, w), ...]: box centres at ((j + 0.5) / w, (i + 0.5) / h) of the image, every shape of the map at every
    location, ordered map by map, then row, column, shape (the order of the heads' outputs; torchvision
    ``DefaultBoxGenerator._grid_default_boxes`` and TF ``tile_anchors`` agree on it). ``square``: shapes are
    fractions of the shorter side (TF), else of each side (torchvision). The arithmetic follows torchvision's
    exactly (normalised (cx, cy, w, h) in float32, then corners times (W, H))."""
    H, W = image_size
    per_map = []
    for shapes, (fh, fw) in zip(box_shapes, map_sizes):
        wh = torch.tensor([[s.w, s.h] for s in shapes], dtype=torch.float32)
        if square:
            wh = wh * torch.tensor([min(H, W) / W, min(H, W) / H], dtype=torch.float32)
        cx = (torch.arange(0, fw) + 0.5) / fw
        cy = (torch.arange(0, fh) + 0.5) / fh
        cy, cx = torch.meshgrid(cy.float(), cx.float(), indexing="ij")
        centers = torch.stack((cx.reshape(-1), cy.reshape(-1)), dim=-1).repeat_interleave(len(shapes), dim=0)
        per_map.append(torch.cat((centers, wh.repeat(fh * fw, 1)), dim=1))
    boxes = torch.cat(per_map, dim=0)
    size = torch.tensor([W, H], dtype=torch.float32)
    return torch.cat(((boxes[:, :2] - 0.5 * boxes[:, 2:]) * size, (boxes[:, :2] + 0.5 * boxes[:, 2:]) * size), dim=1)
