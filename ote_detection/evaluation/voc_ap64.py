"""OTE's "AP for faces > 64x64" (metric key ``ap_64x64``), re-implemented with numpy.

Definition, as read in openvinotoolkit/training_extensions
``pytorch_toolkit/ote/ote/metrics/face_detection/custom_voc_ap_eval.py`` (``voc_eval`` and
``evaluate_detections``; called by ``face_detection.py::custom_ap_eval`` with
``iou_thr=0.5, imsize=(1024, 1024)`` and reported for ``object_size == (64, 1024)``), on top of
the ground truth that openvinotoolkit/mmdetection ``CocoDataset.get_ann_info`` returns in test
mode:

Ground truth, per image (original image pixels; images are **not** rescaled):

1. mmdet drops annotations with ``ignore: true``, boxes with no overlap with the image
   (``[0, width] x [0, height]``), boxes with ``area <= 0`` or ``w < 1`` or ``h < 1``, other
   categories; ``iscrowd`` boxes go to ``bboxes_ignore``, which this metric never reads (so they
   are simply absent: a detection on a crowd box is a false positive).  The rest become
   ``[x1, y1, x1 + w, y1 + h]`` (float32).
2. OTE adds ``(0, 0, 1, 1)`` ("to compensate pre-processing"), converts back to
   ``[x, y, w, h]`` and rounds every value to an integer (Python ``round``: half to even).  So a
   COCO box of height ``h`` is seen with height ``round(h + 1)``.
3. Clipping to ``imsize = (1024, 1024)`` in original pixels: ``x, y, w, h = max(., 0)`` (note:
   x, y are moved to 0 without shrinking w, h); ``w = min(x + w, 1024) - x``,
   ``h = min(y + h, 1024) - y``; a box with ``w == 0 and h == 0`` becomes ``[-1, -1, -1, -1]``.
4. A box is *ignored* unless ``64 <= h <= 1024`` (height only) and no value equals ``-1``.  For
   integer COCO boxes inside the top 1024 rows this means: counted iff the COCO height is
   ``>= 63`` (63 + 1 = 64); a 62-pixel-high face is ignored.  Faces below row 1024 of a taller
   image are clipped (and ignored when the clipped height drops under 64).

Detections: those with ``score > 0.01``; ``[x1, y1, x2, y2]`` -> ``[x, y, w, h]`` with
``w = x2 - x1`` (in the detections' dtype), each rounded to an integer; not clipped.

Matching (VOC style, IoU threshold 0.5), all detections of all images sorted by score
(descending; ties keep input order here, OTE used an unstable ``np.argsort``), for each
detection on its image:

* overlaps with ordinary boxes are IoU ``inter / (det_area + gt_area - inter)``; with ignored
  boxes the "overlap" is ``inter / det_area`` (the part of the detection inside the box);
  intersections use ``[x, x + w)`` (no +1);
* take the ordinary box with the largest IoU (first one on ties).  If that IoU >= 0.5: true
  positive if that box is not matched yet (it becomes matched), else false positive;
* otherwise, if the image has ignored boxes, take the largest ``inter / det_area`` among them:
  >= 0.5 -> the detection is neither TP nor FP (any number of detections may land on one
  ignored box); else false positive.  An image without boxes: false positive.

Curve and AP: cumulative TP/FP in score order, sampled at the last detection of every distinct
score; ``recall = TP / n_pos`` (n_pos = ordinary boxes of all images), ``precision = TP /
max(TP + FP, eps)``; AP = VOC all-point interpolation (area under the monotone precision
envelope, sentinels (0, 0) and (1, 0)).  OTE printed the result in percent and wrote ``-1.0``
when it was NaN (no ordinary box); here NaN is returned.
"""

from __future__ import annotations

import math

import numpy as np

from .coco_ap import check_detections, face_category_id

__all__ = ["ap_64x64", "voc_ap", "ote_ground_truth"]


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC all-point AP: area under the monotone envelope of precision(recall).

    Sentinels ``(0, 0)`` and ``(1, 0)`` are added; the envelope is a running maximum from the
    right that skips NaN like MATLAB's ``max`` (NaN = precision of an empty prefix).
    """
    mrec = np.concatenate(([0.0], np.asarray(recall, dtype=np.float64), [1.0]))
    mpre = np.concatenate(([0.0], np.asarray(precision, dtype=np.float64), [0.0]))
    mpre = np.fmax.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def ote_ground_truth(coco_gt: dict, cat_id: int, imsize=(1024, 1024), min_height=64,
                     max_height=1024):
    """Per image id: (boxes int64 [G, 4] x, y, w, h after OTE's +1/round/clip, ignored bool [G])."""
    images = {img["id"]: img for img in coco_gt.get("images", [])}
    per_image = {img_id: ([], []) for img_id in images}
    for ann in coco_gt.get("annotations", []):
        img = images.get(ann.get("image_id"))
        if img is None or ann.get("ignore", False) or ann.get("category_id") != cat_id:
            continue
        x1, y1, w, h = (float(v) for v in ann["bbox"][:4])
        width = float(img.get("width", math.inf))
        height = float(img.get("height", math.inf))
        inter_w = max(0.0, min(x1 + w, width) - max(x1, 0.0))
        inter_h = max(0.0, min(y1 + h, height) - max(y1, 0.0))
        area = float(ann["area"]) if "area" in ann else w * h
        if inter_w * inter_h == 0 or area <= 0 or w < 1 or h < 1:
            continue
        if ann.get("iscrowd", False):
            continue  # mmdet: bboxes_ignore, never read by this metric
        box = np.array([x1, y1, x1 + w, y1 + h], dtype=np.float32).astype(np.float64)
        box = box + np.array((0.0, 0.0, 1.0, 1.0))
        xywh = np.rint(np.array([box[0], box[1], box[2] - box[0], box[3] - box[1]]))
        xywh = np.maximum(xywh, 0.0)
        bx, by, bw, bh = xywh
        bw = min(bx + bw, imsize[0]) - bx
        bh = min(by + bh, imsize[1]) - by
        if bw == 0 and bh == 0:
            bx = by = bw = bh = -1.0
        b = np.array([bx, by, bw, bh])
        ignored = not (min_height <= bh <= max_height) or bool(np.any(b == -1))
        per_image[img["id"]][0].append(b)
        per_image[img["id"]][1].append(ignored)
    out = {}
    for img_id, (boxes, ign) in per_image.items():
        out[img_id] = (np.array(boxes, dtype=np.int64).reshape(-1, 4), np.array(ign, dtype=bool))
    return out


def _match_image(dets_xywh: np.ndarray, gt: np.ndarray, ignored: np.ndarray, iou_thr: float):
    """Status of score-sorted detections of one image: 1 TP, 0 FP, -1 neither (on ignored)."""
    n = len(dets_xywh)
    status = np.zeros(n, dtype=np.int8)
    if n == 0 or len(gt) == 0:
        return status
    d = dets_xywh.astype(np.float64)
    g = gt.astype(np.float64)
    ix1 = np.maximum(g[None, :, 0], d[:, None, 0])
    iy1 = np.maximum(g[None, :, 1], d[:, None, 1])
    ix2 = np.minimum(g[None, :, 0] + g[None, :, 2], d[:, None, 0] + d[:, None, 2])
    iy2 = np.minimum(g[None, :, 1] + g[None, :, 3], d[:, None, 1] + d[:, None, 3])
    inter = np.maximum(ix2 - ix1, 0.0) * np.maximum(iy2 - iy1, 0.0)
    det_area = (d[:, 2] * d[:, 3])[:, None]
    gt_area = (g[:, 2] * g[:, 3])[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        union = np.where(ignored[None, :], det_area, det_area + gt_area - inter)
        overlaps = inter / union

    best = np.full(n, -np.inf)
    best_idx = np.zeros(n, dtype=np.int64)
    ordinary = np.flatnonzero(~ignored)
    if ordinary.size:
        ov = overlaps[:, ordinary]
        best = ov.max(axis=1)  # NaN propagates, as in OTE's np.max
        best_idx = ordinary[ov.argmax(axis=1)]
    with np.errstate(invalid="ignore"):
        hit = best >= iou_thr
        try_ignored = (best < iou_thr) & bool(ignored.any())
    if ignored.any():
        best_ign = overlaps[:, ignored].max(axis=1)
        with np.errstate(invalid="ignore"):
            on_ignored = try_ignored & (best_ign >= iou_thr)
    else:
        on_ignored = np.zeros(n, dtype=bool)

    hit_pos = np.flatnonzero(hit)
    if hit_pos.size:
        _, first = np.unique(best_idx[hit_pos], return_index=True)
        status[hit_pos[first]] = 1
    status[on_ignored] = -1
    return status


def ap_64x64(coco_gt: dict, detections: dict, iou_thr: float = 0.5, imsize=(1024, 1024),
             min_height: int = 64, max_height: int = 1024, min_score: float = 0.01,
             return_curve: bool = False):
    """OTE's "AP for faces > 64x64" as a fraction 0..1 (see the module docstring).

    ``detections``: image_id -> array [N, 5] (x1, y1, x2, y2, score) in original pixels.
    With ``return_curve`` returns ``(ap, (recall, precision))``.
    """
    cat_id = face_category_id(coco_gt)
    detections = check_detections(coco_gt, detections)
    gt = ote_ground_truth(coco_gt, cat_id, imsize, min_height, max_height)
    n_pos = int(sum(int((~ign).sum()) for _, ign in gt.values()))

    all_scores, all_status = [], []
    for img_id, dets in detections.items():
        if len(dets) == 0:
            continue
        keep = dets[:, 4] > min_score
        dets = dets[keep]
        if len(dets) == 0:
            continue
        order = np.argsort(-dets[:, 4].astype(np.float64), kind="stable")
        dets = dets[order]
        xywh = np.stack([dets[:, 0], dets[:, 1], dets[:, 2] - dets[:, 0], dets[:, 3] - dets[:, 1]],
                        axis=1)
        xywh = np.rint(xywh.astype(np.float64))
        boxes, ignored = gt[img_id]
        all_status.append(_match_image(xywh, boxes, ignored, iou_thr))
        all_scores.append(dets[:, 4].astype(np.float64))

    if n_pos == 0:
        ap = math.nan
        return (ap, (np.zeros(0), np.zeros(0))) if return_curve else ap
    if not all_scores:
        return (0.0, (np.zeros(0), np.zeros(0))) if return_curve else 0.0
    scores = np.concatenate(all_scores)
    status = np.concatenate(all_status)
    order = np.argsort(-scores, kind="stable")
    scores, status = scores[order], status[order]
    tp = np.cumsum(status == 1)
    fp = np.cumsum(status == 0)
    # sample at the last detection of each distinct score
    last = np.flatnonzero(np.append(scores[1:] != scores[:-1], True))
    tp, fp = tp[last].astype(np.float64), fp[last].astype(np.float64)
    recall = tp / n_pos
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    ap = voc_ap(recall, precision)
    return (ap, (recall, precision)) if return_curve else ap
