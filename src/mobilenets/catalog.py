"""Every registered model at its published widths and resolutions, measured beside the published figures."""

from __future__ import annotations

from dataclasses import dataclass

from .factory import create_model
from .profile import profile
from .published import PUBLISHED, Published
from .registry import get_model_entry, list_models

__all__ = ["CatalogRow", "model_catalog", "within_published"]

# How close a faithful build must come to the papers' figures (the papers round, and count batch norm
# and the 1001-class TF head inconsistently): MAdds within 1.5% or 0.6M (or half the printed figure's rounding
# step: V4 prints 0.1G), params within 3.5% or equal at the printed precision.
MADDS_REL_TOL, MADDS_ABS_TOL_M = 0.015, 0.6
PARAMS_REL_TOL = 0.035


@dataclass(frozen=True)
class CatalogRow:
    model: str
    width: float
    resolution: int
    params: int
    madds: int
    published: Published | None

    @property
    def madds_ok(self) -> bool | None:
        return within_published(self)[0]

    @property
    def params_ok(self) -> bool | None:
        return within_published(self)[1]


def _printed_precision_equal(value_m: float, published_m: float) -> bool:
    text = repr(published_m)
    digits = len(text.split(".")[1]) if "." in text else 0
    return round(value_m, digits) == published_m


def within_published(row: CatalogRow) -> tuple[bool | None, bool | None]:
    """(MAdds ok, params ok) against the published figure; None where nothing was published or the figure is
    documented as not reproducible (``madds_note`` / ``params_note``)."""
    pub = row.published
    if pub is None:
        return None, None
    madds_m, params_m = row.madds / 1e6, row.params / 1e6
    madds_ok = params_ok = None
    if not pub.madds_note:
        madds_ok = abs(madds_m - pub.madds_m) <= max(MADDS_REL_TOL * pub.madds_m, MADDS_ABS_TOL_M,
                                                     pub.madds_step_m / 2)
    if not pub.params_note:
        params_ok = abs(params_m - pub.params_m) <= PARAMS_REL_TOL * pub.params_m or _printed_precision_equal(
            params_m, pub.params_m
        )
    return madds_ok, params_ok


def model_catalog(names: list[str] | None = None) -> list[CatalogRow]:
    """One row per registered model and published (width, resolution), plus each model at width 1.0 / 224
    if unpublished. Params are for a 1000-class model (torchvision's and timm's convention)."""
    rows = []
    for name in names or list_models():
        pubs = [p for p in PUBLISHED if p.model == name]
        keys = [(p.width, p.resolution) for p in pubs]
        for w in get_model_entry(name).published_widths:
            if (w, 224) not in keys:
                keys.append((w, 224))
        models = {}
        for width, res in keys:
            if width not in models:
                models[width] = create_model(name, width=width)
            prof = profile(models[width], res)
            pub = next((p for p in pubs if (p.width, p.resolution) == (width, res)), None)
            rows.append(CatalogRow(name, width, res, prof.params, prof.madds, pub))
    return rows
