"""Input-size sweep: which deployment input size does a model need on a validation set?

``choose_input_size(template, weights, ann_files, data_roots, sizes)`` exports the snapshot at each size as
export.py does (``apis.export.write_export``: model.xml/.bin with export_info.yaml; SSD priors are made for
that size, the IR keeps the OMZ output contract), runs it through the predictor eval.py uses
(``inference.factory.make_predictor``) on the validation frames, boxes mapped back to the frames, and
measures COCO AP, AP50, the recall of small faces (< 32 px; ``evaluation.size_report.deployment_metrics``)
and the latency per frame with 1 thread and with all threads (OpenVINO on the CPU; the precision is stated
in the table; the time covers letterbox or resize + inference + decoding of one frame, frames decoded
beforehand). Each size's geometry is the one eval, the demo and export give it
(``inference.deploy.deployment_geometry``): ``Wx`` letterboxed with the height from the frames' aspect,
``W`` and ``WxH`` stretched, unless ``keep_ratio`` says True or False for all. The smallest size whose AP50
is within ``tolerance`` (1 point) of the best one is marked as the choice. ``int8_calibration`` adds a
post-training INT8 row per size (export.py --int8's quantization, ``compression.ptq.int8_of_exported_ir``,
calibrated on a few images resized as the frames are).
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
from ..evaluation.size_report import deployment_metrics
from ..inference.deploy import common_frame_hw, deployment_geometry, model_stride
from ..inference.factory import make_predictor
from ..artefacts.kinds import IR, Checkpoint, open_artefact
from ..utils.errors import OteError
from .export import write_export
from .task import Task

log = logging.getLogger(__name__)

__all__ = ["choose_input_size", "sweep_geometries", "export_flags", "evaluate_predictor", "time_predictor",
           "format_sweep", "load_frames", "mark_choice", "parse_size_list"]


def load_frames(coco):
    return [read_image(img["path"]) for img in coco["images"]]


def evaluate_predictor(predictor, coco, frames, score_thr=0.5):
    """``deployment_metrics`` (AP, AP50 in percent, the small-face recall, the face-size report) of
    ``predictor`` on the decoded ``frames`` of ``coco``'s images, with its detections (``dets``)."""
    results = predictor.predict_frames(list(frames))
    dets = {img["id"]: np.asarray(r[:, :5], np.float32) for img, r in zip(coco["images"], results)}
    return dict(deployment_metrics(coco, dets, score_thr), dets=dets)


def sweep_geometries(specs, frame_hw=None, stride=32, keep_ratio=None):
    """Each geometry ((w, h), keep_ratio) of the size ``specs`` once (640x and 640x384 letterboxed can be the
    same), in order: ``deployment_geometry`` of each spec with the frames' (h, w) and the model's stride."""
    out = []
    for spec in specs:
        geometry = deployment_geometry(spec, frame_hw=frame_hw, stride=stride, keep_ratio=keep_ratio)
        if geometry not in out:
            out.append(geometry)
    return out


def export_flags(size, keep_ratio, frame_hw=None, stride=32):
    """export.py's flags that give the geometry ``size`` (w, h) / ``keep_ratio``: ``--input-size WxH``
    (stretched), or ``--input-size Wx --aspect A`` (letterboxed; A the frames' aspect, else W:H); None when
    export.py cannot make it (a letterboxed height that is not the stride's multiple)."""
    w, h = (int(v) for v in size)
    if not keep_ratio:
        return f"--input-size {w}x{h}"
    for aspect in ([f"{int(frame_hw[1])}:{int(frame_hw[0])}"] if frame_hw else []) + [f"{w}:{h}"]:
        if deployment_geometry((w, None), aspect=aspect, stride=stride) == ((w, h), True):
            return f"--input-size {w}x --aspect {aspect}"
    return None


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


def choose_input_size(template, weights, ann_files, data_roots, sizes, precision="default", keep_ratio=None,
                      int8_calibration=None, calibration_images=10, save_irs_to=None, score_thr=0.5,
                      tolerance=1.0, repeats=1, all_threads=True, progress=True, data_format="coco",
                      val_subset=None):
    """The sweep; returns ``(rows, choice index)``; each row: size, keep_ratio, precision, ap, ap50,
    recall_small, best_recall_small, ms_1 (1 thread), cpu_ms_1, ms_all (all threads, or NaN), xml, export_flags.
    ``keep_ratio``: None (each size as ``deployment_geometry`` decides), True (all letterboxed) or False (all
    stretched). ``save_irs_to``: one export folder per size (export.py's files), default a temporary folder."""
    task = Task(template)
    snapshot = open_artefact(weights, expect=(Checkpoint,),
                             refuse={IR: "an IR has one input size; give the PyTorch snapshot (.pth) to sweep sizes"})
    specs = parse_size_list(sizes)  # checked before any model is built
    model, _ = task.load_snapshot(snapshot)
    coco = load_dataset(ann_files, data_roots, data_format, val_subset, "val", task.classes).load()
    frames = load_frames(coco)
    frame_hw = common_frame_hw(coco["images"])
    stride = model_stride(model)
    geometries = sweep_geometries(specs, frame_hw, stride, keep_ratio)
    sources = None
    if int8_calibration:  # the images are listed before any export
        from ..compression.ptq import int8_sources
        sources = int8_sources(int8_calibration, classes=task.classes, calibration_limit=calibration_images,
                               measured_by="the size sweep")
    out_dir = save_irs_to or tempfile.mkdtemp(prefix="ote_sizes_")
    rows = []
    from tqdm import tqdm
    for size, keep in tqdm(geometries, desc="sizes", disable=not progress):
        name = f"{size[0]}x{size[1]}"
        folder = name + ("_letterboxed" if keep and (size, False) in geometries else "")
        xml = write_export(task, model, weights, os.path.join(out_dir, folder), size, keep, int8_sources=sources)
        variants = [("FP32 IR, " + precision, xml)]
        if sources is not None:  # export.py --int8's set: model.xml INT8, model_fp32.xml
            variants = [("FP32 IR, " + precision, os.path.join(os.path.dirname(xml), "model_fp32.xml")),
                        ("INT8 IR, " + precision, xml)]
        for label, path in variants:
            pred = make_predictor(task, path, precision, threads=1)  # the IR's geometry, as eval.py runs it
            row = {"size": tuple(pred.input_size), "keep_ratio": bool(pred.keep_ratio), "precision": label,
                   "xml": path, "export_flags": export_flags(size, keep, frame_hw, stride)}
            row.update({k: v for k, v in evaluate_predictor(pred, coco, frames, score_thr).items()
                        if k not in ("report", "dets")})
            row["ms_1"] = time_predictor(pred, frames, repeats)
            row["cpu_ms_1"] = time_predictor(pred, frames, repeats, cpu=True)
            if all_threads:
                row["ms_all"] = time_predictor(make_predictor(task, path, precision), frames, repeats)
            else:
                row["ms_all"] = math.nan
            rows.append(row)
            log.info("%s %s %s: AP %.1f AP50 %.1f small recall %.1f, %.1f ms (1 thread)", name,
                     "letterboxed" if keep else "stretched", label, row["ap"], row["ap50"], row["recall_small"],
                     row["ms_1"])
    return rows, mark_choice(rows, tolerance)


def format_sweep(rows, choice=None, score_thr=0.5, title=None):
    """The sweep's table: one line per row (input size and letterboxed / stretched, model, metrics, times)."""
    head = ("input", "model", "AP", "AP50", f"recall<32px@{score_thr:g}", "best recall<32px", "ms 1 thr",
            "CPU ms 1 thr", "ms all thr", "")
    table = [head]

    def f(v):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"

    def geometry(r):
        fit = {True: " letterboxed", False: " stretched"}.get(r.get("keep_ratio"), "")
        return f"{r['size'][0]}x{r['size'][1]}{fit}"

    for i, r in enumerate(rows):
        table.append((geometry(r), r.get("precision", ""), f(r["ap"]), f(r["ap50"]),
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
