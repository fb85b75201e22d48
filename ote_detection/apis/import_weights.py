"""Import of an OpenVINO IR's weights (Open Model Zoo face detectors) into a template's snapshot: the entry
point behind tools/import_openvino_weights.py. The import itself is ``omz_import/importer.py``."""

from ..omz_import.importer import import_ir_weights
from .task import Task


def import_openvino_weights(template, ir_path, out_path, verify=True, calibration_images=None):
    """Read the IR's weights into the model of ``template`` (its template.yaml) and save them as a
    checkpoint at ``out_path``; returns the report of ``omz_import.importer.import_ir_weights`` (the
    checkpoint path and the verification figures). ``calibration_images``: BatchNorm statistics are
    measured on them (for fine-tuning with BatchNorm in train mode)."""
    return import_ir_weights(Task(template), ir_path, out_path, verify=verify, calibration_images=calibration_images)
