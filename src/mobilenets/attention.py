"""MobileNetV4's Mobile MQA block (Qin et al. 2024, arXiv 2404.10518, section 4 / Equation 2).

Multi-query attention (Shazeer 2019): ``heads`` query heads share one key head and one value head, which cuts
the memory traffic of keys and values ``heads``-fold, the point of the design on accelerators. Keys and values
can be computed on a spatially downsampled map (a stride-``kv_stride`` depthwise conv + batch norm: the paper's
"Spatial Reduction", TF Model Garden ``OptimizedMultiQueryAttentionLayerWithDownSampling``). The block is
pre-norm (batch norm of the input), with layer scale and a residual connection (TF Model Garden
``nn_blocks.MultiHeadSelfAttentionBlock(use_multi_query=True)``).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import DropPath, LayerScale2d, create_conv2d

__all__ = ["MobileMQA"]

LAYER_SCALE_INIT = 1e-5  # TF Model Garden MultiHeadSelfAttentionBlock(layer_scale_init_value=1e-5)


class MobileMQA(nn.Module):
    """Mobile MQA (V4 Equation 2):
    ``x + layer_scale(out_proj(concat_h softmax(q_h k^T / sqrt(key_dim)) v))`` on ``x' = norm(x)``, with
    ``q_h`` from ``query_proj(x')`` (1x1, ``heads * key_dim``), ``k`` = ``key_proj(key_bn(key_down(x')))``
    (1x1 to ``key_dim``; ``key_down`` the stride-``kv_stride`` depthwise conv, absent for stride 1) and ``v``
    the same with ``value_*`` (``value_dim``). No biases (TF ``use_bias=False``).

    The attention is written as two plain batched matmuls with the heads folded into the query length
    (``(B, heads * L, key_dim) @ (B, key_dim, M)``), which every runtime we export to supports and which
    :func:`mobilenets.profile` counts (``heads * L * M * (key_dim + value_dim)`` multiply-adds).
    """

    _prenorm = ("norm",)  # a batch norm on the block input, with no conv before it: never folded (export/fuse.py)

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        heads: int,
        key_dim: int,
        value_dim: int,
        kv_stride: int = 1,
        kv_kernel: int = 3,
        dilation: int = 1,
        layer_scale: bool = True,
        drop_path_rate: float = 0.0,
        bn_eps: float = 1e-5,
        tf_padding: bool = False,
    ) -> None:
        super().__init__()
        self.has_skip = in_chs == out_chs
        self.heads = heads
        self.key_dim = key_dim
        self.value_dim = value_dim
        self.kv_stride = kv_stride
        self.scale = float(key_dim) ** -0.5
        self.norm = nn.BatchNorm2d(in_chs, eps=bn_eps)
        self.query_proj = create_conv2d(in_chs, heads * key_dim, 1)

        def downsampling() -> tuple[nn.Module | None, nn.Module | None]:
            """The strided depthwise conv + BN before a key / value projection (none at kv_stride 1)."""
            if kv_stride <= 1:
                return None, None
            return (create_conv2d(in_chs, in_chs, kv_kernel, stride=kv_stride, dilation=dilation, groups=in_chs,
                                  tf_padding=tf_padding), nn.BatchNorm2d(in_chs, eps=bn_eps))

        self.key_down, self.key_bn = downsampling()
        self.key_proj = create_conv2d(in_chs, key_dim, 1)
        self.value_down, self.value_bn = downsampling()
        self.value_proj = create_conv2d(in_chs, value_dim, 1)
        self.out_proj = create_conv2d(heads * value_dim, out_chs, 1)
        self.layer_scale = LayerScale2d(out_chs, LAYER_SCALE_INIT) if layer_scale else None
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm(x)
        h, w = x.shape[-2], x.shape[-1]
        # Batch dims are -1 in every reshape: exporters that trace at one batch size would otherwise bake it in
        # (ONNX with a dynamic batch then silently mixes the images of a batch).
        # queries: (B, heads * key_dim, H, W) -> (B, heads * L, key_dim), head-major like TF's reshape
        q = self.query_proj(x).reshape(-1, self.heads, self.key_dim, h * w).transpose(2, 3)
        q = q.reshape(-1, self.heads * h * w, self.key_dim) * self.scale
        kx = x
        if self.key_down is not None and self.key_bn is not None:
            kx = self.key_bn(self.key_down(x))
        k = self.key_proj(kx).flatten(2)  # (B, key_dim, M)
        vx = x
        if self.value_down is not None and self.value_bn is not None:
            vx = self.value_bn(self.value_down(x))
        v = self.value_proj(vx).flatten(2).transpose(1, 2)  # (B, M, value_dim)
        attn = torch.softmax(torch.bmm(q, k), dim=-1)  # (B, heads * L, M)
        o = torch.bmm(attn, v)  # (B, heads * L, value_dim)
        # back to a map: channel = head * value_dim + d (TF / timm order)
        o = o.reshape(-1, self.heads, h * w, self.value_dim).transpose(2, 3)
        o = o.reshape(-1, self.heads * self.value_dim, h, w)
        x = self.out_proj(o)
        if self.layer_scale is not None:
            x = self.layer_scale(x)
        if self.has_skip:
            if self.drop_path is not None:
                x = self.drop_path(x)
            x = x + shortcut
        return x

    def attention_madds(self, queries: int, keys: int) -> int:
        """Multiply-adds of the two attention matmuls for ``queries`` query positions and ``keys`` key/value
        positions (one image): ``q k^T`` and ``attn v``."""
        return self.heads * queries * keys * (self.key_dim + self.value_dim)
