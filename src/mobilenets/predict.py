"""Classify images with weights from any supported file: top-k labels and probabilities."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import torch

from .errors import MobileNetsError

__all__ = ["Prediction", "predict", "load_image"]


@dataclass(frozen=True)
class Prediction:
    """The top classes for one image: (label, probability) pairs, most probable first; or, for an image that
    could not be read (``predict(..., strict=False)``), no classes and ``error``: the one-line reason."""

    image: str
    top: list[tuple[str, float]]
    error: str | None = None


def load_image(path: str | os.PathLike):
    """An RGB PIL image, or a one-line :class:`MobileNetsError` for anything that is not an image file
    (decompression bombs included)."""
    from .data import open_image

    return open_image(path)


def _task(name: str) -> str:
    from .weights.dense import task_of

    return task_of(name)


@torch.no_grad()
def predict(weights: str | os.PathLike, images: Sequence[str | os.PathLike] | str | os.PathLike, *, top: int = 5,
            name: str | None = None, width: float | None = None, tf: bool | None = None,
            keep_background: bool = False, refresh: bool = False, strict: bool = True) -> list[Prediction]:
    """Top-``top`` classes of each image under ``weights`` (path or URL, any supported format), using the
    preprocessing stored with (our checkpoints) or implied by (the format) the weights, and their class
    names (ImageNet for 1000/1001-class files; "class i" where a file names none). ``images``: image paths
    (or one path). An unreadable image is a :class:`MobileNetsError` (``strict``, checked before the model
    loads), or with ``strict=False`` a :class:`Prediction` with its ``error`` while the others are classified."""
    from .weights import model_from_weights

    if isinstance(images, (str, os.PathLike)):
        images = [images]
    if not isinstance(top, int) or isinstance(top, bool) or top < 1:
        raise MobileNetsError(f"top must be an integer >= 1, got {top!r}")
    pil: list = []  # every image read before the (slower) model load: a bad one fails fast
    for p in images:
        try:
            pil.append(load_image(p))
        except MobileNetsError as e:
            if strict:
                raise
            pil.append(e)
    if pil and all(isinstance(img, MobileNetsError) for img in pil):
        return [Prediction(str(p), [], str(e)) for p, e in zip(images, pil)]
    model, report = model_from_weights(weights, name=name, width=width, tf=tf, keep_background=keep_background,
                                       refresh=refresh)
    model.eval()
    task = getattr(model, "config", None) and _task(model.config.name)
    if task != "classification":
        command = {"detection": "detect", "segmentation": "segment"}.get(task, "eval")
        raise MobileNetsError(f"{weights}: a {task} model ({model.config.name}), not a classifier: use "
                              f"'mobilenets {command}'")
    n = model.config.num_classes
    if n == 0:
        raise MobileNetsError(f"{weights}: these weights have no classifier; nothing to predict")
    if model.config.in_chans != 3:
        raise MobileNetsError(f"{weights}: a model for {model.config.in_chans}-channel inputs; predict reads RGB "
                              "images (3 channels)")
    names = report.info.names_for(n, keep_background=keep_background) or [f"class {i}" for i in range(n)]
    transform = report.info.preprocessing.transform()
    out = []
    for path, img in zip(images, pil):
        if isinstance(img, MobileNetsError):
            out.append(Prediction(str(path), [], str(img)))
            continue
        probs = model(transform(img)[None]).softmax(1)[0]
        values, indices = probs.topk(min(top, n))
        out.append(Prediction(str(path), [(names[i], float(v)) for v, i in zip(values.tolist(), indices.tolist())]))
    return out
