"""The 1000 ImageNet-1k class names, in the standard synset order shared by torchvision, timm, Keras and the
TF-slim releases (whose 1001-class heads put "background" at index 0 before these)."""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files

__all__ = ["imagenet_labels"]


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 class names; index k is the class of logit k of a 1000-class ImageNet model."""
    text = files("mobilenets").joinpath("imagenet_labels.txt").read_text(encoding="utf-8")
    labels = tuple(line for line in text.splitlines() if line)
    assert len(labels) == 1000, "imagenet_labels.txt must hold exactly 1000 names"
    return labels
