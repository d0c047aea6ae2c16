"""Weights from every ecosystem: mobilenets checkpoints, torchvision and timm state dicts, Keras
Applications .h5 files and TFLite flatbuffers, from a path or a cached URL.

- :func:`load_weights` (model, source) -> :class:`LoadReport`: load into an existing model, all or nothing.
- :func:`model_from_weights` (source) -> (model, report): build the model the file holds and load it
  (``create_model(name, weights=source)`` does the same).
- :func:`inspect_weights` (source) -> :class:`WeightsInfo`: format, architecture, width, classes, options,
  preprocessing, without building anything.
- :func:`download_weights` (published name) -> (entry, path): fetch published weights into the cache.

One module per format holds its key table: ``torchvision.py``, ``timm.py``, ``keras.py``, ``tflite.py``,
``ours.py``; ``layout.py`` the shared neutral naming and architecture inference; ``formats.py`` detects a
file's kind from its full signature, ``validate.py`` holds the checks every file passes, ``source.py`` the
download cache. Detectors and segmenters: ``torchvision_detection.py`` (torchvision's SSDLite),
``torchvision_segmentation.py`` (its LR-ASPP), ``tflite_deeplab.py`` (TF DeepLab's DeepLabv3-MobileNetV2
TFLite file) and ``dense.py`` (their routing, and our checkpoints of them). Anything wrong with a file or an
argument is one :class:`~mobilenets.MobileNetsError`.
"""

from .core import (LoadReport, WeightsInfo, convert_weights, download_weights, inspect_weights, load_weights,
                   model_from_weights, read_weights)
from .source import cache_dir, resolve_source

__all__ = ["load_weights", "model_from_weights", "inspect_weights", "read_weights", "convert_weights",
           "download_weights", "LoadReport", "WeightsInfo", "resolve_source", "cache_dir"]
