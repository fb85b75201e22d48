"""Anchor re-clustering for a custom data set (the SSD templates' ``SSDAnchorGeneratorClustered``).

The templates' anchor widths/heights were clustered on WIDER FACE at the template's input size. On
another data set or at another (deployment) input size the faces can fall between or below them. Here:

* ``box_sizes(coco, input_size)``: the (w, h) of every training face as the network sees it at
  ``input_size`` (w, h) (the frame stretched to the input, as in training; ``keep_ratio=True`` for a
  letterboxed deployment);
* ``kmeans_anchors(wh, k)``: k-means with the distance ``1 - IoU`` between boxes compared centred (only
  w and h matter), k-means++ seeding, cluster centres = medians, a few restarts, best mean IoU kept;
* ``split_levels(clusters, per_level)``: sorted by area, the smallest to the finest level, keeping the
  template's number of anchors per level (0200: 4 + 5);
* ``anchor_coverage(wh, anchors, thr)``: the share of boxes whose best anchor (centred) has IoU >= thr
  (the assigner's ``pos_iou_thr``, 0.4 in the templates) -- a box below it is matched only by the
  assigner's "best anchor for every gt" rule, weakly;
* ``rewrite_model_py(path, widths, heights)``: writes the new values into a model.py's text (the
  ``widths=`` / ``heights=`` of the anchor generator), keeping the first original as ``model.py.orig``.
  A rewrite (not a side file) so that every work-dir script and the checkpoint's config see the same
  anchors; anchor sizes change no parameter shape, so snapshots of the template still load.
"""

from __future__ import annotations

import os
import re

import numpy as np

__all__ = ["box_sizes", "centred_iou", "kmeans_anchors", "split_levels", "anchor_coverage",
           "template_anchors", "flat_anchors", "rewrite_model_py", "format_anchors",
           "config_min_size", "config_input_size", "filter_min_size"]


def box_sizes(coco, input_size, keep_ratio=False, min_size=1.0):
    """[N, 2] (w, h) of the non-crowd ground-truth boxes of a COCO dict, in network pixels at
    ``input_size`` (w, h); boxes smaller than ``min_size`` (after scaling) on a side are left out."""
    width, height = input_size
    shapes = {img["id"]: (float(img["width"]), float(img["height"])) for img in coco["images"]}
    out = []
    for ann in coco.get("annotations", []):
        if ann.get("iscrowd") or ann.get("ignore") or ann["image_id"] not in shapes:
            continue
        iw, ih = shapes[ann["image_id"]]
        sx, sy = width / iw, height / ih
        if keep_ratio:
            sx = sy = min(sx, sy)
        out.append((ann["bbox"][2] * sx, ann["bbox"][3] * sy))
    wh = np.asarray(out, np.float64).reshape(-1, 2)
    return wh[(wh[:, 0] >= min_size) & (wh[:, 1] >= min_size)]


def centred_iou(wh, anchors):
    """[N, K] IoU of boxes and anchors placed on the same centre."""
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    anchors = np.asarray(anchors, np.float64).reshape(-1, 2)
    inter = np.minimum(wh[:, None, 0], anchors[None, :, 0]) * np.minimum(wh[:, None, 1], anchors[None, :, 1])
    union = (wh[:, 0] * wh[:, 1])[:, None] + (anchors[:, 0] * anchors[:, 1])[None, :] - inter
    return inter / np.maximum(union, 1e-12)


def _seed(wh, k, rng):
    centres = [wh[rng.integers(len(wh))]]
    for _ in range(1, k):
        d = 1.0 - centred_iou(wh, np.asarray(centres)).max(axis=1)
        p = d ** 2
        total = p.sum()
        centres.append(wh[rng.integers(len(wh))] if total <= 0 else wh[rng.choice(len(wh), p=p / total)])
    return np.asarray(centres)


def kmeans_anchors(wh, k, restarts=5, iters=300, seed=0):
    """k anchor (w, h) clustering ``wh`` with the 1 - IoU distance, sorted by area (smallest first).

    Returns ``(anchors [k, 2], mean best IoU)``. With fewer distinct boxes than ``k`` the missing
    anchors are spread geometrically between the found ones (so the count is always ``k``).
    """
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    if len(wh) == 0:
        raise ValueError("no boxes to cluster")
    k = int(k)
    rng = np.random.default_rng(seed)
    distinct = np.unique(wh, axis=0)
    kk = min(k, len(distinct))
    best, best_score = None, -1.0
    for _ in range(max(1, restarts)):
        centres = _seed(distinct if kk < k else wh, kk, rng)
        assign = None
        for _ in range(iters):
            new_assign = centred_iou(wh, centres).argmax(axis=1)
            if assign is not None and np.array_equal(new_assign, assign):
                break
            assign = new_assign
            for j in range(kk):
                members = wh[assign == j]
                if len(members):
                    centres[j] = np.median(members, axis=0)
                else:  # empty cluster: restart it on the worst-covered box
                    centres[j] = wh[centred_iou(wh, centres).max(axis=1).argmin()]
        score = float(centred_iou(wh, centres).max(axis=1).mean())
        if score > best_score:
            best, best_score = centres.copy(), score
    if kk < k:
        extra = _fill(best, k - kk)
        best = np.concatenate([best, extra])
    order = np.argsort(best[:, 0] * best[:, 1], kind="stable")
    return best[order], best_score


def _fill(centres, n):
    areas = centres[:, 0] * centres[:, 1]
    lo, hi = centres[areas.argmin()], centres[areas.argmax()]
    t = np.linspace(0, 1, n + 2)[1:-1, None]
    return np.exp(np.log(lo) * (1 - t) + np.log(hi) * t) if len(centres) > 1 else lo * (1.5 ** np.arange(1, n + 1))[:, None]


def split_levels(anchors, per_level, like=None):
    """Anchors sorted by area -> per-level lists ``(widths, heights)``, smallest on the finest level.

    ``like``: the old ``(widths, heights)``; inside a level the new anchors then take the slots in the old
    anchors' area order (the slot that held the level's smallest anchor gets the new smallest, ...), so a
    fine-tuned head keeps each slot's role (templates do not list a level's anchors by area)."""
    anchors = np.asarray(anchors, np.float64).reshape(-1, 2)
    if len(anchors) != sum(per_level):
        raise ValueError(f"{len(anchors)} anchors for levels of {list(per_level)}")
    anchors = anchors[np.argsort(anchors[:, 0] * anchors[:, 1], kind="stable")]
    widths, heights, start = [], [], 0
    for level, n in enumerate(per_level):
        part = anchors[start:start + n]
        if like is not None and len(like[0][level]) == n:
            old_area = np.asarray(like[0][level], np.float64) * np.asarray(like[1][level], np.float64)
            ranks = np.argsort(np.argsort(old_area, kind="stable"), kind="stable")
            part = part[ranks]
        widths.append([round(float(v), 4) for v in part[:, 0]])
        heights.append([round(float(v), 4) for v in part[:, 1]])
        start += n
    return widths, heights


def anchor_coverage(wh, anchors, thr=0.4):
    """Share (0..1) of boxes whose best centred anchor has IoU >= thr; NaN without boxes."""
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    if not len(wh):
        return float("nan")
    return float((centred_iou(wh, anchors).max(axis=1) >= thr).mean())


def template_anchors(cfg):
    """(widths, heights, strides, pos_iou_thr) of a config's clustered anchor generator."""
    head = cfg.model["bbox_head"]
    gen = head.get("anchor_generator") or {}
    if gen.get("type") != "SSDAnchorGeneratorClustered":
        raise ValueError(f"the model's head ({head.get('type')}) has no clustered anchors "
                         f"(anchor generator {gen.get('type')!r}); only the SSD templates can be re-clustered")
    assigner = (cfg.model.get("train_cfg") or {}).get("assigner") or {}
    return ([list(map(float, w)) for w in gen["widths"]], [list(map(float, h)) for h in gen["heights"]],
            list(gen["strides"]), float(assigner.get("pos_iou_thr", 0.4)))


def flat_anchors(widths, heights):
    return np.asarray([(w, h) for ws, hs in zip(widths, heights) for w, h in zip(ws, hs)], np.float64)


def _find_value(text, name, start=0):
    """(start, end) of the parenthesised/bracketed value after ``name=`` in ``text``."""
    m = re.compile(r"\b" + name + r"\s*=\s*").search(text, start)
    if not m:
        return None
    i = m.end()
    if i >= len(text) or text[i] not in "([":
        return None
    depth, j = 0, i
    while j < len(text):
        c = text[j]
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
            if depth == 0:
                return i, j + 1
        j += 1
    return None


def _format_levels(levels, indent):
    inner = (",\n" + " " * indent).join("[" + ", ".join(f"{v:g}" for v in lv) + "]" for lv in levels)
    return "(" + inner + ")"


def rewrite_model_py(path, widths, heights, note=None):
    """Replace the anchor generator's ``widths=`` / ``heights=`` values in ``path`` (a model.py).

    The first original is kept as ``<path>.orig`` (never overwritten); the new file is written atomically.
    Returns the new text.
    """
    from ..utils.errors import OteError
    from ..utils.fileio import atomic_write_text

    with open(path, encoding="utf-8") as f:
        text = f.read()
    gen = text.find("anchor_generator")
    if gen < 0:
        raise OteError(f"{path}: no anchor_generator=dict(widths=..., heights=...) to rewrite")
    spans = {}
    for name in ("widths", "heights"):
        span = _find_value(text, name, gen)
        if span is None:
            raise OteError(f"{path}: no '{name}=(...)' in its anchor_generator (the values must be in this file "
                           f"to be rewritten)")
        spans[name] = span
    new = text
    for name, levels in sorted((("widths", widths), ("heights", heights)), key=lambda kv: -spans[kv[0]][0]):
        s, e = spans[name]
        line_start = new.rfind("\n", 0, s) + 1
        new = new[:s] + _format_levels(levels, s - line_start + 1) + new[e:]
    if note:
        line_start = new.rfind("\n", 0, new.find("anchor_generator")) + 1
        indent = len(new[line_start:]) - len(new[line_start:].lstrip())
        comment = "".join(" " * indent + "# " + ln + "\n" for ln in note.splitlines())
        new = new[:line_start] + comment + new[line_start:]
    backup = path + ".orig"
    if not os.path.exists(backup):
        atomic_write_text(backup, text)
    atomic_write_text(path, new)
    return new


def format_anchors(widths, heights, strides):
    lines = []
    for level, (ws, hs) in enumerate(zip(widths, heights)):
        pairs = ", ".join(f"{w:.1f}x{h:.1f}" for w, h in zip(ws, hs))
        lines.append(f"  level {level} (stride {strides[level]}): {pairs}")
    return "\n".join(lines)


def config_min_size(cfg):
    """The config's ``data.train`` (or its wrapped ``dataset``) ``min_size`` (original pixels), else 0."""
    train = (cfg.get("data") or {}).get("train") or {}
    train = train.get("dataset", train)
    return float(train.get("min_size", 0) or 0)


def config_input_size(cfg):
    """(w, h) of a config's top-level ``input_size`` (an int or a pair; load_config requires it)."""
    from ..artefacts.input_size import InputSize
    return tuple(InputSize.of(cfg["input_size"]))


def filter_min_size(coco, min_size):
    """A shallow copy of ``coco`` without the faces smaller than ``min_size`` (sqrt(w*h), original pixels)."""
    if not min_size:
        return coco
    anns = [a for a in coco.get("annotations", [])
            if (max(a["bbox"][2], 0) * max(a["bbox"][3], 0)) ** 0.5 >= min_size]
    return dict(coco, annotations=anns)
