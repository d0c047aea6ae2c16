"""The papers' published ImageNet figures (MAdds, params, top-1), as data.

Sources: V1 Tables 6-7 (arXiv 1704.04861), V2 Table 4 / Figure 5 and the TF-slim release table
(arXiv 1801.04381), V3 Tables 3 and 5 (arXiv 1905.02244v5) and the TF-slim V3 release table; see SPEC.md.
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
