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
from ..inference.deploy import common_frame_hw
from ..inference.predictor import FramePredictor
from ..evaluation import evaluate_detections
from ..export.exporter import convert_to_openvino
from ..export.openvino_export import save_openvino
from ..inference.openvino_predictor import OpenVINOPredictor
from ..artefacts.formats import ExportInfo, ir_checksums, write_export_info
from ..artefacts.kinds import Checkpoint, open_artefact
from ..utils.complexity import complexity_record
from ..utils.errors import OteError
from ..utils.fileio import files_under, is_write_failure, write_error
from .env import import_nncf
from .quantization import quantization_params

log = logging.getLogger(__name__)


class _Resizer(FramePredictor):
    """Only FramePredictor's preprocessing (the resize eval.py applies), for a given input size."""

    def __init__(self, input_size, keep_ratio=False):
        self.input_size = tuple(input_size)
        self.keep_ratio = bool(keep_ratio)


def calibration_paths(source, limit=300):
    """Up to ``limit`` image paths for INT8 calibration: a folder (searched recursively, symlinks followed,
    each real file once: ``utils.fileio.files_under``), a COCO json (images beside it or under its
    ``images/`` folder) or a list of image paths. Raises OteError (one line) when there is no image: callers
    list them before any work (export.py --int8 before the FP32 export)."""
    if isinstance(source, str) and not os.path.exists(source):
        raise OteError(f"{source}: calibration images not found (no such file or folder)")
    if isinstance(source, (list, tuple)):
        paths = list(source)
    elif os.path.isdir(source):
        paths = files_under(source, IMAGE_EXTS)
    elif str(source).lower().endswith(".json"):
        coco = load_coco_files([source], [os.path.dirname(os.path.abspath(source))], require_boxes=False)
        paths = [img["path"] for img in coco["images"]]
    else:
        raise OteError(f"{source}: not a folder of images or a COCO .json")
    if not paths:
        raise OteError(f"{source}: no image files for INT8 calibration (files named {', '.join(IMAGE_EXTS[:4])}, ...)")
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
                      keep_ratio=False, subset_size=300, score_thr=None):
    """INT8 ``ov.Model`` of the FP32 ``ov.Model`` ``fp32``, and an info dict.

    ``calibration``: [1, 3, h, w] float32 arrays (BGR 0..255, ``calibration_tensors``); ``val_items`` /
    ``val_coco``: preprocessed validation images (``_load_items``) and their COCO dict; with them the
    quantization has accuracy control (at most ``max_drop`` COCO AP points lost, else layers go back to
    floating point; a progress bar with an estimate, ``ValidationProgress``) and the info has
    ``ap_fp32_ir`` / ``ap_int8_ir`` (%, OpenVINO, f32 hint) and ``recall_fp32_ir`` / ``recall_int8_ir`` (% of
    the faces found at IoU 0.5 with score >= ``score_thr``, default the IR's ``confidence_threshold``:
    ``operating_score``). ``preset``: "mixed" (asymmetric activations) or "performance". Bias correction:
    NNCF's full one (``fast_bias_correction=False``) for up to ``FULL_BIAS_CORRECTION_MAX_IMAGES`` calibration
    images, the fast one above (``bias_correction``); the info's ``bias_correction`` says which."""
    import warnings

    import openvino as ov
    nncf = import_nncf()
    if not calibration:
        raise OteError("INT8 quantization needs calibration images")
    subset = max(1, min(len(calibration), subset_size))
    preset_value = nncf.QuantizationPreset(preset)
    correction = bias_correction(subset)
    start = time.time()
    logging.getLogger("nncf").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if val_items:
            log.info("PTQ: calibration on %d image(s) (%s bias correction), accuracy control on %d validation "
                     "image(s), max drop %.2f AP points", subset, correction, len(val_items), max_drop)
            def metric(compiled, items):  # AP on the items NNCF gives (all, a ranking subset, or one)
                return ir_accuracy(fp32, compiled, items, val_coco, keep_ratio)["ap"]
            with ValidationProgress(metric, len(val_items), layer_groups(fp32), max_drop) as validate:
                quantized = nncf.quantize_with_accuracy_control(
                    fp32, nncf.Dataset(calibration), nncf.Dataset(val_items, lambda item: item[1]),
                    validation_fn=validate, max_drop=float(max_drop), drop_type=nncf.DropType.ABSOLUTE,
                    preset=preset_value, subset_size=subset, ignored_scope=post_processing_scope(fp32),
                    fast_bias_correction=correction == "fast")
        else:
            log.info("PTQ: calibration on %d image(s) (%s bias correction), no accuracy control", subset, correction)
            quantized = nncf.quantize(fp32, nncf.Dataset(calibration), preset=preset_value, subset_size=subset,
                                      ignored_scope=post_processing_scope(fp32),
                                      fast_bias_correction=correction == "fast")
    info = {"method": ("nncf.quantize_with_accuracy_control" if val_items else "nncf.quantize")
            + f" (OpenVINO backend, preset {preset})", "calibration_images": subset, "bias_correction": correction,
            "seconds": round(time.time() - start, 1)}
    core = ov.Core()
    if val_items:
        config = {"INFERENCE_PRECISION_HINT": "f32"}
        score_thr = operating_score(fp32) if score_thr is None else float(score_thr)
        before = ir_accuracy(fp32, core.compile_model(fp32, "CPU", config), val_items, val_coco, keep_ratio, score_thr)
        after = ir_accuracy(quantized, core.compile_model(quantized, "CPU", config), val_items, val_coco, keep_ratio,
                            score_thr)
        info.update({"max_drop_ap_points": float(max_drop), "validation_images": len(val_items),
                     "ap_fp32_ir": before["ap"], "ap_int8_ir": after["ap"], "operating_score": score_thr,
                     "recall_fp32_ir": before["recall"], "recall_int8_ir": after["recall"]})
    compiled = core.compile_model(quantized, "CPU")
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    info["cpu"] = {"device": core.get_property("CPU", "FULL_DEVICE_NAME"),
                   "inference_precision_hint": hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint),
                   "convolution_precisions": cpu_precisions(compiled)}
    return quantized, info


# Full bias correction (NNCF's BiasCorrection: each layer's bias corrected on the quantized model's own
# inputs) for calibration sets up to this size, NNCF's fast one above it. Measured (docs/finetune.md, "INT8
# from a few frames"; benchmarks/bench_finetune.py --int8-settings): on six 0200 models at 640x384 and
# 960x544 calibrated on 5 frames it lowered the INT8 error of the prediction layers' outputs on held-out
# frames by 17-60 % (the lowest of the settings compared on five of the six), at 1.6-2.7x the quantization
# time, which grows with the images: hence the fast one beyond a few tens of them.
FULL_BIAS_CORRECTION_MAX_IMAGES = 50


def bias_correction(num_images):
    """"full" (NNCF ``fast_bias_correction=False``) for at most ``FULL_BIAS_CORRECTION_MAX_IMAGES``
    calibration images, else "fast"."""
    return "full" if num_images <= FULL_BIAS_CORRECTION_MAX_IMAGES else "fast"


def operating_score(model):
    """The score from which an IR's detections are shown: its Model API ``confidence_threshold``
    (``export/model_info.py``), else the demo's default 0.5."""
    from ..export.model_info import DEFAULT_CONFIDENCE_THRESHOLD, get_model_info
    try:
        return float(get_model_info(model).get("confidence_threshold", DEFAULT_CONFIDENCE_THRESHOLD))
    except ValueError:
        return DEFAULT_CONFIDENCE_THRESHOLD


def int8_summary(info):
    """One line: AP and recall at the operating score before -> after INT8 (``quantize_ir_model``'s info)."""
    return (f"INT8 on {info['validation_images']} validation image(s): AP {info['ap_fp32_ir']:.2f} -> "
            f"{info['ap_int8_ir']:.2f} (FP32 IR -> INT8 IR), recall at score {info['operating_score']:g} "
            f"{info['recall_fp32_ir']:.1f}% -> {info['recall_int8_ir']:.1f}%")


def check_int8_recall(info, max_recall_drop=10.0, allow=False, calibration=None):
    """Refuse (OteError, one line) an INT8 model whose recall at the operating score fell more than
    ``max_recall_drop`` points below the FP32 IR's, though its AP passed: the demo and Model API keep only
    detections above that score, so such a model finds few faces (e.g. calibration on images without faces
    squeezes the scores below it). ``allow``: a warning line instead. Logs ``int8_summary`` first."""
    log.info(int8_summary(info))
    drop = info["recall_fp32_ir"] - info["recall_int8_ir"]
    if drop <= max_recall_drop:
        return
    where = f" (calibration images: {calibration})" if calibration else ""
    line = (f"INT8's AP {info['ap_fp32_ir']:.2f} -> {info['ap_int8_ir']:.2f} is within --max-drop, but its recall "
            f"at score {info['operating_score']:g} (the IR's confidence_threshold) falls {info['recall_fp32_ir']:.1f}% -> "
            f"{info['recall_int8_ir']:.1f}%, more than --max-recall-drop {max_recall_drop:g} points: calibration "
            f"images unlike the frames to detect on{where}?")
    if not allow:
        raise OteError(line + " Nothing written; --allow-recall-drop writes it anyway")
    log.warning("warning: %s Written anyway (--allow-recall-drop)", line)


def layer_groups(model):
    """Convolutions of an IR outside its post-processing: about the number of quantizer groups NNCF's
    accuracy control ranks (one validation each) and may return to floating point (one validation each)."""
    return sum(1 for op in model.get_ordered_ops() if op.get_type_name() in _CONVOLUTIONS)


class ValidationProgress:
    """The validation function given to ``nncf.quantize_with_accuracy_control`` (``metric(compiled, items)``:
    the AP on those validation items), with a progress bar of NNCF's validations and an estimate.

    NNCF validates once on one item (to tell its mode), then the FP32 and the INT8 model on the whole set
    and on each item alone: 3 + 2 x ``num_items`` calls. When the drop exceeds ``max_drop`` it goes on:
    it ranks the quantizer groups (about ``groups``, one validation each, each on a model it compiles)
    and returns them to floating point one at a time (one validation each): the bar's total becomes
    2 x ``groups`` more, and a line gives the estimate from the time of the first ranking validation
    (NNCF's own work between calls included). A step that does not help makes NNCF rank the remaining
    groups again: the total grows by those, and the bar's remaining time with it."""

    def __init__(self, metric, num_items, groups, max_drop):
        self.metric, self.num_items, self.groups, self.max_drop = metric, int(num_items), int(groups), float(max_drop)
        self.first_phase = 3 + 2 * self.num_items
        self.calls, self.bar, self.last = 0, None, None

    def __enter__(self):
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm
        self._redirect = logging_redirect_tqdm()  # log lines above the bar, not glued to it
        self._redirect.__enter__()
        self.bar = tqdm(total=self.first_phase, unit="validation", desc="INT8 accuracy control", dynamic_ncols=True,
                        leave=False)
        self.last = time.time()
        return self

    def __exit__(self, *exc):
        self.bar.close()
        self._redirect.__exit__(*exc)

    def __call__(self, compiled, items):
        value = self.metric(compiled, list(items))
        self.calls += 1
        now = time.time()
        since, self.last = now - self.last, now
        if self.calls == self.first_phase + 1:  # the drop exceeds max_drop: ranking, then reverting
            self.bar.total = self.first_phase + 2 * self.groups
            self.bar.refresh()
            rest = 2 * self.groups - 1
            log.info("PTQ accuracy control: the INT8 drop exceeds %g AP points: ranking %d layer groups and returning "
                     "them to floating point one by one, about %d more validations of %.1f s: ~%s (more when NNCF "
                     "ranks again after a step that does not help; a larger --max-drop ends sooner)",
                     self.max_drop, self.groups, rest, since, _duration(rest * since))
        elif self.calls > self.bar.total:  # re-ranking: about the remaining groups again
            self.bar.total = self.calls + max(1, self.groups // 2)
            self.bar.refresh()
        self.bar.update(1)
        return value


def _duration(seconds):
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _load_items(coco, resizer):
    """(image id, [1, 3, h, w] float32, scale, frame (h, w)) per image of ``coco``."""
    items = []
    for img in coco["images"]:
        frame = read_image(img["path"])
        tensor, scale = resizer.preprocess(frame)
        items.append((img["id"], tensor.numpy()[None], scale, frame.shape[:2]))
    return items


def ir_accuracy(model, compiled, items, coco, keep_ratio=False, score_thr=None):
    """{"ap": COCO AP (%), "recall": % of the faces found at IoU 0.5 by detections with score >=
    ``score_thr`` (``evaluation.size_report``; None: not computed)} of ``model`` compiled as ``compiled``
    on preprocessed ``items``, decoded by the predictor eval.py uses (either output contract)."""
    from ..evaluation.size_report import face_size_report
    predictor = OpenVINOPredictor.from_compiled(model, compiled, keep_ratio=keep_ratio)
    dets = {key: predictor.postprocess(predictor.infer_batch(tensor)[0], scale, frame_hw)[:, :5]
            for key, tensor, scale, frame_hw in items}
    if len(dets) < len(coco["images"]):  # a subset (NNCF's per-item and ranking validations): AP on it alone
        coco = dict(coco, images=[img for img in coco["images"] if img["id"] in dets],
                    annotations=[a for a in coco["annotations"] if a["image_id"] in dets])
    if not any(not a.get("iscrowd") for a in coco["annotations"]):
        return {"ap": 100.0, "recall": 100.0}  # no face to find (one image without faces): nothing missed
    recall = face_size_report(coco, dets, score_thr)["recall_all"] if score_thr is not None else None
    return {"ap": float(evaluate_detections(coco, dets, ["ap"])["ap"]), "recall": recall}


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
                               val_data_roots=None, max_drop=1.0, input_size=None, aspect=None, settings=None,
                               subset_size=300, max_recall_drop=10.0, allow_recall_drop=False):
    """Write the INT8 IR (``model.xml``/``.bin``) and ``ptq_info.yaml`` to ``out_dir``; returns the info dict.
    ``load_weights``: the snapshot's path, or its ``artefacts.kinds.Checkpoint`` already opened. An INT8
    model whose recall at the operating score falls more than ``max_recall_drop`` points is refused before
    anything is written (``check_int8_recall``; ``allow_recall_drop``: a warning)."""
    if not val_ann_files:
        raise OteError("--ptq needs --val-ann-files/--val-data-roots: the accuracy of the quantized model is "
                       "measured on them")
    snapshot = open_artefact(load_weights, expect=(Checkpoint,))  # (as it is when already opened)
    model, _, meta = task.load_snapshot(snapshot, with_meta=True)
    load_weights = snapshot.path
    train_coco = load_coco_files(train_ann_files, train_data_roots, task.classes, flags="--train")
    # the snapshot's geometry (letterboxed after train.py --input-size Wx), or --input-size (WxH stretched; Wx
    # letterboxed, its height from --aspect or the training frames): the decision compress.py's fine-tuning
    # makes (Task.resolve_geometry), said in one line
    size, keep_ratio = task.resolve_geometry(tuple(input_size) if input_size else None, meta, load_weights,
                                             common_frame_hw(train_coco["images"]), aspect, role="compress")
    val_coco = load_coco_files(val_ann_files, val_data_roots, task.classes, flags="--val")
    fp32, _ = convert_to_openvino(model, size, classes=task.classes, keep_ratio=keep_ratio)
    resizer = _Resizer(size, keep_ratio)
    calib = [item[1] for item in _load_items(train_coco, resizer)]
    val = _load_items(val_coco, resizer)
    num_init = quantization_params((settings.algorithms if settings else {}).get("quantization") or {})[0]
    subset = max(1, min(len(calib), max(num_init, subset_size)))
    quantized, qinfo = quantize_ir_model(fp32, calib, val, val_coco, max_drop=max_drop, keep_ratio=keep_ratio,
                                         subset_size=subset)
    ap_fp32, ap_int8, elapsed = qinfo["ap_fp32_ir"], qinfo["ap_int8_ir"], qinfo["seconds"]
    check_int8_recall(qinfo, max_recall_drop, allow_recall_drop)
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
                    "bias_correction": qinfo["bias_correction"], "validation_images": len(val), "ap_fp32_ir": ap_fp32, "ap_int8_ir": ap_int8,
                    "operating_score": qinfo["operating_score"], "recall_fp32_ir": qinfo["recall_fp32_ir"],
                    "recall_int8_ir": qinfo["recall_int8_ir"],
                    "seconds": round(elapsed, 1), "cpu": qinfo["cpu"]}
            with open(os.path.join(tmp, "ptq_info.yaml"), "w", encoding="utf-8") as f:
                yaml.safe_dump(info, f, sort_keys=False)
            # what eval.py / visualize.py check before reading an IR: its template, classes, file checksums and
            # the quantized model's own size and complexity (a pruned one's: smaller)
            write_export_info(tmp, ExportInfo(
                template=task.name, classes=list(task.classes), precision="INT8 (PTQ)",
                input={"input_size": list(size), "keep_ratio": keep_ratio}, source_snapshot=os.path.abspath(load_weights),
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


def int8_sources(calibration_images=None, val_ann_files=None, val_data_roots=None, classes=("face",),
                 calibration_limit=300, measured_by=None):
    """What ``export.py --int8`` quantizes with, checked before any work (one line each): the validation set
    (COCO dict, None without ``val_ann_files``) and the calibration image paths (``calibration_images``: a
    folder or COCO json, ``calibration_paths``; else the validation images). Returns a dict for
    ``int8_of_exported_ir``. ``measured_by``: who measures the INT8 model's accuracy instead when there is
    no validation set (the size sweep): then no warning says it was not measured."""
    if not calibration_images and not val_ann_files:
        raise OteError("--int8 needs images: --val-ann-files/--val-data-roots (accuracy control; the AP before and "
                       "after is recorded) and/or --calibration-images DIR")
    if bool(val_ann_files) != bool(val_data_roots):
        raise OteError("give --val-ann-files and --val-data-roots together")
    val_coco = load_coco_files(val_ann_files, val_data_roots, tuple(classes), flags="--val") if val_ann_files else None
    if calibration_images:
        paths = calibration_paths(calibration_images, calibration_limit)
    else:
        paths = [img["path"] for img in val_coco["images"]][:calibration_limit]
    return {"val_coco": val_coco, "paths": paths, "measured_by": measured_by,
            "source": (os.path.abspath(calibration_images) if isinstance(calibration_images, (str, os.PathLike))
                       else f"{len(paths)} given images" if calibration_images else "validation images")}


def int8_of_exported_ir(fp32, size, keep_ratio, sources, max_drop=1.0, max_recall_drop=10.0,
                        allow_recall_drop=False):
    """``export.py --int8``: the INT8 ``ov.Model`` of the FP32 IR ``fp32`` (input ``size`` (w, h), frames
    letterboxed when ``keep_ratio``) and its info for export_info.yaml. ``sources``: ``int8_sources``. With a
    validation set the quantization has accuracy control on it (AP before / after recorded), and the recall
    at the operating score is checked (``check_int8_recall``); calibration is on ``sources['paths']``."""
    val_coco = sources["val_coco"]
    val_items = _load_items(val_coco, _Resizer(size, keep_ratio)) if val_coco is not None else None
    calib = calibration_tensors(sources["paths"], size, keep_ratio)
    log.info("INT8 calibration images: %d from %s", len(calib), sources["source"])
    quantized, info = quantize_ir_model(fp32, calib, val_items, val_coco, max_drop=max_drop, keep_ratio=keep_ratio)
    info["calibration_source"] = sources["source"]
    if val_items:
        check_int8_recall(info, max_recall_drop, allow_recall_drop, sources["source"])
    else:
        info["ap_fp32_ir"] = info["ap_int8_ir"] = None  # not measured here: no annotated images given
        if not sources.get("measured_by"):
            log.warning("INT8 without --val-ann-files: neither its AP nor its recall at the operating score was "
                        "measured")
    return quantized, info
