"""Published MobileNet weight files by name: where each ecosystem hosts them, how to check them, what they score.

A catalog entry names one public file (``torchvision:mobilenet_v3_large.IMAGENET1K_V2``,
``timm:mobilenetv3_large_100.ra_in1k``, ``keras:mobilenetv2_1.00_224``, ``tflite:mobilenet_v2_1.0_224_quant``):
its URL, the hash its publisher gives (a full sha256, an md5, or the sha256 prefix torchvision and timm put in
their file names), the model it loads into, the published accuracy and the preprocessing it was evaluated with.
:func:`lookup` turns what a user writes into an entry (a full name, a bare tag, ``"torchvision"`` / ``"timm"`` /
``"keras"`` / ``"tflite"``, a torchvision enum name such as ``"IMAGENET1K_V1"`` or a ``*_Weights`` member),
:func:`default_weights` picks the best-known file of a model (``pretrained=True``) and :func:`fetch` downloads
one into the cache of :mod:`~mobilenets.weights.source` (with its safety checks: atomic, complete, not HTML,
hash-checked, parsed before it counts as cached).

Every figure below is copied from the source named beside it; nothing is measured here. This module imports
neither torch nor the models, so listing the catalog is cheap.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import MobileNetsError, file_mode, one_line

__all__ = ["PublishedWeights", "PUBLISHED_WEIGHTS", "CATALOG", "SOURCES", "lookup", "default_weights",
           "published_for", "fetch", "download", "is_cached", "is_available", "cached_path"]

SOURCES = ("torchvision", "timm", "keras", "tflite")

_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class PublishedWeights:
    """One published weights file.

    ``name`` is ``"<source>:<tag>"`` with ``tag`` the publisher's own name for the file; ``model`` / ``width``
    the registered model it loads into (an entry whose model is not registered in this build is listed but
    refused, see :func:`is_available`). ``top1`` is the published figure for ``metric`` (ImageNet-1k top-1 for
    classifiers, COCO box mAP or VOC-label mIoU for dense models), ``None`` where the cited sources give none.
    Hashes: ``sha256`` (the whole digest, where published), ``sha256_prefix`` (the leading hex digits that
    torchvision and timm put in the file name, checked as ``torch.hub`` does, see ``torch.hub.HASH_REGEX``),
    ``md5`` (Keras's ``get_file`` hash), all of the downloaded file (the archive, for ``archive`` entries,
    whose weights are the one ``.tflite`` file inside). ``tf``: TensorFlow-trained weights in a file that cannot say so (timm
    ``tf_*``): TF "SAME" padding and BN eps 1e-3. ``crop`` .. ``interpolation``: the evaluation preprocessing
    (``None``: the format's default, see :mod:`mobilenets.preprocess`). ``cited``: where the figures come from.
    """

    source: str
    tag: str
    model: str
    width: float | None
    url: str
    top1: float | None
    cited: str
    metric: str = "top-1"
    sha256: str | None = None
    sha256_prefix: str | None = None
    md5: str | None = None
    tf: bool = False
    crop: int | None = None
    resize: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    interpolation: str = "bilinear"
    num_classes: int = 1000
    archive: bool = False  # the URL is a .tgz release archive; the weights are the .tflite file inside


    @property
    def name(self) -> str:
        return f"{self.source}:{self.tag}"

    @property
    def file_name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    def preprocessing(self):
        """The :class:`~mobilenets.Preprocessing` the publisher evaluated with (None: the format's default)."""
        if self.mean is None:
            return None
        from ..preprocess import Preprocessing

        return Preprocessing(self.crop, self.resize, self.mean, self.std, self.interpolation)


# ------------------------------------------------------------------------------------------------ torchvision
# URLs, acc@1 / box_map / miou and transforms from torchvision 0.29.1's weight enums
# (torchvision.models.MobileNet_V2_Weights, MobileNet_V3_Large_Weights, MobileNet_V3_Small_Weights,
# detection.SSDLite320_MobileNet_V3_Large_Weights, segmentation.LRASPP_MobileNet_V3_Large_Weights,
# segmentation.DeepLabV3_MobileNet_V3_Large_Weights: .url, .meta["_metrics"], .transforms). The hex digits
# after the last "-" of each file name are the leading digits of its sha256 (torch.hub.HASH_REGEX, checked by
# torch.hub.download_url_to_file(hash_prefix=...)). The V2 recipe evaluates after a resize to 232.
_TV = "https://download.pytorch.org/models/"
_TV_CITE = "torchvision 0.29.1 {} weights enum"


def _tv(builder: str, enum: str, model: str, file: str, top1: float, *, metric: str = "top-1",
        resize: int = 256, crop: int = 224, cls: str, num_classes: int = 1000) -> PublishedWeights:
    dense = metric != "top-1"
    return PublishedWeights(
        "torchvision", f"{builder}.{enum}", model, 1.0, _TV + file, top1, _TV_CITE.format(cls), metric,
        sha256_prefix=re.search(r"-([a-f0-9]+)\.", file)[1],
        crop=None if dense else crop, resize=None if dense else resize,
        mean=None if dense else _IMAGENET_MEAN, std=None if dense else _IMAGENET_STD, num_classes=num_classes)


_TORCHVISION = [
    _tv("mobilenet_v2", "IMAGENET1K_V1", "mobilenet_v2", "mobilenet_v2-b0353104.pth", 71.878,
        cls="MobileNet_V2_Weights"),
    _tv("mobilenet_v2", "IMAGENET1K_V2", "mobilenet_v2", "mobilenet_v2-7ebf99e0.pth", 72.154, resize=232,
        cls="MobileNet_V2_Weights"),
    _tv("mobilenet_v3_large", "IMAGENET1K_V1", "mobilenet_v3_large", "mobilenet_v3_large-8738ca79.pth", 74.042,
        cls="MobileNet_V3_Large_Weights"),
    _tv("mobilenet_v3_large", "IMAGENET1K_V2", "mobilenet_v3_large", "mobilenet_v3_large-5c1a4163.pth", 75.274,
        resize=232, cls="MobileNet_V3_Large_Weights"),
    _tv("mobilenet_v3_small", "IMAGENET1K_V1", "mobilenet_v3_small", "mobilenet_v3_small-047dcff4.pth", 67.668,
        cls="MobileNet_V3_Small_Weights"),
    _tv("ssdlite320_mobilenet_v3_large", "COCO_V1", "ssdlite_mobilenet_v3_large",
        "ssdlite320_mobilenet_v3_large_coco-a79551df.pth", 21.3, metric="COCO box mAP",
        cls="SSDLite320_MobileNet_V3_Large_Weights", num_classes=91),
    _tv("lraspp_mobilenet_v3_large", "COCO_WITH_VOC_LABELS_V1", "lraspp_mobilenet_v3_large",
        "lraspp_mobilenet_v3_large-d234d4ea.pth", 57.9, metric="VOC-label mIoU", num_classes=21,
        cls="LRASPP_MobileNet_V3_Large_Weights"),
    # No registered model loads it yet (our DeepLabv3 is TF DeepLab's MobileNetV2 one): listed, refused.
    _tv("deeplabv3_mobilenet_v3_large", "COCO_WITH_VOC_LABELS_V1", "deeplabv3_mobilenet_v3_large",
        "deeplabv3_mobilenet_v3_large-fc3c493d.pth", 60.3, metric="VOC-label mIoU", num_classes=21,
        cls="DeepLabV3_MobileNet_V3_Large_Weights"),
]

# ------------------------------------------------------------------------------------------------------ timm
# URLs and preprocessing from timm 1.0.31's pretrained configs (timm.models._registry.get_pretrained_cfg(tag):
# .url, .hf_hub_id, .input_size, .crop_pct -> resize = round(crop / crop_pct), .mean, .std, .interpolation).
# Files timm also hosts as GitHub release assets carry a sha256 prefix in their name (timm checks it with
# torch.hub's HASH_REGEX, timm/models/_hub.py); the others come from the Hugging Face Hub repo hf_hub_id
# (model.safetensors, no published hash). Top-1 at the training resolution: _RESULTS =
# huggingface/pytorch-image-models results/results-imagenet.csv (commit 0173a139), _NOTES = its README.md
# release notes (June 12, July 26 and August 2024 tables, "img_size" = the training resolution rows).
_GH = "https://github.com/rwightman/pytorch-image-models/releases/download/"
_HF = "https://huggingface.co/timm/{}/resolve/main/model.safetensors"
_RESULTS = "timm results/results-imagenet.csv (commit 0173a139); URL and preprocessing: timm 1.0.31 pretrained_cfg"
_NOTES = "timm README.md release notes (2024); URL and preprocessing: timm 1.0.31 pretrained_cfg"


def _timm(tag: str, model: str, width: float, top1: float | None, *, gh: str | None = None, crop: int = 224,
          resize: int = 256, mean=_IMAGENET_MEAN, std=_IMAGENET_STD, interpolation: str = "bicubic",
          cited: str = _RESULTS) -> PublishedWeights:
    prefix = re.search(r"-([a-f0-9]+)\.", gh)[1] if gh else None
    return PublishedWeights("timm", tag, model, width, _GH + gh if gh else _HF.format(tag), top1, cited,
                            sha256_prefix=prefix, tf=tag.startswith("tf_"), crop=crop, resize=resize,
                            mean=tuple(mean), std=tuple(std), interpolation=interpolation)


_TF_TIMM = {"mean": _HALF, "std": _HALF, "interpolation": "bilinear"}
_TIMM = [
    _timm("mobilenetv1_100.ra4_e3600_r224_in1k", "mobilenet_v1", 1.0, 75.382, mean=_HALF, std=_HALF,
          cited=_NOTES),
    _timm("mobilenetv1_125.ra4_e3600_r224_in1k", "mobilenet_v1", 1.25, 76.924, resize=249, mean=_HALF,
          std=_HALF, cited=_NOTES),
    _timm("mobilenetv2_050.lamb_in1k", "mobilenet_v2", 0.5, 65.950, gh="v0.1-weights/mobilenetv2_050-3d30d450.pth"),
    _timm("mobilenetv2_100.ra_in1k", "mobilenet_v2", 1.0, 72.976, gh="v0.1-weights/mobilenetv2_100_ra-b33bc2c4.pth"),
    _timm("mobilenetv2_140.ra_in1k", "mobilenet_v2", 1.4, 76.520, gh="v0.1-weights/mobilenetv2_140_ra-21a4e913.pth"),
    _timm("mobilenetv3_large_100.ra_in1k", "mobilenet_v3_large", 1.0, 75.766,
          gh="v0.1-weights/mobilenetv3_large_100_ra-f55367f5.pth"),
    # no top-1 for this file in either cited timm table
    _timm("mobilenetv3_large_100.ra4_e3600_r224_in1k", "mobilenet_v3_large", 1.0, None, resize=236, mean=_HALF,
          std=_HALF, cited="URL and preprocessing: timm 1.0.31 pretrained_cfg"),
    # ImageNet-21k pretraining (MIIL), inputs in [0, 1] (mean 0, std 1)
    _timm("mobilenetv3_large_100.miil_in21k_ft_in1k", "mobilenet_v3_large", 1.0, 77.918,
          gh="v0.1-tresnet/mobilenetv3_large_100_1k_miil_78_0-66471c13.pth", mean=(0.0, 0.0, 0.0),
          std=(1.0, 1.0, 1.0), interpolation="bilinear"),
    _timm("mobilenetv3_small_050.lamb_in1k", "mobilenet_v3_small", 0.5, 57.910,
          gh="v0.1-weights/mobilenetv3_small_050_lambc-4b7bbe87.pth"),
    _timm("mobilenetv3_small_075.lamb_in1k", "mobilenet_v3_small", 0.75, 65.234,
          gh="v0.1-weights/mobilenetv3_small_075_lambc-384766db.pth"),
    _timm("mobilenetv3_small_100.lamb_in1k", "mobilenet_v3_small", 1.0, 67.656,
          gh="v0.1-weights/mobilenetv3_small_100_lamb-266a294c.pth"),
    # Google's TF-slim weights ported by timm: TF padding and BN eps 1e-3, [-1, 1] inputs
    _timm("tf_mobilenetv3_large_075.in1k", "mobilenet_v3_large", 0.75, 73.432,
          gh="v0.1-weights/tf_mobilenetv3_large_075-150ee8b0.pth", **_TF_TIMM),
    _timm("tf_mobilenetv3_large_100.in1k", "mobilenet_v3_large", 1.0, 75.516,
          gh="v0.1-weights/tf_mobilenetv3_large_100-427764d5.pth", **_TF_TIMM),
    _timm("tf_mobilenetv3_large_minimal_100.in1k", "mobilenet_v3_large_minimal", 1.0, 72.258,
          gh="v0.1-weights/tf_mobilenetv3_large_minimal_100-8596ae28.pth", **_TF_TIMM),
    _timm("tf_mobilenetv3_small_075.in1k", "mobilenet_v3_small", 0.75, 65.728,
          gh="v0.1-weights/tf_mobilenetv3_small_075-da427f52.pth", **_TF_TIMM),
    _timm("tf_mobilenetv3_small_100.in1k", "mobilenet_v3_small", 1.0, 67.918,
          gh="v0.1-weights/tf_mobilenetv3_small_100-37f49e2b.pth", **_TF_TIMM),
    _timm("tf_mobilenetv3_small_minimal_100.in1k", "mobilenet_v3_small_minimal", 1.0, 62.890,
          gh="v0.1-weights/tf_mobilenetv3_small_minimal_100-922a7843.pth", **_TF_TIMM),
    # MobileNetV4 (timm-trained; mobilenet_v4.py, loaded through the timm key table)
    _timm("mobilenetv4_conv_small.e2400_r224_in1k", "mobilenet_v4_conv_small", 1.0, 73.756, cited=_NOTES),
    _timm("mobilenetv4_conv_small.e1200_r224_in1k", "mobilenet_v4_conv_small", 1.0, 73.454, cited=_NOTES),
    _timm("mobilenetv4_conv_medium.e500_r224_in1k", "mobilenet_v4_conv_medium", 1.0, 79.094, resize=236,
          cited=_NOTES),
    _timm("mobilenetv4_conv_medium.e500_r256_in1k", "mobilenet_v4_conv_medium", 1.0, 79.928, crop=256,
          resize=269, cited=_NOTES),
    _timm("mobilenetv4_conv_large.e500_r256_in1k", "mobilenet_v4_conv_large", 1.0, 81.862, crop=256, resize=269,
          cited=_NOTES),
    _timm("mobilenetv4_conv_large.e600_r384_in1k", "mobilenet_v4_conv_large", 1.0, 82.952, crop=384, resize=404,
          cited=_NOTES),
    _timm("mobilenetv4_hybrid_medium.e500_r224_in1k", "mobilenet_v4_hybrid_medium", 1.0, 80.442, resize=236,
          cited=_NOTES),
    _timm("mobilenetv4_hybrid_large.e600_r384_in1k", "mobilenet_v4_hybrid_large", 1.0, 83.800, crop=384,
          resize=404, cited=_NOTES),
]

# ----------------------------------------------------------------------------------------------------- Keras
# URLs from keras 3.15.1 keras/src/applications/mobilenet.py, mobilenet_v2.py, mobilenet_v3.py (BASE_WEIGHT_PATH
# + the include_top file name). md5: mobilenet_v3.py WEIGHTS_HASHES[...][0] (get_file's file_hash; V1 and V2
# files have none). Top-1: V1 / V2 at alpha 1.0 from the keras.io Applications table (MobileNet 70.4%,
# MobileNetV2 71.3%); V3 from mobilenet_v3.py's docstring table. Preprocessing: Keras's [-1, 1] (the format's
# default).
_KERAS = "https://storage.googleapis.com/tensorflow/keras-applications/"
_KERAS_IO = "keras.io Applications table; URL: keras 3.15.1 keras/src/applications/{}.py"
_KERAS_V3 = "keras 3.15.1 keras/src/applications/mobilenet_v3.py (docstring table, WEIGHTS_HASHES)"


def _keras_v1(alpha: float, text: str, top1: float | None = None) -> PublishedWeights:
    return PublishedWeights("keras", f"mobilenet_{alpha:0.2f}_224", "mobilenet_v1", alpha,
                            f"{_KERAS}mobilenet/mobilenet_{text}_224_tf.h5", top1, _KERAS_IO.format("mobilenet"))


def _keras_v2(alpha: float, top1: float | None = None) -> PublishedWeights:
    return PublishedWeights("keras", f"mobilenetv2_{alpha:0.2f}_224", "mobilenet_v2", alpha,
                            f"{_KERAS}mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_224.h5",
                            top1, _KERAS_IO.format("mobilenet_v2"))


def _keras_v3(kind: str, alpha: float, model: str, top1: float, md5: str) -> PublishedWeights:
    key = f"{kind}_224_{alpha}_float"
    return PublishedWeights("keras", f"mobilenet_v3_{key}", model, alpha,
                            f"{_KERAS}mobilenet_v3/weights_mobilenet_v3_{key}.h5", top1, _KERAS_V3, md5=md5)


_KERAS_FILES = [
    _keras_v1(1.0, "1_0", 70.4), _keras_v1(0.75, "7_5"), _keras_v1(0.5, "5_0"), _keras_v1(0.25, "2_5"),
    _keras_v2(1.0, 71.3), _keras_v2(0.35), _keras_v2(0.5), _keras_v2(0.75), _keras_v2(1.3), _keras_v2(1.4),
    _keras_v3("large", 1.0, "mobilenet_v3_large", 75.6, "59e551e166be033d707958cf9e29a6a7"),
    _keras_v3("large", 0.75, "mobilenet_v3_large", 73.3, "765b44a33ad4005b3ac83185abf1d0eb"),
    _keras_v3("large_minimalistic", 1.0, "mobilenet_v3_large_minimal", 72.3, "675e7b876c45c57e9e63e6d90a36599c"),
    _keras_v3("small", 1.0, "mobilenet_v3_small", 68.1, "8768d4c2e7dee89b9d02b2d03d65d862"),
    _keras_v3("small", 0.75, "mobilenet_v3_small", 65.4, "cb65d4e5be93758266aa0a7f2c6708b7"),
    _keras_v3("small_minimalistic", 1.0, "mobilenet_v3_small_minimal", 61.9, "99cd97fb2fcdad2bf028eb838de69e37"),
]

# ---------------------------------------------------------------------------------------------------- TFLite
# TensorFlow's quantization-aware-trained TFLite releases, from the public git copies recorded in
# ../shared/data/pretrained/PROVENANCE.md (commit, path, whole sha256 and the published top-1 with its source:
# the TF Lite hosted-models table for V2, tensorflow/models research/slim/nets/mobilenet/README.md for V3).
_TFLITE = [
    PublishedWeights(
        "tflite", "mobilenet_v2_1.0_224_quant", "mobilenet_v2", 1.0,
        "https://raw.githubusercontent.com/google-coral/test_data/104342d2d3480b3e66203073dac24f4e2dbb4c41/"
        "mobilenet_v2_1.0_224_quant.tflite", 70.8,
        "TF Lite hosted-models table; file: google-coral/test_data@104342d2 (PROVENANCE.md)",
        sha256="7aad0c74c5e3c06e5eb3c827e13304fdd68a83da6087d92ee169c24ff9fd4776", num_classes=1001),
    PublishedWeights(
        "tflite", "v3-small_224_1.0_uint8", "mobilenet_v3_small", 1.0,
        "https://raw.githubusercontent.com/ken-unger/tflite/4f1b3949b40c55c493d774a30b796c3751367eee/"
        "tflite_model/image_classification/mobilenet_v3/mobilenet_v3_small_1.0_224.uint8.tflite", 64.9,
        "tensorflow/models research/slim/nets/mobilenet/README.md; file: ken-unger/tflite@4f1b3949 "
        "(PROVENANCE.md)",
        sha256="da341cf06fa50127a72dcbeb140ee5ee98013630aa044260a4c3d45c43fc89ce", num_classes=1001),
]

# TF-slim's MobileNetV3 release archives (.tgz: checkpoints, frozen graph and a .tflite, which is what loads),
# URLs and top-1 from tensorflow/models research/slim/nets/mobilenet/README.md (commit 60c28f91). That the
# archive holds "<name>/<name>.tflite" is recorded for v3-large_224_1.0_float (apache/tvm's TFLite frontend
# test) and v3-small_224_1.0_uint8 (PROVENANCE.md); fetch takes the archive's one .tflite file.
_SLIM_V3 = "tensorflow/models research/slim/nets/mobilenet/README.md (commit 60c28f91)"


def _slim_v3(stem: str, model: str, width: float, top1: float) -> PublishedWeights:
    return PublishedWeights("tflite", stem, model, width,
                            f"https://storage.googleapis.com/mobilenet_v3/checkpoints/{stem}.tgz", top1, _SLIM_V3,
                            num_classes=1001, archive=True)


_TF_SLIM_V3 = [
    _slim_v3("v3-large_224_1.0_float", "mobilenet_v3_large", 1.0, 75.2),
    _slim_v3("v3-large_224_1.0_uint8", "mobilenet_v3_large", 1.0, 73.9),
    _slim_v3("v3-large_224_0.75_float", "mobilenet_v3_large", 0.75, 73.3),
    _slim_v3("v3-small_224_1.0_float", "mobilenet_v3_small", 1.0, 67.5),
    _slim_v3("v3-small_224_0.75_float", "mobilenet_v3_small", 0.75, 65.4),
    _slim_v3("v3-large-minimalistic_224_1.0_float", "mobilenet_v3_large_minimal", 1.0, 72.3),
    _slim_v3("v3-large-minimalistic_224_1.0_uint8", "mobilenet_v3_large_minimal", 1.0, 71.3),
    _slim_v3("v3-small-minimalistic_224_1.0_float", "mobilenet_v3_small_minimal", 1.0, 61.9),
]

PUBLISHED_WEIGHTS: tuple[PublishedWeights, ...] = (*_TORCHVISION, *_TIMM, *_KERAS_FILES, *_TFLITE, *_TF_SLIM_V3)
CATALOG: dict[str, PublishedWeights] = {w.name: w for w in PUBLISHED_WEIGHTS}
assert len(CATALOG) == len(PUBLISHED_WEIGHTS), "catalog names must be unique"

# torchvision's enum member names, accepted with a model name: weights="IMAGENET1K_V1" / "DEFAULT"
_TV_ENUM = re.compile(r"(?:[A-Za-z0-9_]+_(?:Quantized)?Weights\.)?([A-Z0-9_]+)")


def is_available(entry: PublishedWeights) -> bool:
    """Whether this build has the model ``entry`` loads into (MobileNetV4 entries wait for its models)."""
    from ..registry import _REGISTRY  # the registry module imports no model code

    if not _REGISTRY:
        from .. import factory  # noqa: F401  (fill the registry)
    return entry.model in _REGISTRY


def published_for(model: str | None = None, width: float | None = None, *,
                  source: str | None = None) -> list[PublishedWeights]:
    """The catalog entries of ``model`` (None: all) at ``width`` (None: any), from ``source`` (None: any)."""
    return [w for w in CATALOG.values()
            if (model is None or w.model == model) and (source is None or w.source == source)
            and (width is None or w.width is None or abs(w.width - width) < 1e-9)]


def _rank(entry: PublishedWeights) -> tuple:
    # Best known = the highest published figure; a file whose inputs are not one of the two usual
    # normalisations (ImageNet mean/std, or [-1, 1]) is never the default, since code written for the usual
    # transforms would feed it the wrong range (timm's MIIL V3-Large wants [0, 1]).
    usual = entry.mean in (None, _IMAGENET_MEAN, _HALF)
    return (usual, entry.top1 is not None, entry.top1 or 0.0)


def default_weights(model: str, width: float | None = None, *, source: str | None = None,
                    alias: str | None = None) -> PublishedWeights:
    """The best-known file for ``model`` at ``width`` (default 1.0; from ``source`` if given): the highest
    published figure among the catalog's files of that model; with ``alias`` (the timm / torchvision model name
    the caller used), that library's own best file of that name if the catalog has one. A model without
    published weights is a :class:`MobileNetsError` listing the widths that have some."""
    width = 1.0 if width is None else width
    if alias is not None:
        own = [w for w in published_for(model, width, source=source)
               if w.tag.split(".")[0] == alias and w.source in ("timm", "torchvision")]
        if own:
            return max(own, key=_rank)
    found = [w for w in published_for(model, width, source=source) if _rank(w)[0] and w.top1 is not None]
    if not found:
        found = published_for(model, width, source=source)
    if not found:
        widths = sorted({w.width for w in published_for(model, source=source) if w.width is not None})
        where = f" from {source}" if source else ""
        if widths:
            raise MobileNetsError(f"no published {model} weights{where} at width {width:g}; widths with published "
                                  f"weights: {', '.join(f'{x:g}' for x in widths)} (see 'mobilenets weights')")
        raise MobileNetsError(f"no published weights{where} for {model} (see 'mobilenets weights' for the catalog)")
    return max(found, key=_rank)


def lookup(reference, *, model: str | None = None, width: float | None = None) -> PublishedWeights | None:
    """The catalog entry ``reference`` names, or None if it is not a catalog reference (a path, a URL).

    Accepted: a full name (``"timm:mobilenetv3_large_100.ra_in1k"``), a tag alone when only one entry has it
    (``"mobilenetv3_large_100.ra_in1k"``), a source and the library's model name (``"timm:mobilenetv3_large_100"``,
    ``"torchvision:mobilenet_v2"``: the best file of that name), a source (``"torchvision"``, ``"timm"``, ``"keras"``, ``"tflite"``:
    its best file of ``model``), a torchvision enum member or its name (``"IMAGENET1K_V1"``, ``"DEFAULT"``,
    ``"MobileNet_V3_Large_Weights.IMAGENET1K_V2"``; with ``model``). An existing file of that name is a path,
    not a reference. A name that looks like a reference but matches nothing is a :class:`MobileNetsError` with
    the close names.
    """
    enum_url = getattr(reference, "url", None)
    if isinstance(enum_url, str) and hasattr(reference, "meta"):  # a torchvision weights enum member itself
        for w in CATALOG.values():
            if w.url == enum_url:
                return w
        raise MobileNetsError(f"{one_line(str(reference), 120)}: not a MobileNet weights file of the catalog")
    if not isinstance(reference, str) or "/" in reference or "\\" in reference or os.path.exists(reference):
        return None
    text = reference.strip()
    if text in CATALOG:
        return CATALOG[text]
    by_tag = [w for w in CATALOG.values() if w.tag == text]
    if len(by_tag) == 1:
        return by_tag[0]
    source, colon, rest = text.partition(":")
    if colon and source in SOURCES:
        if rest in ("", "default", "DEFAULT"):
            return _for_model(text, model, width, source=source)
        if source == "torchvision" and (m := _TV_ENUM.fullmatch(rest)):
            return _torchvision_enum(text, m[1], model)
        named = [w for w in CATALOG.values() if w.source == source and w.tag.split(".")[0] == rest]
        if named:  # a library's model name without its tag, as timm resolves it: that model's best file
            return max(named, key=_rank)
        raise MobileNetsError(f"unknown published weights {text!r}{_close(text)}")
    if text in SOURCES:
        return _for_model(text, model, width, source=text)
    m = _TV_ENUM.fullmatch(text)
    if m and ("_Weights." in text or m[1] == "DEFAULT" or re.fullmatch(r"[A-Z0-9]+(?:_[A-Z0-9]+)*_V\d+", m[1])):
        return _torchvision_enum(text, m[1], model)
    return None


def _close(text: str) -> str:
    by_text = {**{w.tag: w.name for w in CATALOG.values()}, **{n: n for n in CATALOG}}
    close = dict.fromkeys(by_text[c] for c in difflib.get_close_matches(text, list(by_text), n=6, cutoff=0.6))
    return f"; did you mean {' or '.join(list(close)[:3])}?" if close else "; 'mobilenets weights' lists the catalog"


def _need_model(text: str, model: str | None) -> str:
    if model is None:
        raise MobileNetsError(f"{text!r} names published weights only together with a model (create_model(name, "
                              f"weights={text!r}), or --model); full names such as "
                              "'timm:mobilenetv3_large_100.ra_in1k' stand alone ('mobilenets weights' lists them)")
    return model


def _for_model(text: str, model: str | None, width: float | None, *, source: str) -> PublishedWeights:
    return default_weights(_need_model(text, model), width, source=source)


def _torchvision_enum(text: str, member: str, model: str | None) -> PublishedWeights:
    model = _need_model(text, model)
    found = published_for(model, source="torchvision")
    if member == "DEFAULT" and found:
        return max(found, key=_rank)  # torchvision's DEFAULT is its best (IMAGENET1K_V2 where there is one)
    for w in found:
        if w.tag.endswith("." + member):
            return w
    have = ", ".join(w.tag.rsplit(".", 1)[1] for w in found)
    raise MobileNetsError(f"torchvision publishes no {member} weights for {model}"
                          + (f" (it has {have})" if have else ""))


# ---------------------------------------------------------------------------------------------------- fetch


def cached_path(entry: PublishedWeights) -> Path:
    """Where the download of ``entry`` lives in the cache (whether or not it is there); for an archive, the
    weights file taken out of it (named after the archive, so no member name ever becomes a path)."""
    from .source import cache_path

    path = cache_path(entry.url)
    if entry.archive:
        return path.with_name(re.sub(r"\.(tgz|tar\.gz)$", "", path.name) + ".tflite")
    return path


def is_cached(entry: PublishedWeights) -> bool:
    return cached_path(entry).is_file()


def _digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(entry: PublishedWeights, path: Path) -> None:
    if entry.sha256_prefix and not (got := _digest(path, "sha256")).startswith(entry.sha256_prefix):
        raise MobileNetsError(f"sha256 mismatch: the published file name says {entry.sha256_prefix}..., the "
                              f"download hashes to {got[:len(entry.sha256_prefix)]}... (nothing cached)")
    if entry.md5 and (got := _digest(path, "md5")) != entry.md5:
        raise MobileNetsError(f"md5 mismatch: published {entry.md5}, the download hashes to {got} (nothing cached)")


# A file reader for fetch: check(path, label) reads the file at path (naming it label in its errors) and raises
# MobileNetsError if it is not weights it can load.
Check = Callable[[Path, str], object]


def _checked(path: Path, label: str, check: Check | None, *, hashes: PublishedWeights | None = None,
             kind: str | None = None) -> None:
    """``path`` passes the published hashes of ``hashes`` (an entry), reads as a weights file (of ``kind``) and
    passes ``check``; every error is one line naming ``label``."""
    from .formats import detect_format

    try:
        if hashes is not None:
            _verify(hashes, path)
        if detect_format(path, label) != kind and kind is not None:
            raise MobileNetsError(f"not a {kind} file")
        if check is not None:
            check(path, label)
    except MobileNetsError as e:
        msg = str(e)
        raise MobileNetsError(msg if msg.startswith(label) else f"{label}: {msg}") from None


def fetch(entry: PublishedWeights, *, refresh: bool = False, progress: bool | None = None,
          timeout: float | None = None, deadline: float | None = None, check: Check | None = None) -> Path:
    """The local file of ``entry``: downloaded once (with a progress bar on a terminal) into the cache, checked
    against its published hash and read by ``check`` (the weights reader; else only its format is detected)
    before it counts as cached; afterwards the cached file, hash checked and read again (a cached file that
    fails says to delete it or refresh). Raises :class:`MobileNetsError` for an entry whose model is not in this
    build, and for anything :func:`~mobilenets.weights.source.open_source` or ``check`` refuses."""
    from .source import DEFAULT_DEADLINE, DEFAULT_TIMEOUT, open_source

    if not is_available(entry):
        raise MobileNetsError(f"{entry.name}: its model {entry.model} is not in this version of mobilenets "
                              "(listed for reference)")
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    deadline = DEFAULT_DEADLINE if deadline is None else deadline
    if entry.archive:
        return _fetch_from_archive(entry, refresh=refresh, progress=progress, timeout=timeout, deadline=deadline,
                                   check=check)
    with open_source(entry.url, sha256=entry.sha256, refresh=refresh, progress=progress, timeout=timeout,
                     deadline=deadline) as src:
        _checked(src.path, f"{entry.name} ({src.label})", check, hashes=entry)
    return src.final


def download(reference, *, model: str | None = None, width: float | None = None, refresh: bool = False,
             check: Check | None = None) -> tuple[PublishedWeights, Path]:
    """Fetch the published file ``reference`` names (see :func:`lookup`; ``model`` for the short forms) into
    the cache (read by ``check`` first, see :func:`fetch`): (entry, local path). Anything that is not a catalog
    reference is a :class:`MobileNetsError`."""
    if model is not None:
        from ..registry import get_model_entry, resolve_alias

        get_model_entry(model)
        model, width, _, _ = resolve_alias(model, width)
    entry = lookup(reference, model=model, width=width)
    if entry is None:
        raise MobileNetsError(f"{one_line(str(reference), 120)}: not a published weights name{_close(str(reference))}")
    return entry, fetch(entry, refresh=refresh, check=check)


def _read_to_the_end(stream, limit: int) -> None:
    """Read an archive's (decompressed) stream to its end, at most ``limit`` bytes: a gzip / bzip2 / xz
    checksum is checked only there, and tarfile stops reading at the end-of-archive blocks before it."""
    total = 0
    while chunk := stream.read(1 << 20):
        total += len(chunk)
        if total > limit:
            raise MobileNetsError(f"the archive unpacks to more than {limit >> 20} MiB, more than any MobileNet "
                                  "release")


def _fetch_from_archive(entry: PublishedWeights, *, refresh: bool, progress: bool | None, timeout: float,
                        deadline: float, check: Check | None) -> Path:
    """The .tflite file of a release archive: the archive is downloaded (checked like any download, its gzip
    stream to the end), its one .tflite member streamed into the cache under :func:`cached_path` (atomically,
    after it reads as TFLite and passes ``check``), and the archive itself dropped (checkpoints and graphs this
    library does not read)."""
    import lzma
    import tarfile
    import tempfile
    import zlib

    from .source import MAX_DOWNLOAD_BYTES, open_source

    target = cached_path(entry)
    if target.is_file() and not refresh:
        label = f"{entry.name}: cached file {target}"
        try:
            _checked(target, label, check, kind="tflite")
        except MobileNetsError as e:
            raise MobileNetsError(f"{e} (delete it or pass --refresh)") from None
        return target
    with open_source(entry.url, sha256=entry.sha256, refresh=refresh, progress=progress, timeout=timeout,
                     deadline=deadline) as src:
        label = f"{entry.name} ({src.label})"
        try:
            _verify(entry, src.path)
            with tarfile.open(src.path, "r:*") as tar:
                found = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".tflite")]
                _read_to_the_end(tar.fileobj, 2 * MAX_DOWNLOAD_BYTES)  # (extractfile seeks back)
                if len(found) > 1:
                    found = [m for m in found if Path(m.name).name == target.name] or found
                if len(found) != 1:
                    raise MobileNetsError(f"the archive holds {len(found)} .tflite files"
                                          + (f" ({', '.join(one_line(m.name, 80) for m in found[:4])})"
                                             if found else "") + ", not one")
                member = found[0]
                if member.size > MAX_DOWNLOAD_BYTES:
                    raise MobileNetsError(f"its .tflite file is {member.size} bytes, larger than any MobileNet")
                fd, tmp = tempfile.mkstemp(prefix=".extract.", suffix=".part", dir=target.parent)
                try:
                    with os.fdopen(fd, "wb") as out, tar.extractfile(member) as f:
                        for chunk in iter(lambda: f.read(1 << 20), b""):
                            out.write(chunk)
                    try:
                        _checked(Path(tmp), label, check, kind="tflite")
                    except MobileNetsError as e:
                        raise MobileNetsError(f"its {one_line(member.name, 80)}: "
                                              f"{str(e).removeprefix(label + ': ')}") from None
                    os.chmod(tmp, file_mode())  # mkstemp's 0600: open()'s mode under the umask
                    os.replace(tmp, target)
                finally:
                    Path(tmp).unlink(missing_ok=True)
        except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as e:
            raise MobileNetsError(f"{label}: not a readable .tgz archive "
                                  f"({one_line(e, 120) or type(e).__name__})") from None
        except MobileNetsError as e:
            msg = str(e)
            raise MobileNetsError(msg if msg.startswith(label) else f"{label}: {msg}") from None
    src.final.unlink(missing_ok=True)  # the weights are out; the rest of the archive is not needed
    return target
