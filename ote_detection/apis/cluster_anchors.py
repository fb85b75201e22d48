"""Anchor re-clustering entry point behind tools/cluster_anchors.py: the SSD anchors of a work dir's model.py
fitted to a data set's faces at an input size (``models.anchor_clustering``: k-means with 1 - IoU)."""

import json
import logging
import os

import numpy as np

from ..config import load_config
from ..data.coco import split_paths
from ..formats.convert import load_dataset
from ..inference.deploy import common_frame_hw, deployment_geometry
from ..models.anchor_clustering import (anchor_coverage, box_sizes, config_input_size, config_min_size,
                                        filter_min_size, flat_anchors, format_anchors, kmeans_anchors,
                                        rewrite_model_py, split_levels, template_anchors)
from ..utils.errors import OteError

log = logging.getLogger(__name__)


def _read_json_alone(files):
    """The COCO files merged with their image sizes as the json gives them (no image read: no
    ``--train-data-roots`` given); image ids made unique per file."""
    coco = {"images": [], "annotations": []}
    for n, f in enumerate(files):
        with open(f, encoding="utf-8") as fh:
            d = json.load(fh)
        off = n * 10 ** 9
        coco["images"] += [dict(i, id=i["id"] + off) for i in d.get("images", [])]
        coco["annotations"] += [dict(x, image_id=x["image_id"] + off) for x in d.get("annotations", [])]
    return coco


def cluster_anchors(model_py, train_ann_files, train_data_roots=None, data_format="coco", train_subset=None,
                    input_size=None, keep_ratio=None, min_size=None, restarts=5, seed=0, write=False, force=False,
                    report=print):
    """Re-cluster the anchors of ``model_py`` on the faces of ``train_ann_files`` (any format:
    ``formats.convert.load_dataset``; COCO json without ``train_data_roots``: the sizes the json gives) at
    ``input_size`` ((w, h), (w, None) for the height from the frames' aspect, None for model.py's), faces
    scaled as train.py runs that size (``keep_ratio`` None: ``inference.deploy.deployment_geometry``'s decision; True: letterboxed; False: stretched). ``min_size``: faces smaller (original
    pixels, sqrt(w*h)) left out, None for the config's. ``report(line)`` gets the coverage and anchors
    before and after. ``write``: rewrite model.py (original kept as model.py.orig). Too few distinct face
    shapes, or no gain in coverage, is an OteError (exit 2) unless ``force``. Returns (widths, heights) per
    level."""
    cfg = load_config(model_py)
    try:
        widths, heights, strides, pos_thr = template_anchors(cfg)
    except ValueError as exc:
        raise OteError(f"{model_py}: {exc}") from exc
    train_set = load_dataset(train_ann_files, train_data_roots, data_format, train_subset, "train", need_roots=False)
    files = split_paths(train_set.ann_files)
    for f in files:
        if not os.path.isfile(f):
            raise OteError(f"{f}: annotation file not found")
    coco = train_set.load() if train_set.data_roots else _read_json_alone(files)
    # the geometry train.py gives the same request (inference.deploy.deployment_geometry)
    size, keep_ratio = deployment_geometry(input_size, frame_hw=common_frame_hw(coco["images"]), stride=max(strides),
                                           default=(config_input_size(cfg), cfg.get("keep_ratio", False)),
                                           keep_ratio=keep_ratio)
    min_size = config_min_size(cfg) if min_size is None else min_size
    coco = filter_min_size(coco, min_size)
    wh = box_sizes(coco, size, keep_ratio=keep_ratio)
    if not len(wh):
        raise OteError(f"{files[0]}: no face boxes (of at least {min_size:g} px) to cluster")
    per_level = [len(w) for w in widths]
    shapes = len(np.unique(np.round(wh, 1), axis=0))  # distinct (w, h), to 0.1 network px
    if shapes < sum(per_level) and not force:
        raise OteError(f"{files[0]}: {len(wh)} face box(es) of {shapes} distinct shape(s) (>= {min_size:g} px) at "
                       f"input {size[0]}x{size[1]}, fewer than the template's {sum(per_level)} anchors: too few to "
                       f"cluster; the template's anchors are kept{' (nothing written)' if write else ''} "
                       f"(--force clusters anyway)")
    anchors, mean_iou = kmeans_anchors(wh, sum(per_level), restarts=restarts, seed=seed)
    new_w, new_h = split_levels(anchors, per_level, like=(widths, heights))
    before = anchor_coverage(wh, flat_anchors(widths, heights), pos_thr)
    after = anchor_coverage(wh, flat_anchors(new_w, new_h), pos_thr)
    report(f"{len(wh)} faces (>= {min_size:g} px) at input {size[0]}x{size[1]}; coverage = share of faces whose best "
           f"anchor (centred) has IoU >= {pos_thr:g}")
    report(f"template anchors: coverage {100 * before:.1f}%")
    report(format_anchors(widths, heights, strides))
    report(f"clustered anchors: coverage {100 * after:.1f}% (mean best IoU {mean_iou:.3f})")
    report(format_anchors(new_w, new_h, strides))
    if after <= before and not force:
        raise OteError(f"{files[0]}: the clustered anchors do not improve the coverage ({100 * before:.1f}% -> "
                       f"{100 * after:.1f}%); the template's anchors are kept{' (nothing written)' if write else ''} "
                       f"(--force writes them anyway)")
    if write:
        note = (f"anchors re-clustered by tools/cluster_anchors.py on {', '.join(files)} at {size[0]}x{size[1]} "
                f"(coverage {100 * before:.1f}% -> {100 * after:.1f}%); original in model.py.orig")
        rewrite_model_py(model_py, new_w, new_h, note=note)
        report(f"written to {model_py} (original kept as {model_py}.orig)")
        own = tuple(config_input_size(cfg))
        if tuple(size) != own:
            log.warning("warning: these anchors are for input %dx%d, but %s says input_size %dx%d: train, export and "
                        "evaluate with --input-size %dx%d", size[0], size[1], model_py, own[0], own[1], size[0],
                        size[1])
    return new_w, new_h
