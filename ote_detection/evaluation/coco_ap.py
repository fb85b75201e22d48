"""COCO AP@[.5:.95] computed the way OTE reported its ``ap`` metric.

How OTE computed it (read in openvinotoolkit/mmdetection, ``mmdet/datasets/coco.py``,
``CocoDataset.evaluate``, used by OTE's ``eval.py`` with ``metric='bbox'``):

* detections are written as COCO results ``bbox = [x1, y1, x2 - x1, y2 - y1]`` (no +1),
  ``score`` and the 'face' category id, and loaded with ``COCO.loadRes``;
* ``COCOeval(gt, dt, 'bbox')`` with ``params.catIds`` = the 'face' category, ``params.imgIds`` =
  every image of the test set, ``params.iouThrs`` = 0.50:0.05:0.95 (the default) and
  ``params.maxDets = [100, 300, 1000]`` (mmdet's ``proposal_nums`` default);
* the reported ``bbox_mAP`` is ``cocoEval.stats[0]``.  ``summarize()`` computes ``stats[0]`` as
  ``_summarize(1)`` whose ``maxDets`` defaults to **100**: AP averaged over IoU 0.50:0.95, all
  areas, at most the 100 highest-scoring detections per image.  (``maxDets[2] = 1000`` is only
  used by ``stats[1:]``.)

Here: the same pycocotools code (``COCO`` built from the in-memory dict, ``loadRes`` from an
array, ``COCOeval``), silenced.  By default (``fast=True``) ``COCOeval`` runs with
``maxDets=[100]`` and the single area range 'all', and the value is read from
``eval['precision']`` exactly as ``_summarize(1)`` does.  Greedy matching in score order means
the top 100 detections are matched identically whether 100 or 1000 are evaluated, so this gives
the same number as OTE's ``stats[0]`` at a fraction of the cost (for the same reason only the
100 best detections of each image are handed to pycocotools; the test suite checks that both
paths agree).  ``fast=False`` runs OTE's parameters and ``summarize()`` literally.

Deviations (all to make an in-memory merged dict safe, none changes a well-formed result):
annotation ids are renumbered 1..N (pycocotools treats a matched ground-truth id of 0 as
"unmatched", and ids of merged files may collide); a missing ``iscrowd`` is 0 and a missing
``area`` is ``w * h``.  pycocotools uses ``iscrowd`` (not an ``ignore`` key) for ignoring.
"""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np

__all__ = ["coco_ap", "face_category_id", "check_detections"]


def as_detection_array(dets, what):
    """Check one image's detections: a finite [N, 5] array (x1, y1, x2, y2, score); empty -> [0, 5]."""
    arr = np.asarray(dets)
    if arr.size == 0:
        return np.zeros((0, 5), dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != 5:
        raise ValueError(f"detections for {what} must have shape [N, 5] (x1, y1, x2, y2, score); got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"detections for {what} contain NaN or infinite values")
    return arr


def face_category_id(coco_gt: dict) -> int:
    """The category id evaluated as 'face': the one named 'face', or the only category."""
    cats = coco_gt.get("categories") or []
    named = [c["id"] for c in cats if str(c.get("name", "")).lower() == "face"]
    if len(named) == 1:
        return named[0]
    if len(cats) == 1:
        return cats[0]["id"]
    if not cats:
        raise ValueError("coco_gt has no 'categories'; expected one category 'face'")
    raise ValueError(
        "coco_gt must have one category named 'face' (or exactly one category); got "
        + ", ".join(repr(c.get("name")) for c in cats))


def check_detections(coco_gt: dict, detections: dict) -> dict:
    """Validate ``{image_id: array[N, 5]}`` against the ground truth and return float arrays."""
    image_ids = {img["id"] for img in coco_gt.get("images", [])}
    if len(image_ids) != len(coco_gt.get("images", [])):
        raise ValueError("coco_gt has duplicate image ids (merge files with distinct ids)")
    out = {}
    unknown = []
    for image_id, dets in detections.items():
        if image_id not in image_ids:
            unknown.append(image_id)
            continue
        out[image_id] = as_detection_array(dets, f"image {image_id!r}")
    if unknown:
        raise ValueError(f"detections refer to {len(unknown)} image id(s) not in the ground truth, "
                         f"e.g. {unknown[:5]}")
    return out


def _gt_copy(coco_gt: dict) -> dict:
    """A pycocotools-safe shallow copy: unique ann ids 1..N, iscrowd/area filled in."""
    anns = []
    for new_id, ann in enumerate(coco_gt.get("annotations", []), start=1):
        a = dict(ann)
        a["id"] = new_id
        a["iscrowd"] = int(a.get("iscrowd", 0) or 0)
        if "area" not in a:
            a["area"] = float(a["bbox"][2]) * float(a["bbox"][3])
        anns.append(a)
    images = [{k: img[k] for k in ("id", "width", "height", "file_name") if k in img}
              for img in coco_gt.get("images", [])]
    return {"images": images, "annotations": anns,
            "categories": [dict(c) for c in coco_gt.get("categories", [])]}


def _results_array(detections: dict, cat_id: int, top_k: int | None = None) -> np.ndarray:
    """COCO results as an [N, 7] array: image_id, x, y, w, h, score, category_id.

    ``top_k``: keep only the k highest-scoring detections of each image (stable on ties, and
    in input order, so pycocotools' own stable sort + ``[:maxDet]`` picks the same ones).
    """
    rows = []
    for image_id, dets in detections.items():
        if len(dets) == 0:
            continue
        d = np.asarray(dets, dtype=np.float64)
        if top_k is not None and len(d) > top_k:
            keep = np.sort(np.argsort(-d[:, 4], kind="stable")[:top_k])
            d = d[keep]
        block = np.empty((len(d), 7), dtype=np.float64)
        block[:, 0] = image_id
        block[:, 1] = d[:, 0]
        block[:, 2] = d[:, 1]
        block[:, 3] = d[:, 2] - d[:, 0]
        block[:, 4] = d[:, 3] - d[:, 1]
        block[:, 5] = d[:, 4]
        block[:, 6] = cat_id
        rows.append(block)
    return np.concatenate(rows) if rows else np.zeros((0, 7))


def coco_ap(coco_gt: dict, detections: dict, fast: bool = True, return_curves: bool = False):
    """COCO AP@[.5:.95] (maxDets 100, all areas) as a fraction 0..1, as OTE's ``ap``.

    ``detections``: image_id -> array [N, 5] (x1, y1, x2, y2, score), w = x2 - x1.
    Returns NaN when the ground truth has no (non-crowd) face; 0.0 when there are faces but no
    detections.  With ``return_curves`` also returns ``{name: (recall, precision, ap)}`` for the
    101-point interpolated curves (mean over IoU 0.50:0.95, IoU 0.50, IoU 0.75).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    cat_id = face_category_id(coco_gt)
    detections = check_detections(coco_gt, detections)
    gt = _gt_copy(coco_gt)
    n_pos = sum(1 for a in gt["annotations"] if a["category_id"] == cat_id and not a["iscrowd"])
    # fast: only the 100 best per image can count at maxDets=100, skip the rest early
    results = _results_array(detections, cat_id, top_k=100 if fast else None)
    if len(results) == 0 or n_pos == 0:
        ap = 0.0 if n_pos else math.nan
        if return_curves:
            return ap, {}
        return ap

    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        coco_dt = coco.loadRes(results)
        ev = COCOeval(coco, coco_dt, "bbox")
        ev.params.catIds = [cat_id]
        ev.params.imgIds = sorted(img["id"] for img in gt["images"])
        if fast:
            ev.params.maxDets = [100]
            ev.params.areaRng = [[0 ** 2, 1e5 ** 2]]
            ev.params.areaRngLbl = ["all"]
        else:
            ev.params.maxDets = [100, 300, 1000]
        ev.evaluate()
        ev.accumulate()
        # precision: [T iou, R recall, K cat, A area, M maxDets]
        m = list(ev.params.maxDets).index(100)
        a = list(ev.params.areaRngLbl).index("all")
        prec = ev.eval["precision"][:, :, 0, a, m]
        valid = prec[prec > -1]
        ap = float(np.mean(valid)) if valid.size else math.nan
        if not fast:
            ev.summarize()
            ap = float(ev.stats[0])
            if ap == -1:
                ap = math.nan
    if not return_curves:
        return ap
    rec_thrs = np.asarray(ev.params.recThrs)
    curves = {}
    masked = np.where(prec > -1, prec, np.nan)
    with np.errstate(invalid="ignore"), _warnings_off():
        curves["AP@[.5:.95]"] = (rec_thrs, np.nanmean(masked, axis=0), ap)
    for thr, name in ((0.5, "AP@.50"), (0.75, "AP@.75")):
        t = int(np.argmin(np.abs(np.asarray(ev.params.iouThrs) - thr)))
        p = masked[t]
        curves[name] = (rec_thrs, p, float(np.nanmean(p)) if np.any(~np.isnan(p)) else math.nan)
    return ap, curves


@contextlib.contextmanager
def _warnings_off():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        yield
