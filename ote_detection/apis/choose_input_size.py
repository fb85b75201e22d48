"""Input-size sweep: which deployment input size does a model need on a validation set?

``choose_input_size(template, weights, ann_files, data_roots, sizes)`` exports the snapshot to an
OpenVINO IR at each size (the IR keeps the OMZ output contract; SSD priors are made for that size),
runs it on the validation frames (letterboxed, aspect kept, boxes mapped back to the frames) and
measures COCO AP, AP50, the recall of small faces (< 32 px, ``face_size_report``) and the latency per
frame with 1 thread and with all threads (OpenVINO on the CPU; the precision is stated in the table;
the time covers letterbox + inference + decoding of one frame, frames decoded beforehand). The
smallest size whose AP50 is within ``tolerance`` (1 point) of the best one is marked as the choice.
``int8_calibration`` adds a post-training INT8 row per size (``nncf.quantize`` on the OpenVINO model,
calibrated on a few letterboxed images).
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import tempfile
import time

import numpy as np

from ..formats.convert import load_dataset
from ..data.images import read_image
from ..inference.deploy import common_frame_hw, deployment_input_size, model_stride
from ..inference.predictor import letterbox
from ..evaluation.coco_ap import coco_ap
from ..evaluation.size_report import face_size_report
from ..export.exporter import convert_to_openvino
from ..export.openvino_export import save_openvino
from ..inference.openvino_predictor import OpenVINOPredictor
from ..artefacts.formats import is_ir
from ..utils.errors import OteError
from .task import Task

log = logging.getLogger(__name__)

__all__ = ["choose_input_size", "export_ir", "quantize_ir", "evaluate_predictor", "time_predictor",
           "format_sweep", "load_frames", "calibration_frames", "mark_choice"]



def export_ir(inference_model, size, xml_path, classes=("face",), keep_ratio=True):
    """Write the IR of ``inference_model`` at ``size`` (w, h) to ``xml_path`` (FP32); returns the path.
    ``keep_ratio``: frames are letterboxed into it (its model_info says so)."""
    import warnings
    os.makedirs(os.path.dirname(os.path.abspath(xml_path)), exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = convert_to_openvino(inference_model, size, classes=classes, keep_ratio=keep_ratio)
    save_openvino(model, xml_path)
    return xml_path


def calibration_frames(source, limit=10):
    """Up to ``limit`` BGR images for INT8 calibration: a folder (searched recursively), a COCO json
    (images beside it or under its ``images/`` folder) or a list of image paths
    (``compression.ptq.calibration_paths``)."""
    from ..compression.ptq import calibration_paths
    return [read_image(p) for p in calibration_paths(source, limit)]


def quantize_ir(xml_path, frames, out_xml, keep_ratio=True, preset="mixed"):
    """Post-training INT8 of an IR (``compression.ptq.quantize_ir_model``, no accuracy control), calibrated on
    ``frames`` (letterboxed to the IR's input like the predictor does); writes ``out_xml``, returns its path."""
    import openvino as ov

    from ..compression.ptq import quantize_ir_model

    model = ov.Core().read_model(xml_path)
    _, _, h, w = (int(d) for d in model.inputs[0].get_shape())
    calib = [np.ascontiguousarray(letterbox(f, (w, h), keep_ratio)[0].transpose(2, 0, 1)[None], dtype=np.float32)
             for f in frames]
    quantized, _ = quantize_ir_model(model, calib, preset=preset, keep_ratio=keep_ratio)
    save_openvino(quantized, out_xml, source=model)
    return out_xml


def load_frames(coco):
    return [read_image(img["path"]) for img in coco["images"]]


def evaluate_predictor(predictor, coco, frames, score_thr=0.5):
    """AP, AP50 (percent), the face-size report and the detections of ``predictor`` on the frames."""
    results = predictor.predict_frames(list(frames))
    dets = {img["id"]: np.asarray(r[:, :5], np.float32) for img, r in zip(coco["images"], results)}
    ap, curves = coco_ap(coco, dets, return_curves=True)
    ap50 = curves.get("AP@.50", (None, None, 0.0))[2] if curves else 0.0
    report = face_size_report(coco, dets, score_thr)
    small_n = report["faces_lt16"] + report["faces_16_32"]

    def combined(prefix):
        if not small_n:
            return math.nan
        hits = sum((report[f"{prefix}{k}"] if report[f"faces_{k}"] else 0.0) * report[f"faces_{k}"]
                   for k in ("lt16", "16_32"))
        return hits / small_n

    return {"ap": 100.0 * ap if not math.isnan(ap) else math.nan,
            "ap50": 100.0 * ap50 if not math.isnan(ap50) else math.nan,
            "recall_small": combined("recall_"), "best_recall_small": combined("best_recall_"),
            "faces_small": small_n, "report": report, "dets": dets}


def time_predictor(predictor, frames, repeats=1, warmup=1, cpu=False):
    """Median ms per frame of ``predictor.predict_frames([frame])`` (letterbox + inference + decoding).

    ``cpu=True``: the process's CPU time instead of the wall-clock time. With one inference thread that is
    the latency the frame would have on an idle core, and it stays meaningful on a machine shared with
    other jobs, where the wall-clock time measures the queue for the cores (with several threads it is
    their sum, not a latency)."""
    clock = time.process_time if cpu else time.perf_counter
    for frame in frames[:warmup]:
        predictor.predict_frames([frame])
    times = []
    for _ in range(max(1, repeats)):
        for frame in frames:
            start = clock()
            predictor.predict_frames([frame])
            times.append(1000.0 * (clock() - start))
    return statistics.median(times)


MAX_SIZES = 32  # each size is an export, an evaluation and timing runs


def parse_size_list(specs):
    """'256,640x,960x544' or a list of strings/pairs -> list of (W, H or None); 1 to ``MAX_SIZES`` of them
    (else one OteError: an empty list would print an empty table and exit 0)."""
    from ..utils.cli import input_size_or_width
    given = specs
    if isinstance(specs, str):
        specs = [s for s in specs.split(",") if s.strip()]
    specs = list(specs or [])
    if not specs:
        raise OteError(f"--sizes {given!r}: no input size given; give one or more, comma-separated, e.g. 256,640x")
    if len(specs) > MAX_SIZES:
        raise OteError(f"--sizes: {len(specs)} sizes given, at most {MAX_SIZES} (each is an export, an evaluation "
                       f"and timing runs)")
    out = []
    for s in specs:
        if isinstance(s, str):
            try:
                out.append(tuple(input_size_or_width(s)))
            except Exception as exc:  # argparse.ArgumentTypeError
                raise OteError(f"input size {s!r}: {exc}") from exc
        elif isinstance(s, int):
            out.append((s, s))
        else:
            out.append(tuple(s))
    return out


def mark_choice(rows, tolerance=1.0, key="ap50"):
    """Index of the smallest (by pixels, then latency) row whose ``key`` is within ``tolerance`` of the best."""
    valid = [i for i, r in enumerate(rows) if not math.isnan(r.get(key, math.nan))]
    if not valid:
        return None
    best = max(rows[i][key] for i in valid)
    ok = [i for i in valid if rows[i][key] >= best - tolerance]
    return min(ok, key=lambda i: (rows[i]["size"][0] * rows[i]["size"][1], rows[i].get("ms_1", 0.0)))


def choose_input_size(template, weights, ann_files, data_roots, sizes, precision="default", keep_ratio=True,
                      int8_calibration=None, calibration_images=10, save_irs_to=None, score_thr=0.5,
                      tolerance=1.0, repeats=1, all_threads=True, progress=True, data_format="coco",
                      val_subset=None):
    """The sweep; returns ``(rows, choice index)``; each row: size, precision, ap, ap50, recall_small,
    best_recall_small, ms_1 (1 thread), ms_all (all threads, or NaN), xml."""
    task = Task(template)
    if is_ir(weights):
        raise OteError(f"{weights}: an IR has one input size; give the PyTorch snapshot (.pth) to sweep sizes")
    specs = parse_size_list(sizes)  # checked before anything is loaded
    model, _ = task.load_snapshot(weights)
    coco = load_dataset(ann_files, data_roots, data_format, val_subset, "val", task.classes).load()
    frames = load_frames(coco)
    frame_hw = common_frame_hw(coco["images"])
    stride = model_stride(model)
    wanted = []  # each size once (640x and 640x368 can be the same input)
    for spec in specs:
        size = deployment_input_size(spec, frame_hw=frame_hw, stride=stride)
        if size not in wanted:
            wanted.append(size)
    calib = calibration_frames(int8_calibration, calibration_images) if int8_calibration else None
    out_dir = save_irs_to or tempfile.mkdtemp(prefix="ote_sizes_")
    rows = []
    from tqdm import tqdm
    for size in tqdm(wanted, desc="sizes", disable=not progress):
        name = f"{size[0]}x{size[1]}"
        xml = export_ir(model, size, os.path.join(out_dir, name, "model.xml"), task.classes, keep_ratio)
        variants = [("FP32 IR, " + precision, xml)]
        if calib is not None:
            q = quantize_ir(xml, calib, os.path.join(out_dir, name, "model_int8.xml"), keep_ratio)
            variants.append(("INT8 IR, " + precision, q))
        for label, path in variants:
            pred = OpenVINOPredictor(path, precision=precision, threads=1, keep_ratio=keep_ratio)
            row = {"size": size, "precision": label, "xml": path}
            row.update({k: v for k, v in evaluate_predictor(pred, coco, frames, score_thr).items()
                        if k not in ("report", "dets")})
            row["ms_1"] = time_predictor(pred, frames, repeats)
            row["cpu_ms_1"] = time_predictor(pred, frames, repeats, cpu=True)
            if all_threads:
                row["ms_all"] = time_predictor(OpenVINOPredictor(path, precision=precision, keep_ratio=keep_ratio),
                                               frames, repeats)
            else:
                row["ms_all"] = math.nan
            rows.append(row)
            log.info("%s %s: AP %.1f AP50 %.1f small recall %.1f, %.1f ms (1 thread)", name, label, row["ap"],
                     row["ap50"], row["recall_small"], row["ms_1"])
    return rows, mark_choice(rows, tolerance)


def format_sweep(rows, choice=None, score_thr=0.5, title=None):
    head = ("input", "model", "AP", "AP50", f"recall<32px@{score_thr:g}", "best recall<32px", "ms 1 thr",
            "CPU ms 1 thr", "ms all thr", "")
    table = [head]

    def f(v):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"

    for i, r in enumerate(rows):
        table.append((f"{r['size'][0]}x{r['size'][1]}", r.get("precision", ""), f(r["ap"]), f(r["ap50"]),
                      f(r.get("recall_small")), f(r.get("best_recall_small")), f(r.get("ms_1")), f(r.get("cpu_ms_1")),
                      f(r.get("ms_all")),
                      "<- smallest within 1 AP50 of the best" if i == choice else ""))
    widths = [max(len(t[i]) for t in table) for i in range(len(head))]
    lines = [title] if title else []
    for n, t in enumerate(table):
        lines.append("  ".join([t[0].ljust(widths[0]), t[1].ljust(widths[1])]
                               + [c.rjust(w) for c, w in zip(t[2:-1], widths[2:-1])] + [t[-1]]).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths[:-1]))
    return "\n".join(lines)
