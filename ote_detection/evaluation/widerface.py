"""WIDER FACE validation AP (Easy / Medium / Hard), the official protocol, vectorised.

Protocol, as read in the official MATLAB ``eval_tools`` (``wider_eval.m``, ``read_pred.m``,
``norm_score.m``, ``evaluation.m``, ``boxoverlap.m``, ``plot/VOCap.m``; copies read in
DetectionTeamUCAS/SSH_Tensorflow ``eval_tools/`` and peiyunh/tiny ``eval_tools/boxoverlap.m``)
and compared with the Python port OTE ran (wondervictor/WiderFace-Evaluation ``evaluation.py``,
vendored by OTE as ``ote/metrics/face_detection/wider_face/wider_face_eval.py``):

1. ``read_pred``: each image's detections ``[x, y, w, h, score]`` are sorted by score,
   descending (MATLAB ``sort`` is stable).  Here ``w = x2 - x1`` is computed in the detections'
   dtype, as OTE's ``convert_to_wider`` wrote it.
2. ``norm_score``: scores are min-max normalised **over all images together** (not per image):
   ``s' = (s - min) / (max - min)``, with ``max`` starting at ``realmin('single')`` and ``min`` at
   ``realmax('single')``.  The Python port does the same (starting values 0 and 1).  Only the
   images being evaluated contribute.  Where ``max == min`` the official code divides by zero
   (every score becomes NaN, AP 0); here every normalised score is 1.0 instead.
3. ``evaluation`` per setting (easy/medium/hard, ``gt_list`` of ``wider_<setting>_val.mat``):
   ``count_face += numel(gt_list{image})`` for every image (also those without detections);
   images with no ground-truth box or no detection are then skipped (their detections are not
   counted).  Boxes whose index is not in ``gt_list`` are "ignored".
4. ``image_evaluation``: boxes become ``[x, y, x + w, y + h]`` and ``boxoverlap`` computes IoU
   with the inclusive-pixel **+1** convention: ``iw = min(x2) - max(x1) + 1``,
   ``area = (x2 - x1 + 1) * (y2 - y1 + 1)``, overlap 0 where ``iw <= 0`` or ``ih <= 0``.  For
   each detection in order: the ground-truth box with the largest IoU among **all** boxes of
   the image (first on ties; already-matched boxes are not excluded).  If IoU >= 0.5: an
   ignored box makes the detection a non-proposal (it no longer counts in precision); an
   un-ignored box becomes "recalled" (the first time).  ``pred_recall(h)`` = number of recalled
   boxes after detection h.  A detection below 0.5 (or on an already recalled box) stays a
   proposal that recalls nothing, i.e. a false positive.
5. ``image_pr_info`` / ``dataset_pr_info``: for ``t = 1..1000``, ``thresh = 1 - t / 1000``;
   per image the detections with normalised score >= thresh give ``#proposals`` and
   ``pred_recall`` of the last one; summed over images: ``precision = recalled / proposals``
   (NaN for 0/0), ``recall = recalled / count_face``.
6. ``VOCap``: all-point AP with sentinels; MATLAB's ``max`` skips NaN.

Vectorisation: step 4 is done per image with an IoU matrix (the argmax per detection does not
depend on the matching state, only "first time recalled" does, which is a first-occurrence
test), and step 5 is done once for the whole set: summed over images, ``proposals(thresh)`` is
the number of proposal detections with score >= thresh and ``recalled(thresh)`` the number of
first-time recalls with score >= thresh.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from .coco_ap import as_detection_array
from .voc_ap64 import voc_ap

__all__ = ["WiderFaceGT", "SETTINGS"]

SETTINGS = ("easy", "medium", "hard")
_KEYS = {"easy": "widerface_e", "medium": "widerface_m", "hard": "widerface_h"}
_REALMIN_SINGLE = float(np.finfo(np.float32).tiny)  # MATLAB realmin('single')
_REALMAX_SINGLE = float(np.finfo(np.float32).max)  # MATLAB realmax('single')
THRESH_NUM = 1000
IOU_THRESH = 0.5


def _cell_str(x) -> str:
    a = np.asarray(x)
    while a.dtype == object:
        a = np.asarray(a.ravel()[0])
    return str(a.ravel()[0]) if a.ndim else str(a)


class WiderFaceGT:
    """Official WIDER FACE val ground truth (``wider_face_val.mat`` + easy/medium/hard gt_list).

    Attributes:
        image_keys: ``'event/name'`` of every image, in .mat order (3226 for the val set).
        boxes: list of int32 arrays [G, 4] (x, y, w, h) aligned with ``image_keys``.
        keep: ``{setting: list of int index arrays (0-based) of the boxes in gt_list}``.
        images: ``{key: path}`` found by ``find_images(images_dir)`` when images_dir is given.
    """

    def __init__(self, gt_dir: str, images_dir: str | None = None):
        import scipy.io

        gt_dir = Path(gt_dir)
        names = {"face": "wider_face_val.mat"}
        names.update({s: f"wider_{s}_val.mat" for s in SETTINGS})
        missing = [n for n in names.values() if not (gt_dir / n).is_file()]
        if missing:
            raise FileNotFoundError(f"WIDER FACE ground truth not found in {gt_dir}: missing "
                                    + ", ".join(missing))
        mats = {k: scipy.io.loadmat(str(gt_dir / n)) for k, n in names.items()}
        face = mats["face"]
        events = [_cell_str(e) for e in face["event_list"].ravel()]
        self.image_keys: list[str] = []
        self.boxes: list[np.ndarray] = []
        file_lists = face["file_list"].ravel()
        bbx_lists = face["face_bbx_list"].ravel()
        for ev, files, bbxs in zip(events, file_lists, bbx_lists):
            for f, b in zip(np.asarray(files).ravel(), np.asarray(bbxs).ravel()):
                self.image_keys.append(f"{ev}/{_cell_str(f)}")
                self.boxes.append(np.asarray(b, dtype=np.float64).reshape(-1, 4))
        self.keep: dict[str, list[np.ndarray]] = {}
        self.keep_counts: dict[str, np.ndarray] = {}
        for s in SETTINGS:
            m = mats[s]
            ev_s = [_cell_str(e) for e in m["event_list"].ravel()]
            files_s = [f"{e}/{_cell_str(f)}" for e, fl in zip(ev_s, m["file_list"].ravel())
                       for f in np.asarray(fl).ravel()]
            if files_s != self.image_keys:
                raise ValueError(f"{names[s]} lists other images than wider_face_val.mat")
            lists = [np.asarray(g).ravel().astype(np.int64)
                     for gl in m["gt_list"].ravel() for g in np.asarray(gl).ravel()]
            for k, (idx, b) in enumerate(zip(lists, self.boxes)):
                if idx.size and (idx.min() < 1 or idx.max() > len(b)):
                    raise ValueError(f"{names[s]}: gt_list of {self.image_keys[k]} indexes "
                                     f"outside its {len(b)} boxes")
            self.keep[s] = [idx - 1 for idx in lists]
            self.keep_counts[s] = np.array([idx.size for idx in lists], dtype=np.int64)
        self.index = {k: i for i, k in enumerate(self.image_keys)}
        self._by_name = {k.split("/", 1)[1]: k for k in self.image_keys}
        self.images: dict[str, str] = {}
        if images_dir is not None:
            self.images = self.find_images(images_dir)

    def __len__(self) -> int:
        return len(self.image_keys)

    def key_of(self, name: str) -> str:
        """Canonical ``'event/name'`` for ``'event/name'``, ``'event/name.jpg'`` or ``'name'``."""
        k = str(name).replace("\\", "/")
        if k.lower().endswith(".jpg"):
            k = k[:-4]
        if k in self.index:
            return k
        base = k.rsplit("/", 1)[-1]
        if base in self._by_name:
            return self._by_name[base]
        raise KeyError(name)

    def find_images(self, images_dir: str) -> dict[str, str]:
        """``{'event/name': absolute path}`` of the val images present under ``images_dir``.

        Accepts the WIDER layout (``images_dir/<event>/<name>.jpg``, i.e. ``WIDER_val/images``)
        and a flat folder of ``<name>.jpg``; the WIDER layout wins when both exist.
        """
        root = Path(images_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"images folder not found: {images_dir}")
        root = root.resolve()
        found: dict[str, str] = {}
        flat = {}
        with os.scandir(root) as it:
            entries = list(it)
        subdirs = {e.name for e in entries if e.is_dir()}
        for e in entries:
            if e.is_file() and e.name.lower().endswith(".jpg"):
                flat[e.name[:-4]] = e.name
        listed: dict[str, set] = {}
        for ev in {k.split("/", 1)[0] for k in self.image_keys} & subdirs:
            with os.scandir(root / ev) as it:
                listed[ev] = {e.name for e in it if e.is_file()}
        for key in self.image_keys:
            ev, name = key.split("/", 1)
            if f"{name}.jpg" in listed.get(ev, ()):
                found[key] = str(root / ev / f"{name}.jpg")
            elif name in flat:
                found[key] = str(root / flat[name])
        return found

    def evaluate(self, detections: dict, pr_curves_dir: str | None = None) -> dict:
        """Official Easy/Medium/Hard AP (percent) over the images present in ``detections``.

        ``detections``: ``{'event/name': array [N, 5] (x1, y1, x2, y2, score)}`` in original
        pixels (``'event/name.jpg'`` and bare ``'name'`` keys are accepted too).  Ground truth is
        counted only for these images.  Returns ``widerface_e``, ``widerface_m``, ``widerface_h``
        (NaN where the images hold no face of that setting), ``n_images``, ``n_total``.
        """
        idxs, dets_list = [], []
        unknown = []
        seen = set()
        for name, dets in detections.items():
            try:
                key = self.key_of(name)
            except KeyError:
                unknown.append(name)
                continue
            if key in seen:
                raise ValueError(f"detections given twice for WIDER image {key}")
            seen.add(key)
            arr = as_detection_array(dets, repr(name))
            idxs.append(self.index[key])
            dets_list.append(arr)
        if unknown:
            raise ValueError(f"{len(unknown)} detection key(s) are not WIDER FACE val images, "
                             f"e.g. {unknown[:3]} (expected 'event/name')")

        # norm_score over every evaluated image
        max_score, min_score = _REALMIN_SINGLE, _REALMAX_SINGLE
        for arr in dets_list:
            if len(arr):
                s = arr[:, 4].astype(np.float64)
                max_score = max(max_score, float(s.max()))
                min_score = min(min_score, float(s.min()))
        diff = max_score - min_score

        counts = {s: int(self.keep_counts[s][idxs].sum()) if idxs else 0 for s in SETTINGS}
        scores_all = []
        proposal_all = {s: [] for s in SETTINGS}
        recalled_all = {s: [] for s in SETTINGS}
        for i, arr in zip(idxs, dets_list):
            gt = self.boxes[i]
            if len(gt) == 0 or len(arr) == 0:
                continue
            order = np.argsort(-arr[:, 4].astype(np.float64), kind="stable")
            arr = arr[order]
            w = arr[:, 2] - arr[:, 0]
            h = arr[:, 3] - arr[:, 1]
            x1 = arr[:, 0].astype(np.float64)
            y1 = arr[:, 1].astype(np.float64)
            x2 = x1 + w.astype(np.float64)
            y2 = y1 + h.astype(np.float64)
            s = arr[:, 4].astype(np.float64)
            s = (s - min_score) / diff if diff > 0 else np.ones_like(s)
            best, best_idx = _best_overlap(x1, y1, x2, y2, gt)
            hit = best >= IOU_THRESH
            scores_all.append(s)
            n_gt = len(gt)
            for setting in SETTINGS:
                valid = np.zeros(n_gt, dtype=bool)
                valid[self.keep[setting][i]] = True
                hit_valid = hit & valid[best_idx]
                proposal = ~(hit & ~valid[best_idx])
                recalled = np.zeros(len(arr), dtype=bool)
                pos = np.flatnonzero(hit_valid)
                if pos.size:
                    _, first = np.unique(best_idx[pos], return_index=True)
                    recalled[pos[first]] = True
                proposal_all[setting].append(proposal)
                recalled_all[setting].append(recalled)

        result: dict = {}
        curves = {}
        thresh = 1.0 - np.arange(1, THRESH_NUM + 1, dtype=np.float64) / THRESH_NUM
        if scores_all:
            scores = np.concatenate(scores_all)
            order = np.argsort(-scores, kind="stable")
            neg_sorted = -scores[order]
            n_at = np.searchsorted(neg_sorted, -thresh, side="right")
        for setting in SETTINGS:
            if scores_all:
                prop = np.concatenate(proposal_all[setting])[order]
                rec = np.concatenate(recalled_all[setting])[order]
                prop_cum = np.concatenate(([0], np.cumsum(prop)))
                rec_cum = np.concatenate(([0], np.cumsum(rec)))
                proposals = prop_cum[n_at].astype(np.float64)
                recalled = rec_cum[n_at].astype(np.float64)
            else:
                proposals = np.zeros(THRESH_NUM)
                recalled = np.zeros(THRESH_NUM)
            n_face = counts[setting]
            with np.errstate(divide="ignore", invalid="ignore"):
                precision = recalled / proposals
                recall = recalled / n_face if n_face else np.full(THRESH_NUM, np.nan)
            ap = voc_ap(recall, precision) if n_face else math.nan
            result[_KEYS[setting]] = 100.0 * ap
            curves[setting] = (recall, precision, ap)
        result["n_images"] = len(idxs)
        result["n_total"] = len(self.image_keys)
        if pr_curves_dir is not None:
            from .pr_plots import save_pr_curves
            os.makedirs(pr_curves_dir, exist_ok=True)
            save_pr_curves({f"{s} ({100 * c[2]:.2f}%)": c for s, c in curves.items()},
                           os.path.join(pr_curves_dir, "widerface_pr.png"),
                           f"WIDER FACE val, {len(idxs)} of {len(self.image_keys)} images")
        self.last_curves = curves
        return result


def _best_overlap(x1, y1, x2, y2, gt):
    """Per detection: max IoU (+1 convention) over all gt boxes and its first index."""
    gx1 = gt[:, 0]
    gy1 = gt[:, 1]
    gx2 = gt[:, 0] + gt[:, 2]
    gy2 = gt[:, 1] + gt[:, 3]
    iw = np.minimum(gx2[None, :], x2[:, None]) - np.maximum(gx1[None, :], x1[:, None]) + 1
    ih = np.minimum(gy2[None, :], y2[:, None]) - np.maximum(gy1[None, :], y1[:, None]) + 1
    inter = iw * ih
    g_area = (gx2 - gx1 + 1) * (gy2 - gy1 + 1)
    d_area = (x2 - x1 + 1) * (y2 - y1 + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        o = inter / (g_area[None, :] + d_area[:, None] - inter)
    o[(iw <= 0) | (ih <= 0)] = 0.0
    o[np.isnan(o)] = -np.inf  # MATLAB max skips NaN
    best_idx = o.argmax(axis=1)
    best = o[np.arange(len(o)), best_idx]
    return best, best_idx
