"""Anchor-to-ground-truth assignment: max IoU (SSD), ATSS."""

from .atss import ATSSAssigner  # noqa: F401
from .max_iou import MaxIoUAssigner  # noqa: F401
