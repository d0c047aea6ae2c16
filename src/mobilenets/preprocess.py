"""Input preprocessing that travels with weights: how pixels become the tensor a model was trained on."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

__all__ = ["Preprocessing", "IMAGENET", "TF_INCEPTION"]


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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in cls.__dataclass_fields__})

    def with_size(self, crop: int) -> "Preprocessing":
        """The same preprocessing for another input size, keeping the crop fraction."""
        return Preprocessing(crop, round(crop * self.resize / self.crop), self.mean, self.std, self.interpolation)

    def transform(self):
        """The torchvision (transforms v2) eval pipeline: PIL image or uint8 tensor in, float tensor out."""
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
