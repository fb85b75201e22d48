"""Model building from an mmdetection-style ``model`` config."""

from . import anchors, assigners, backbones, box_coder, detectors, heads, necks  # noqa: F401  (register types)
from ..registry import DETECTORS


def build_detector(model_cfg):
    return DETECTORS.build(model_cfg)
