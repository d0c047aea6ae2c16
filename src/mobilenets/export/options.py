"""The names the ``export`` and ``bench`` commands offer, in a module that imports nothing heavy: the command
line's ``--help`` reads them without importing torch or a runtime (the modules using them re-export them)."""

from __future__ import annotations

__all__ = ["FORMATS", "SUFFIXES", "EXTRAS", "INT8_FORMATS", "DEFAULT_CHECK_IMAGES", "BENCH_RUNTIMES", "BENCH_MODELS",
           "DENSE_MODELS"]

FORMATS = ("onnx", "tflite", "executorch", "torchscript")
SUFFIXES = {"onnx": ".onnx", "tflite": ".tflite", "executorch": ".pte", "torchscript": ".pt"}
INT8_FORMATS = ("onnx", "tflite", "executorch")  # post-training int8 (export.core)
# the pip extra that provides each format's exporter and runtime
EXTRAS = {"onnx": "onnx", "tflite": "tflite-export", "executorch": "executorch", "torchscript": None}
DEFAULT_CHECK_IMAGES = 32  # val images the dense verification runs on (export.dense)

# bench: the runtimes a row can skip, the rows run by default
BENCH_RUNTIMES = ("onnx", "tflite", "executorch", "int8", "compile")
BENCH_MODELS = ("mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "mobilenet_v4_conv_small",
                "mobilenet_v4_conv_medium", "ssdlite_mobilenet_v3_large", "lraspp_mobilenet_v3_large")
# the dense rows: our model, its torchvision peer, the input side they are timed at (torchvision's evaluation
# sizes: SSDLite's fixed 320x320 transform, LR-ASPP's resize to 520)
DENSE_MODELS = {"ssdlite_mobilenet_v3_large": ("detection", "ssdlite320_mobilenet_v3_large", 320),
                "lraspp_mobilenet_v3_large": ("segmentation", "lraspp_mobilenet_v3_large", 520)}
