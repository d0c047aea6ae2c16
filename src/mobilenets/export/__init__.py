"""Deployment: batch-norm folding, export to ONNX / TFLite (LiteRT) / ExecuTorch (XNNPACK) / TorchScript with
a check in each runtime right after writing, int8 post-training quantization, and the speed benchmark."""

from .core import FP32_RTOL, INT8_FORMATS, ExportReport, default_output, export_model
from .fuse import fold_batchnorm, fold_conv_bn
from .runtimes import FORMATS, Artifact, load_artifact

__all__ = ["export_model", "default_output", "ExportReport", "fold_batchnorm", "fold_conv_bn", "load_artifact",
           "Artifact", "FORMATS", "INT8_FORMATS", "FP32_RTOL"]
