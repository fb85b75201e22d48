"""Export entry point behind the work dir's export.py: snapshot -> OpenVINO IR (FP32) [+ ONNX]."""

import logging
import os
import shutil
import tempfile

import yaml

from ..export.openvino_export import (INPUT_NAME, OUTPUT_NAME, convert_to_openvino, export_onnx,
                                      save_openvino)
from ..utils.errors import OteError
from ..utils.fileio import sha256sum
from .task import Task

log = logging.getLogger(__name__)

OUTPUT_FORMAT = ("[1, 1, N, 7] rows of (image_id, label, confidence, x_min, y_min, x_max, y_max); coordinates "
                 "normalised to [0, 1] of the input; label = class index (0 = first class, background_label_id = "
                 "number of classes); the row after the last detection has image_id -1 (Open Model Zoo SSD "
                 "DetectionOutput format)")


def export_input_size(size):
    """Check an input size (w, h) given for export."""
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError) as exc:
        raise OteError(f"input size {size!r} is not (width, height)") from exc
    if width <= 0 or height <= 0:
        raise OteError(f"input size {size!r} is not positive")
    return width, height


def _install(tmp_dir, out_dir):
    """Move the finished files from ``tmp_dir`` into ``out_dir`` (a rename when ``out_dir`` is new)."""
    if not os.path.exists(out_dir):
        os.rename(tmp_dir, out_dir)
        return
    if not os.path.isdir(out_dir):
        raise OteError(f"{out_dir}: exists and is not a folder")
    # .bin before .xml: a reader never sees the new .xml next to the old weights
    names = sorted(os.listdir(tmp_dir), key=lambda n: (n.endswith(".xml"), n))
    stale = os.path.join(out_dir, "model.onnx")
    if "model.onnx" not in names and os.path.isfile(stale):
        os.remove(stale)  # from an earlier --onnx export of other weights
    for name in names:
        os.replace(os.path.join(tmp_dir, name), os.path.join(out_dir, name))
    shutil.rmtree(tmp_dir, ignore_errors=True)


def export(template, load_weights, save_model_to, onnx=False, input_size=None):
    """Write ``model.xml``/``model.bin`` (FP32 IR), optionally ``model.onnx``, and ``export_info.yaml`` to
    ``save_model_to``; everything is written to a temporary folder first, so a failure leaves nothing
    behind. Returns the path of model.xml."""
    task = Task(template)
    if not load_weights:
        raise OteError("--load-weights is required: the snapshot (.pth) to export")
    if str(load_weights).lower().endswith((".xml", ".bin")):
        raise OteError(f"{load_weights}: already an OpenVINO IR; export takes a PyTorch snapshot (.pth)")
    model, snapshot_size = task.load_snapshot(load_weights)  # checks template and shapes, one line each
    size = export_input_size(input_size or snapshot_size)
    out_dir = os.path.abspath(save_model_to)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(out_dir) + ".", suffix=".tmp", dir=parent)
    try:
        ov_model, info = convert_to_openvino(model, size)
        save_openvino(ov_model, os.path.join(tmp, "model.xml"))
        files = ["model.xml", "model.bin"]
        if onnx:
            export_onnx(model, size, os.path.join(tmp, "model.onnx"))
            files.append("model.onnx")
        norm = task.img_norm_cfg
        head = model.detector.bbox_head
        export_info = {
            "template": task.name,
            "source_snapshot": os.path.abspath(load_weights),
            "source_sha256": sha256sum(load_weights),
            "precision": "FP32",
            "files": files,
            "input": {
                "name": INPUT_NAME, "shape": [1, 3, size[1], size[0]], "layout": "NCHW", "color": "BGR",
                "range": [0, 255], "input_size": [size[0], size[1]],
                "normalization_folded_in": {"mean": [float(v) for v in norm["mean"]],
                                            "std": [float(v) for v in norm["std"]],
                                            "to_rgb": bool(norm.get("to_rgb", True)),
                                            "into_first_convolution": bool(info["normalisation_in_first_conv"])},
            },
            "classes": list(task.classes),
            "output": {
                "name": OUTPUT_NAME,
                "shape": [1, 1, int(info["detection_output"]["keep_top_k"][0]), 7],
                "format": OUTPUT_FORMAT,
                "num_priors": info["num_priors"],
                "box_coder": {"target_means": list(head.bbox_coder.means), "target_stds": list(head.bbox_coder.stds),
                              "dwdh_clamp": float(head.bbox_coder.max_ratio)},
                "detection_output": {k: (list(v) if isinstance(v, (list, tuple)) else v)
                                     for k, v in info["detection_output"].items()},
            },
        }
        if onnx:
            export_info["onnx"] = {"file": "model.onnx", "outputs": {
                "scores": "[1, A, num_classes + 1] softmax, background last",
                "deltas": "[1, A, 4] raw box deltas (dx, dy, dw, dh), decode with the template's box coder and "
                          "anchors"}}
        with open(os.path.join(tmp, "export_info.yaml"), "w", encoding="utf-8") as f:
            yaml.safe_dump(export_info, f, sort_keys=False)
        _install(tmp, out_dir)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    xml = os.path.join(out_dir, "model.xml")
    log.info("exported %s (%dx%d) to %s", task.name, size[0], size[1], xml)
    return xml
