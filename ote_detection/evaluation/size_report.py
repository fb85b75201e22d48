"""Face-size operating-range report: recall at IoU 0.5 per face size, in the frame's own pixels.

Where does a detector stop finding faces? ``face_size_report`` bins the ground-truth faces by size and
gives, per bin, the share that a detection finds

* at the operating score threshold (``score_thr``, default 0.5: what a deployed detector keeps), and
* at the lowest score the model outputs (every detection kept: the best recall achievable at this
  input size; the gap to the first is what a lower threshold could buy).

Face size = ``sqrt(w * h)`` of the ground-truth box in original pixels (the side of the square of the
same area: robust to the tall boxes of faces, the scale the detector sees; a 12x16 face counts 13.9).
Bins: ``< 16``, ``16-32``, ``32-64``, ``64-128``, ``128-256``, ``>= 256`` (lower bound inclusive).

Matching, per image: detections (score >= threshold) in descending score order each take the
still-unmatched ground-truth box of highest IoU if that IoU is >= 0.5 (greedy, one detection per face,
as COCO's evaluation matches). Ground truth marked ``iscrowd`` or ``ignore`` is left out of the counts.

metrics.yaml keys (outside the template's seven): ``recall_lt16``, ``recall_16_32``, ``recall_32_64``,
``recall_64_128``, ``recall_128_256``, ``recall_ge256`` (percent at the threshold), the same with
``best_recall_`` (lowest score), ``faces_<bin>`` (counts) and ``recall_all`` / ``best_recall_all`` /
``faces_all`` over every face. A bin without faces has recall NaN.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torchvision.ops import box_iou

__all__ = ["BINS", "face_size_report", "format_size_report", "size_report_entries", "face_sizes"]

# (key suffix, display label, lower bound inclusive, upper bound exclusive)
BINS = (
    ("lt16", "< 16", 0.0, 16.0),
    ("16_32", "16-32", 16.0, 32.0),
    ("32_64", "32-64", 32.0, 64.0),
    ("64_128", "64-128", 64.0, 128.0),
    ("128_256", "128-256", 128.0, 256.0),
    ("ge256", ">= 256", 256.0, math.inf),
)
IOU_THR = 0.5


def face_sizes(wh):
    """sqrt(w * h) of [N, 2] widths and heights."""
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    return np.sqrt(np.clip(wh[:, 0], 0, None) * np.clip(wh[:, 1], 0, None))


def _bin_index(sizes):
    edges = np.array([b[3] for b in BINS[:-1]])
    return np.searchsorted(edges, sizes, side="right")


def _matched(gt_xyxy, dets, score_thr):
    """Boolean per gt box: found by a detection with score >= score_thr at IoU >= 0.5 (greedy)."""
    found = np.zeros(len(gt_xyxy), bool)
    if not len(gt_xyxy) or dets is None or not len(dets):
        return found
    d = np.asarray(dets, np.float64).reshape(-1, np.asarray(dets).shape[-1])
    d = d[d[:, 4] >= score_thr]
    if not len(d):
        return found
    d = d[np.argsort(-d[:, 4], kind="stable")]
    iou = box_iou(torch.as_tensor(d[:, :4]), torch.as_tensor(gt_xyxy)).numpy()
    for row in iou:
        row = np.where(found, -1.0, row)
        j = int(np.argmax(row))
        if row[j] >= IOU_THR:
            found[j] = True
    return found


def face_size_report(coco, dets, score_thr=0.5):
    """Recall per face-size bin. ``coco``: COCO dict (images, annotations [x, y, w, h]);
    ``dets``: ``{image_id: [N, 5+] (x1, y1, x2, y2, score, ...)}`` in original pixels.

    Returns ``{key: value}`` with the keys listed in the module docstring (recall in percent)
    and ``score_thr``.
    """
    by_image = {}
    for ann in coco.get("annotations", []):
        if ann.get("iscrowd") or ann.get("ignore"):
            continue
        by_image.setdefault(ann["image_id"], []).append(ann["bbox"])
    n_bins = len(BINS)
    counts = np.zeros(n_bins, np.int64)
    hits = np.zeros(n_bins, np.int64)
    best = np.zeros(n_bins, np.int64)
    for image_id, boxes in by_image.items():
        b = np.asarray(boxes, np.float64).reshape(-1, 4)
        xyxy = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)
        idx = _bin_index(face_sizes(b[:, 2:]))
        d = dets.get(image_id)
        found = _matched(xyxy, d, score_thr)
        found_best = _matched(xyxy, d, -math.inf)
        counts += np.bincount(idx, minlength=n_bins)
        hits += np.bincount(idx[found], minlength=n_bins)
        best += np.bincount(idx[found_best], minlength=n_bins)
    out = {"score_thr": float(score_thr)}

    def pct(k, n):
        return 100.0 * float(k) / float(n) if n else math.nan

    for i, (key, _, _, _) in enumerate(BINS):
        out[f"recall_{key}"] = pct(hits[i], counts[i])
        out[f"best_recall_{key}"] = pct(best[i], counts[i])
        out[f"faces_{key}"] = int(counts[i])
    out["recall_all"] = pct(hits.sum(), counts.sum())
    out["best_recall_all"] = pct(best.sum(), counts.sum())
    out["faces_all"] = int(counts.sum())
    return out


def format_size_report(report, title=None):
    """The report as a text table: one row per size bin (faces, recall at the threshold, best recall)."""
    thr = report.get("score_thr", 0.5)
    head = ("face size (px, sqrt(w*h))", "faces", f"recall @ score>={thr:g} (%)", "best recall (%)")
    rows = [head]

    def f(v):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"

    for key, label, _, _ in BINS + (("all", "all", 0, 0),):
        rows.append((label, str(report.get(f"faces_{key}", 0)), f(report.get(f"recall_{key}")),
                     f(report.get(f"best_recall_{key}"))))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [title] if title else []
    for n, r in enumerate(rows):
        lines.append("  ".join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def size_report_entries(report):
    """metrics.yaml entries ``{key, display_name, unit, value}`` for the report (after the template's)."""
    entries = []
    for key, label, _, _ in BINS + (("all", "all sizes", 0, 0),):
        entries.append({"key": f"recall_{key}", "display_name": f"Recall, faces {label} px "
                        f"(IoU 0.5, score >= {report.get('score_thr', 0.5):g})", "unit": "%",
                        "value": _plain(report.get(f"recall_{key}"))})
        entries.append({"key": f"best_recall_{key}", "display_name": f"Best recall, faces {label} px "
                        "(IoU 0.5, every detection)", "unit": "%", "value": _plain(report.get(f"best_recall_{key}"))})
        entries.append({"key": f"faces_{key}", "display_name": f"Faces {label} px", "unit": "",
                        "value": int(report.get(f"faces_{key}", 0))})
    return entries


def _plain(v):
    return float(v) if v is not None else math.nan


def deployment_metrics(coco, dets, score_thr=0.5):
    """What a deployment input size is judged by (the size sweep, ``apis.choose_input_size``;
    ``benchmarks/bench_small_faces.py``): ``ap`` (COCO AP@[.5:.95], ``coco_ap``), ``ap50`` (its AP@.50), in
    percent, and the recall of faces under 32 px (``recall_small``: at ``score_thr``; ``best_recall_small``:
    at any score) over the < 16 and 16-32 px bins of ``face_size_report``, with ``faces_small`` (their count)
    and ``report`` (the whole report). NaN where there is nothing to measure. ``dets``: image id -> [N, 5+]."""
    from .coco_ap import coco_ap
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
            "faces_small": small_n, "report": report}
