"""Deployment: batch-norm folding, export to ONNX / TFLite (LiteRT) / ExecuTorch (XNNPACK) / TorchScript with
a check in each runtime right after writing, int8 post-training quantization, and the speed benchmark. Every
exported file carries a metadata document (task, preprocessing, class names; for detectors the default boxes
and post-processing), verified task by task (``dense.py``).

The names below are imported on first use: ``options.py`` (the formats, suffixes) is torch-free."""

from __future__ import annotations

import importlib

from .options import FORMATS, SUFFIXES

# public name -> the module (relative to this package) that defines it
_LAZY = {
    "FP32_RTOL": "core", "INT8_FORMATS": "core", "ExportReport": "core", "default_output": "core",
    "export_model": "core",
    "default_boxes_from": "dense", "detect_artifact": "dense",
    "fold_batchnorm": "fuse", "fold_conv_bn": "fuse",
    "Artifact": "runtimes", "load_artifact": "runtimes", "read_metadata": "runtimes",
}

__all__ = ["export_model", "default_output", "ExportReport", "fold_batchnorm", "fold_conv_bn", "load_artifact",
           "Artifact", "FORMATS", "SUFFIXES", "INT8_FORMATS", "FP32_RTOL", "read_metadata", "detect_artifact",
           "default_boxes_from"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value
