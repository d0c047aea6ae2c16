"""Deployment: batch-norm folding, export to ONNX / TFLite (LiteRT) / ExecuTorch (XNNPACK) / TorchScript with
a check in each runtime right after writing, int8 post-training quantization, and the speed benchmark. Detectors
and segmenters export their tensor-only forward with a metadata document (preprocessing, classes, and for
detectors the default boxes and post-processing), verified task by task (``dense.py``)."""

from .core import FP32_RTOL, INT8_FORMATS, ExportReport, default_output, export_model
from .dense import default_boxes_from, detect_artifact
from .fuse import fold_batchnorm, fold_conv_bn
from .runtimes import FORMATS, Artifact, load_artifact, read_metadata

__all__ = ["export_model", "default_output", "ExportReport", "fold_batchnorm", "fold_conv_bn", "load_artifact",
           "Artifact", "FORMATS", "INT8_FORMATS", "FP32_RTOL", "read_metadata", "detect_artifact",
           "default_boxes_from"]
