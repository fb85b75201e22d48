"""Post-training 8-bit quantization of the OpenVINO IR with accuracy control (``compress.py --ptq``).

The trained snapshot is converted to the FP32 IR (as export.py does), then
``nncf.quantize_with_accuracy_control`` (NNCF, OpenVINO backend) quantizes it, calibrating on the
training images, and measures the COCO AP on the validation files with the INT8 and the FP32 model;
while the drop exceeds ``max_drop`` AP points it returns the most harmful layers to floating point.
Ours: the image feeding (the same resize as eval.py), the metric function and the output files.
"""

import logging
import os
import shutil
import tempfile
import time

import yaml

from ..data.coco import load_coco_files
from ..data.images import read_image
from ..inference.predictor import FramePredictor
from ..evaluation import evaluate_detections
from ..export.exporter import convert_to_openvino
from ..export.openvino_export import save_openvino
from ..inference.openvino_predictor import OpenVINOPredictor
from ..utils.artefacts import ir_checksums
from ..utils.errors import OteError
from ..utils.fileio import is_write_failure, write_error
from .env import import_nncf
from .quantization import quantization_params

log = logging.getLogger(__name__)


class _Resizer(FramePredictor):
    """Only FramePredictor's preprocessing (the resize eval.py applies), for a given input size."""

    def __init__(self, input_size):
        self.input_size = tuple(input_size)


def _load_items(coco, resizer):
    items = []
    for img in coco["images"]:
        frame = read_image(img["path"])
        tensor, scale = resizer.preprocess(frame)
        items.append((img["id"], tensor.numpy()[None], scale, frame.shape[:2]))
    return items


def ir_average_precision(model, compiled, items, coco):
    """COCO AP (%) of ``model`` compiled as ``compiled`` on preprocessed ``items``, decoded by the
    predictor eval.py uses (either output contract)."""
    predictor = OpenVINOPredictor.from_compiled(model, compiled)
    dets = {key: predictor.postprocess(predictor.infer_batch(tensor)[0], scale, frame_hw)[:, :5]
            for key, tensor, scale, frame_hw in items}
    return float(evaluate_detections(coco, dets, ["ap"])["ap"])


def post_training_quantization(task, load_weights, train_ann_files, train_data_roots, out_dir, val_ann_files=None,
                               val_data_roots=None, max_drop=1.0, input_size=None, settings=None, subset_size=300):
    """Write the INT8 IR (``model.xml``/``.bin``) and ``ptq_info.yaml`` to ``out_dir``; returns the info dict."""
    import openvino as ov
    nncf = import_nncf()
    if not val_ann_files:
        raise OteError("--ptq needs --val-ann-files/--val-data-roots: the accuracy of the quantized model is "
                       "measured on them")
    model, snapshot_size = task.load_snapshot(load_weights)
    size = tuple(input_size or snapshot_size)
    train_coco = load_coco_files(train_ann_files, train_data_roots, task.classes, flags="--train")
    val_coco = load_coco_files(val_ann_files, val_data_roots, task.classes, flags="--val")
    start = time.time()
    fp32, _ = convert_to_openvino(model, size, classes=task.classes)
    resizer = _Resizer(size)
    calib = _load_items(train_coco, resizer)
    val = _load_items(val_coco, resizer)
    num_init = quantization_params((settings.algorithms if settings else {}).get("quantization") or {})[0]
    subset = max(1, min(len(calib), max(num_init, subset_size)))

    def validate(compiled, _items):
        return ir_average_precision(fp32, compiled, val, val_coco)

    log.info("PTQ: calibration on %d training image(s), accuracy control on %d validation image(s), max drop %.2f "
             "AP points", subset, len(val), max_drop)
    quantized = nncf.quantize_with_accuracy_control(
        fp32, nncf.Dataset(calib, lambda item: item[1]), nncf.Dataset(val, lambda item: item[1]),
        validation_fn=validate, max_drop=float(max_drop), drop_type=nncf.DropType.ABSOLUTE,
        preset=nncf.QuantizationPreset.MIXED, subset_size=subset)
    elapsed = time.time() - start
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    ap_fp32 = ir_average_precision(fp32, core.compile_model(fp32, "CPU", config), val, val_coco)
    ap_int8 = ir_average_precision(quantized, core.compile_model(quantized, "CPU", config), val, val_coco)
    try:
        os.makedirs(out_dir, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".ptq.", dir=out_dir)
    except OSError as exc:
        raise write_error(out_dir, exc) from None
    try:
        try:
            save_openvino(quantized, os.path.join(tmp, "model.xml"), source=fp32)
            info = {"template": task.name, "source_snapshot": os.path.abspath(load_weights), "input_size": list(size),
                    "method": "nncf.quantize_with_accuracy_control (OpenVINO backend, preset mixed)",
                    "max_drop_ap_points": float(max_drop), "calibration_images": subset,
                    "validation_images": len(val), "ap_fp32_ir": ap_fp32, "ap_int8_ir": ap_int8,
                    "seconds": round(elapsed, 1)}
            with open(os.path.join(tmp, "ptq_info.yaml"), "w", encoding="utf-8") as f:
                yaml.safe_dump(info, f, sort_keys=False)
            # what eval.py / visualize.py check before reading an IR: its template, classes and file checksums
            export_info = {"template": task.name, "classes": list(task.classes), "precision": "INT8 (PTQ)",
                           "input": {"input_size": list(size), "keep_ratio": False},
                           "sha256": ir_checksums(tmp, ["model.xml", "model.bin"])}
            with open(os.path.join(tmp, "export_info.yaml"), "w", encoding="utf-8") as f:
                yaml.safe_dump(export_info, f, sort_keys=False)
            for name in ("model.bin", "ptq_info.yaml", "model.xml", "export_info.yaml"):  # .bin before .xml
                os.replace(os.path.join(tmp, name), os.path.join(out_dir, name))
        except (OSError, RuntimeError) as exc:  # a full or read-only disk: one line, nothing half-written kept
            if is_write_failure(exc):
                raise write_error(os.path.join(out_dir, "model.xml"), exc) from None
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("PTQ: AP %.2f (FP32 IR) -> %.2f (INT8 IR) in %.0f s; wrote %s", ap_fp32, ap_int8, elapsed,
             os.path.join(out_dir, "model.xml"))
    return info
