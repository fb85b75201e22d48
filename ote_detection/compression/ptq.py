"""Post-training 8-bit quantization of an OpenVINO IR, with accuracy control when annotated images are given.

``quantize_ir_model`` is the one PTQ function of the project (``compress.py --ptq``, ``export.py --int8``
and ``choose_input_size.py --int8-calibration`` call it): with validation images,
``nncf.quantize_with_accuracy_control`` (NNCF, OpenVINO backend) quantizes the FP32 IR, calibrating on the
calibration images, and measures the COCO AP on the validation images with the INT8 and the FP32 model;
while the drop exceeds ``max_drop`` AP points it returns the most harmful layers to floating point.
Without validation images it is plain ``nncf.quantize``. Ours: the image feeding (the resize eval.py
applies: stretched, or letterboxed for ``keep_ratio``), the metric function and the output files.
"""

import logging
import os
import shutil
import tempfile
import time

import yaml

from ..data.coco import load_coco_files
from ..data.images import IMAGE_EXTS, read_image
from ..inference.predictor import FramePredictor
from ..evaluation import evaluate_detections
from ..export.exporter import convert_to_openvino
from ..export.openvino_export import save_openvino
from ..inference.openvino_predictor import OpenVINOPredictor
from ..utils.artefacts import ExportInfo, ir_checksums, write_export_info
from ..utils.complexity import complexity_record
from ..utils.errors import OteError
from ..utils.fileio import is_write_failure, write_error
from .env import import_nncf
from .quantization import quantization_params

log = logging.getLogger(__name__)


class _Resizer(FramePredictor):
    """Only FramePredictor's preprocessing (the resize eval.py applies), for a given input size."""

    def __init__(self, input_size, keep_ratio=False):
        self.input_size = tuple(input_size)
        self.keep_ratio = bool(keep_ratio)


def calibration_paths(source, limit=300):
    """Up to ``limit`` image paths for INT8 calibration: a folder (searched recursively), a COCO json (images
    beside it or under its ``images/`` folder) or a list of image paths."""
    import glob
    if isinstance(source, str) and not os.path.exists(source):
        raise OteError(f"{source}: calibration images not found")
    if isinstance(source, (list, tuple)):
        paths = list(source)
    elif os.path.isdir(source):
        paths = sorted(p for p in glob.glob(os.path.join(source, "**", "*"), recursive=True)
                       if p.lower().endswith(IMAGE_EXTS))
    elif str(source).lower().endswith(".json"):
        coco = load_coco_files([source], [os.path.dirname(os.path.abspath(source))], require_boxes=False)
        paths = [img["path"] for img in coco["images"]]
    else:
        raise OteError(f"{source}: not a folder of images or a COCO .json")
    if not paths:
        raise OteError(f"{source}: no image files for INT8 calibration")
    return paths[:limit]


def calibration_tensors(paths, input_size, keep_ratio=False):
    """[1, 3, h, w] float32 arrays (BGR 0..255, as the IR takes them) of ``paths`` resized as eval.py does."""
    resizer = _Resizer(input_size, keep_ratio)
    out = []
    for path in paths:
        out.append(resizer.preprocess(read_image(path))[0].numpy()[None])
    return out


def cpu_precisions(compiled):
    """{runtime precision: count} of the convolutions of a compiled CPU model (what the CPU will run)."""
    counts = {}
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) == "Convolution":
            prec = info["runtimePrecision"].astype(str)
            counts[prec] = counts.get(prec, 0) + 1
    return counts


def quantize_ir_model(fp32, calibration, val_items=None, val_coco=None, max_drop=1.0, preset="mixed",
                      keep_ratio=False, subset_size=300):
    """INT8 ``ov.Model`` of the FP32 ``ov.Model`` ``fp32``, and an info dict.

    ``calibration``: [1, 3, h, w] float32 arrays (BGR 0..255, ``calibration_tensors``); ``val_items`` /
    ``val_coco``: preprocessed validation images (``_load_items``) and their COCO dict; with them the
    quantization has accuracy control (at most ``max_drop`` COCO AP points lost, else layers go back to
    floating point) and the info has ``ap_fp32_ir`` / ``ap_int8_ir`` (%, OpenVINO, f32 hint).
    ``preset``: "mixed" (asymmetric activations) or "performance"."""
    import warnings

    import openvino as ov
    nncf = import_nncf()
    if not calibration:
        raise OteError("INT8 quantization needs calibration images")
    subset = max(1, min(len(calibration), subset_size))
    preset_value = nncf.QuantizationPreset(preset)
    start = time.time()
    logging.getLogger("nncf").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if val_items:
            def validate(compiled, _items):
                return ir_average_precision(fp32, compiled, val_items, val_coco, keep_ratio)
            log.info("PTQ: calibration on %d image(s), accuracy control on %d validation image(s), max drop %.2f "
                     "AP points", subset, len(val_items), max_drop)
            quantized = nncf.quantize_with_accuracy_control(
                fp32, nncf.Dataset(calibration), nncf.Dataset(val_items, lambda item: item[1]),
                validation_fn=validate, max_drop=float(max_drop), drop_type=nncf.DropType.ABSOLUTE,
                preset=preset_value, subset_size=subset, ignored_scope=post_processing_scope(fp32))
        else:
            log.info("PTQ: calibration on %d image(s), no accuracy control", subset)
            quantized = nncf.quantize(fp32, nncf.Dataset(calibration), preset=preset_value, subset_size=subset,
                                      ignored_scope=post_processing_scope(fp32))
    info = {"method": ("nncf.quantize_with_accuracy_control" if val_items else "nncf.quantize")
            + f" (OpenVINO backend, preset {preset})", "calibration_images": subset,
            "seconds": round(time.time() - start, 1)}
    core = ov.Core()
    if val_items:
        config = {"INFERENCE_PRECISION_HINT": "f32"}
        info.update({"max_drop_ap_points": float(max_drop), "validation_images": len(val_items),
                     "ap_fp32_ir": ir_average_precision(fp32, core.compile_model(fp32, "CPU", config), val_items,
                                                        val_coco, keep_ratio),
                     "ap_int8_ir": ir_average_precision(quantized, core.compile_model(quantized, "CPU", config),
                                                        val_items, val_coco, keep_ratio)})
    compiled = core.compile_model(quantized, "CPU")
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    info["cpu"] = {"device": core.get_property("CPU", "FULL_DEVICE_NAME"),
                   "inference_precision_hint": hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint),
                   "convolution_precisions": cpu_precisions(compiled)}
    return quantized, info


def _load_items(coco, resizer):
    """(image id, [1, 3, h, w] float32, scale, frame (h, w)) per image of ``coco``."""
    items = []
    for img in coco["images"]:
        frame = read_image(img["path"])
        tensor, scale = resizer.preprocess(frame)
        items.append((img["id"], tensor.numpy()[None], scale, frame.shape[:2]))
    return items


def ir_average_precision(model, compiled, items, coco, keep_ratio=False):
    """COCO AP (%) of ``model`` compiled as ``compiled`` on preprocessed ``items``, decoded by the
    predictor eval.py uses (either output contract)."""
    predictor = OpenVINOPredictor.from_compiled(model, compiled, keep_ratio=keep_ratio)
    dets = {key: predictor.postprocess(predictor.infer_batch(tensor)[0], scale, frame_hw)[:, :5]
            for key, tensor, scale, frame_hw in items}
    return float(evaluate_detections(coco, dets, ["ap"])["ap"])


_CONVOLUTIONS = ("Convolution", "GroupConvolution")


def post_processing_scope(model):
    """``nncf.IgnoredScope`` of an IR's post-processing: every op from which no convolution is reachable
    (the head's box decoding and score products, NMS or DetectionOutput). Only the network is quantized;
    the decoding stays in f32 (an 8-bit FakeQuantize on FCOS's clipped box coordinates also makes
    OpenVINO's low-precision Reshape transformation fail to compile the model)."""
    nncf = import_nncf()
    reaches_conv = set()
    for op in reversed(model.get_ordered_ops()):  # consumers before producers
        if op.get_type_name() in _CONVOLUTIONS or any(
                target.get_node().get_instance_id() in reaches_conv
                for out in op.outputs() for target in out.get_target_inputs()):
            reaches_conv.add(op.get_instance_id())
    names = [op.get_friendly_name() for op in model.get_ordered_ops()
             if op.get_instance_id() not in reaches_conv and op.get_type_name() not in ("Constant", "Result")]
    return nncf.IgnoredScope(names=names, validate=False)


def post_training_quantization(task, load_weights, train_ann_files, train_data_roots, out_dir, val_ann_files=None,
                               val_data_roots=None, max_drop=1.0, input_size=None, settings=None, subset_size=300):
    """Write the INT8 IR (``model.xml``/``.bin``) and ``ptq_info.yaml`` to ``out_dir``; returns the info dict."""
    if not val_ann_files:
        raise OteError("--ptq needs --val-ann-files/--val-data-roots: the accuracy of the quantized model is "
                       "measured on them")
    model, snapshot_size = task.load_snapshot(load_weights)
    size = tuple(input_size or snapshot_size)
    train_coco = load_coco_files(train_ann_files, train_data_roots, task.classes, flags="--train")
    val_coco = load_coco_files(val_ann_files, val_data_roots, task.classes, flags="--val")
    fp32, _ = convert_to_openvino(model, size, classes=task.classes)
    resizer = _Resizer(size)
    calib = [item[1] for item in _load_items(train_coco, resizer)]
    val = _load_items(val_coco, resizer)
    num_init = quantization_params((settings.algorithms if settings else {}).get("quantization") or {})[0]
    subset = max(1, min(len(calib), max(num_init, subset_size)))
    quantized, qinfo = quantize_ir_model(fp32, calib, val, val_coco, max_drop=max_drop, subset_size=subset)
    ap_fp32, ap_int8, elapsed = qinfo["ap_fp32_ir"], qinfo["ap_int8_ir"], qinfo["seconds"]
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
                    "seconds": round(elapsed, 1), "cpu": qinfo["cpu"]}
            with open(os.path.join(tmp, "ptq_info.yaml"), "w", encoding="utf-8") as f:
                yaml.safe_dump(info, f, sort_keys=False)
            # what eval.py / visualize.py check before reading an IR: its template, classes, file checksums and
            # the quantized model's own size and complexity (a pruned one's: smaller)
            write_export_info(tmp, ExportInfo(
                template=task.name, classes=list(task.classes), precision="INT8 (PTQ)",
                input={"input_size": list(size), "keep_ratio": False}, source_snapshot=os.path.abspath(load_weights),
                complexity=complexity_record(model.detector, size), sha256=ir_checksums(tmp, ["model.xml", "model.bin"])))
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


def int8_of_exported_ir(fp32, size, keep_ratio, classes, calibration_images=None, val_ann_files=None,
                        val_data_roots=None, max_drop=1.0, calibration_limit=300):
    """``export.py --int8``: the INT8 ``ov.Model`` of the FP32 IR ``fp32`` (input ``size`` (w, h), frames
    letterboxed when ``keep_ratio``) and its info for export_info.yaml. With ``val_ann_files`` the
    quantization has accuracy control on them (AP before / after recorded); calibration images are
    ``calibration_images`` (folder or COCO json) or else the validation images."""
    if not calibration_images and not val_ann_files:
        raise OteError("--int8 needs images: --val-ann-files/--val-data-roots (accuracy control; the AP before and "
                       "after is recorded) and/or --calibration-images DIR")
    if bool(val_ann_files) != bool(val_data_roots):
        raise OteError("give --val-ann-files and --val-data-roots together")
    val_items, val_coco = None, None
    if val_ann_files:
        val_coco = load_coco_files(val_ann_files, val_data_roots, tuple(classes), flags="--val")
        val_items = _load_items(val_coco, _Resizer(size, keep_ratio))
    if calibration_images:
        paths = calibration_paths(calibration_images, calibration_limit)
    else:
        paths = [img["path"] for img in val_coco["images"]][:calibration_limit]
    calib = calibration_tensors(paths, size, keep_ratio)
    quantized, info = quantize_ir_model(fp32, calib, val_items, val_coco, max_drop=max_drop, keep_ratio=keep_ratio)
    info["calibration_source"] = os.path.abspath(calibration_images) if calibration_images else "validation images"
    if not val_items:
        info["ap_fp32_ir"] = info["ap_int8_ir"] = None  # not measured: no annotated images given
    return quantized, info
