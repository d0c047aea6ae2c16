"""Input preprocessing that travels with weights: how pixels become the tensor a model was trained on."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .errors import MobileNetsError

__all__ = ["Preprocessing", "IMAGENET", "TF_INCEPTION", "INTERPOLATIONS", "MAX_CROP", "MAX_RESIZE"]

INTERPOLATIONS = ("nearest", "nearest_exact", "bilinear", "bicubic")  # torchvision's resize modes for images
MAX_CROP = 2048  # the largest input side a model is run at (train --resolution, export --input-size)
MAX_RESIZE = 8192


@dataclass(frozen=True)
class Preprocessing:
    """RGB image -> normalised tensor: resize the shorter side to ``resize``, center-crop ``crop``
    (``crop_pct = crop / resize``), scale to [0, 1], subtract ``mean``, divide by ``std``.

    ``IMAGENET``: torchvision's and timm's convention (ImageNet mean/std, 256 -> 224).
    ``TF_INCEPTION``: TensorFlow/Keras/TFLite MobileNets, x / 127.5 - 1, i.e. mean = std = 0.5, central
    crop 87.5% (tf-slim's eval preprocessing).
    """

    crop: int = 224
    resize: int = 256
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        """Every field checked (a :class:`MobileNetsError` naming it): integer sizes with
        32 <= crop <= resize <= 8192 (crop at most 2048), 1 or 3 finite means, positive finite stds as many,
        a known interpolation."""
        def integer(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def numbers(v) -> bool:
            return isinstance(v, (tuple, list)) and len(v) in (1, 3) and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)

        if not (integer(self.crop) and 32 <= self.crop <= MAX_CROP):
            raise MobileNetsError(f"crop must be an integer in [32, {MAX_CROP}], got {self.crop!r}")
        if not (integer(self.resize) and self.crop <= self.resize <= MAX_RESIZE):
            raise MobileNetsError(f"resize must be an integer in [crop = {self.crop}, {MAX_RESIZE}], got "
                                  f"{self.resize!r}")
        if not numbers(self.mean):
            raise MobileNetsError(f"mean must be 1 or 3 finite numbers, got {self.mean!r}")
        if not (numbers(self.std) and len(self.std) == len(self.mean) and all(x > 0 for x in self.std)):
            raise MobileNetsError(f"std must be {len(self.mean)} finite numbers > 0 (one per mean), got {self.std!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise MobileNetsError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got "
                                  f"{self.interpolation!r}")
        object.__setattr__(self, "mean", tuple(float(x) for x in self.mean))
        object.__setattr__(self, "std", tuple(float(x) for x in self.std))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        """From :meth:`to_dict`'s form (unknown keys ignored); fields checked as the constructor does."""
        if not isinstance(d, dict):
            raise MobileNetsError(f"preprocessing must be a JSON object, got {type(d).__name__}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in cls.__dataclass_fields__})

    def with_size(self, crop: int) -> "Preprocessing":
        """The same preprocessing for another input size, keeping the crop fraction."""
        return Preprocessing(crop, round(crop * self.resize / self.crop), self.mean, self.std, self.interpolation)

    def transform(self):
        """The torchvision (transforms v2) eval pipeline: PIL image or uint8 tensor in, float tensor out."""
        import torch
        from torchvision.transforms import v2

        return v2.Compose([
            v2.ToImage(),
            v2.Resize(self.resize, interpolation=getattr(v2.InterpolationMode, self.interpolation.upper()),
                      antialias=True),
            v2.CenterCrop(self.crop),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(self.mean, self.std),
        ])


IMAGENET = Preprocessing()
TF_INCEPTION = Preprocessing(crop=224, resize=256, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
