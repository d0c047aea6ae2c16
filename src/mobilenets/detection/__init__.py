"""Object detection with MobileNet backbones: SSDLite (V2 section 6.2, V3 section 6.3).

- :mod:`.ssdlite`: the detectors (``ssdlite_mobilenet_v1``, ``_v2``, ``_v3_large``, ``_v3_small``, registered
  for :func:`mobilenets.create_model`), :class:`SSDLite`, :class:`DetectorConfig`;
- :mod:`.recipes`: the ``"paper"`` (TF OD API) and ``"torchvision"`` configurations as tables;
- :mod:`.box_coder`, :mod:`.loss`, :mod:`.postprocess`: box coding, the multibox loss, detections (torch and
  numpy);
- :mod:`.costs`: the published parameter / multiply-add figures, reproduced row by row.
"""

from .box_coder import decode_boxes, encode_boxes
from .loss import match_default_boxes, multibox_loss
from .postprocess import postprocess_detections, postprocess_numpy
from .recipes import CONFIGS, RECIPES, DetectionRecipe, resolve_recipe
from .ssdlite import (
    BACKBONES,
    EXTRA_LAYERS,
    DetectorConfig,
    SSDLite,
    ssdlite_mobilenet_v1,
    ssdlite_mobilenet_v2,
    ssdlite_mobilenet_v3_large,
    ssdlite_mobilenet_v3_small,
)

__all__ = [
    "SSDLite", "DetectorConfig", "BACKBONES", "EXTRA_LAYERS", "DetectionRecipe", "RECIPES", "CONFIGS",
    "resolve_recipe", "encode_boxes", "decode_boxes", "multibox_loss", "match_default_boxes",
    "postprocess_detections", "postprocess_numpy", "ssdlite_mobilenet_v1", "ssdlite_mobilenet_v2",
    "ssdlite_mobilenet_v3_large", "ssdlite_mobilenet_v3_small",
]
