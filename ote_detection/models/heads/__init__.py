"""Dense heads (SSD, FCOS, ATSS) and their contract (``base.py``)."""

from . import atss_head, fcos_head, ssd_head  # noqa: F401  (register the heads)
from ...registry import HEADS
from .base import (ROW_WIDTH, BaseDenseHead, CenternessOutputs, Detections, ExportFamily, SSDOutputs,  # noqa: F401
                   map_outputs)


def head_class(head_cfg):
    """The registered head class of a ``model.bbox_head`` config dict (its declarations without building it)."""
    return HEADS.get((head_cfg or {}).get("type"))
