"""Detection metrics of the face-detection templates.

* ``evaluate_detections(coco_gt, detections, keys, pr_curves_dir=None)``: ``ap`` (COCO
  AP@[.5:.95] as OTE's mmdet reported it) and ``ap_64x64`` (OTE's "AP for faces > 64x64").
* ``WiderFaceGT(gt_dir).evaluate(detections)``: the official WIDER FACE Easy/Medium/Hard AP
  (``widerface_e/m/h``).
* ``format_metrics_table`` / ``metrics_to_yaml_entries``: reports against a template's metrics.
"""

from .coco_ap import coco_ap
from .metrics import (SUPPORTED_KEYS, evaluate_detections, format_metrics_table,
                      metrics_to_yaml_entries)
from .pr_plots import save_pr_curves
from .voc_ap64 import ap_64x64, voc_ap
from .widerface import SETTINGS, WiderFaceGT

__all__ = [
    "evaluate_detections", "WiderFaceGT", "coco_ap", "ap_64x64", "voc_ap", "save_pr_curves",
    "format_metrics_table", "metrics_to_yaml_entries", "SUPPORTED_KEYS", "SETTINGS",
]
