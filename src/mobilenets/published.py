"""The papers' published ImageNet figures (MAdds, params, top-1), as data.

Sources: V1 Tables 6-7 (arXiv 1704.04861), V2 Table 4 / Figure 5 and the TF-slim release table
(arXiv 1801.04381), V3 Tables 3 and 5 (arXiv 1905.02244v5) and the TF-slim V3 release table, V4 (arXiv
2404.10518, the paper's ImageNet-1k results; top-1 also in TF Model Garden's MNV4 config headers); see SPEC.md.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Published", "PUBLISHED", "V1_TABLE2"]


@dataclass(frozen=True)
class Published:
    model: str
    width: float
    resolution: int
    madds_m: float  # millions of multiply-adds
    params_m: float  # millions of parameters, at the precision the paper prints
    top1: float
    madds_note: str = ""  # set where the printed MAdds cannot come from the architecture: not checked
    params_note: str = ""  # the same for the printed params
    madds_step_m: float = 0.0  # the printed MAdds' rounding step (V4 prints G MACs to 0.1G: 100)


def _rows(model: str, widths, res, madds, params, top1) -> list[Published]:
    n = max(len(x) for x in (widths, res, madds, params, top1) if isinstance(x, tuple))
    pick = lambda x, i: x[i] if isinstance(x, tuple) else x  # noqa: E731
    return [Published(model, pick(widths, i), pick(res, i), pick(madds, i), pick(params, i), pick(top1, i))
            for i in range(n)]


PUBLISHED: list[Published] = [
    # V1 Table 6 (width multiplier) and Table 7 (resolution)
    *_rows("mobilenet_v1", (1.0, 0.75, 0.5, 0.25), 224, (569, 325, 149, 41), (4.2, 2.6, 1.3, 0.5),
           (70.6, 68.4, 63.7, 50.6)),
    *_rows("mobilenet_v1", 1.0, (192, 160, 128), (418, 290, 186), 4.2, (69.1, 67.2, 64.4)),
    # V2 release table (width) and Figure 5 / release table (resolution)
    *_rows("mobilenet_v2", (1.4, 1.3, 1.0, 0.75, 0.5, 0.35), 224, (582, 509, 300, 209, 97, 59),
           (6.06, 5.34, 3.47, 2.61, 1.95, 1.66), (75.0, 74.4, 71.8, 69.8, 65.4, 60.3)),
    *_rows("mobilenet_v2", 1.0, (192, 160, 128, 96), (221, 154, 99, 56), 3.47, (70.7, 68.8, 65.3, 60.3)),
    # V3 Table 3 (width) and the release table (resolution)
    *_rows("mobilenet_v3_large", (1.25, 1.0, 0.75, 0.5, 0.35), 224, (356, 217, 155, 69, 40),
           (7.5, 5.4, 4.0, 2.6, 2.2), (76.6, 75.2, 73.3, 68.8, 64.2)),
    *_rows("mobilenet_v3_large", 1.0, (256, 192, 160, 128, 96), (282, 160, 112, 73, 43), 5.4,
           (76.0, 73.7, 71.7, 68.4, 63.3)),
    *_rows("mobilenet_v3_small", (1.25, 1.0, 0.75, 0.5), 224, (91, 56, 44, 21), (3.6, 2.5, 2.0, 1.6),
           (70.4, 67.4, 65.4, 58.0)),
    # The reference code's channel rounding (expansion = ratio x actual input channels, rounded to 8), which
    # every other V3 width row confirms, gives 12.8M here. torchvision's rounding (width x printed
    # expansion) gives 12.1M here but misses the 0.75 / 0.5 rows by 7-10%.
    Published("mobilenet_v3_small", 0.35, 224, 12, 1.4, 49.8,
              madds_note="the paper prints 12M; the reference code's channel rounding gives 12.8M"),
    *_rows("mobilenet_v3_small", 1.0, (256, 160, 128, 96), (74, 30, 20, 12), 2.5, (68.5, 62.8, 57.3, 51.7)),
    Published("mobilenet_v3_large_minimal", 1.0, 224, 209, 3.9, 72.3),
    Published("mobilenet_v3_small_minimal", 1.0, 224, 65, 2.0, 61.9,
              madds_note="the release table prints 65M; the architecture (no SE, 3x3 kernels) has 52M"),
    # V4: params in M, MACs in G to one decimal, each at the model's own resolution. Conv-S is reproduced.
    # The other four are not reproducible from the released architecture: our builds of TF Model Garden's block
    # specs have exactly timm's parameter counts (tests/test_profile.py) and 5-8% more than printed. Counted
    # our way (batch norm and layer scale included, attention matmuls included), at the printed resolution:
    #   Conv-M 9.716M / 1.080G, Hybrid-M 11.075M / 1.271G, Conv-L 32.591M / 6.376G, Hybrid-L 37.765M / 7.712G.
    # Tried and ruled out, none fits all four: without batch norm (9.648 / 10.993 / 32.441 / 37.588M), without
    # the classifier (8.43 / 9.79 / 31.31 / 36.48M), without the 1280 head conv and classifier (7.20 / 8.56 /
    # 30.08 / 35.25M), the MACs at 224 (0.828 / 0.966 / 2.171 / 2.550G), without the attention matmuls (Hybrid-M
    # 1.229G fits 1.2; Hybrid-L 7.372G does not fit 7.2, nor Conv-M / Conv-L which have none). The paper's own
    # tables of these models must differ from the released specs (fewer blocks: e.g. one 256-channel FFN less
    # in Conv-M would give 9.19M / 1.05G), which we cannot check without them: we build the released models.
    Published("mobilenet_v4_conv_small", 1.0, 224, 200, 3.8, 73.8, madds_step_m=100),
    Published("mobilenet_v4_conv_medium", 1.0, 256, 1000, 9.2, 79.9, madds_step_m=100,
              params_note="the paper prints 9.2M; TF's released block spec has 9.716M (timm: the same)",
              madds_note="the paper prints 1.0G; TF's released block spec has 1.080G at 256"),
    Published("mobilenet_v4_hybrid_medium", 1.0, 256, 1200, 10.5, 80.7, madds_step_m=100,
              params_note="the paper prints 10.5M; TF's released block spec has 11.075M (timm: the same)",
              madds_note="the paper prints 1.2G; TF's released block spec has 1.271G at 256 (1.229G without the "
                         "attention matmuls)"),
    Published("mobilenet_v4_conv_large", 1.0, 384, 5900, 31.0, 82.9, madds_step_m=100,
              params_note="the paper prints 31.0M; TF's released block spec has 32.591M (timm: the same)",
              madds_note="the paper prints 5.9G; TF's released block spec has 6.376G at 384"),
    Published("mobilenet_v4_hybrid_large", 1.0, 384, 7200, 35.9, 83.4, madds_step_m=100,
              params_note="the paper prints 35.9M; TF's released block spec has 37.765M (timm: the same)",
              madds_note="the paper prints 7.2G; TF's released block spec has 7.712G at 384 (7.372G without the "
                         "attention matmuls)"),
]


# V1 Table 2: resource per layer type for MobileNet-224 1.0, (% of Mult-Adds, % of parameters).
# The paper prints 1.19% Mult-Adds for "Conv 3x3"; its four rows then sum to 99.29%. With 1.91 (the same
# digits transposed) they sum to 100.00%, and 1.91 is what the stem conv costs (10.8M of 569M): a misprint.
V1_TABLE2: dict[str, tuple[float, float]] = {
    "pointwise conv": (94.86, 74.59),
    "depthwise conv": (3.06, 1.06),
    "full conv": (1.91, 0.02),  # printed 1.19 (see above)
    "fully connected": (0.18, 24.33),
}
