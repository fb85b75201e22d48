#!/usr/bin/env python3
"""Re-cluster the SSD anchors of a work dir's model.py for a custom data set and input size.

k-means with the distance 1 - IoU over the training faces' (w, h) (boxes compared centred), the faces
scaled to the chosen input size as the network sees them; as many clusters as the template has anchors
(face-detection-0200: 4 on the stride-16 level + 5 on the stride-32 level), sorted by area, the smallest
to the finest level; inside a level each anchor slot keeps its area rank among the template's anchors (so
a pretrained head's slots keep their roles). Prints the anchor coverage before and after (share of faces whose best anchor has
IoU >= the assigner's pos_iou_thr) and, with --write, rewrites the widths=/heights= of the anchor
generator in model.py (the first original kept as model.py.orig). Anchor sizes change no parameter shape:
snapshots of the template still load with train.py --load-weights.

  python tools/cluster_anchors.py /tmp/my_model/model.py --train-ann-files train.json \\
      --train-data-roots images/ --input-size 1280x736 --write
"""

import logging
import os
import sys

import numpy as np

from ote_detection.utils.cli import (ArgumentParser, add_data_format_arg, add_path_list_arg, add_subset_arg,
                                     bounded_int, existing_file, input_size_or_width, non_negative_float)
from ote_detection.utils.errors import OteError, run_cli

log = logging.getLogger("cluster_anchors")

MAX_RESTARTS = 100  # each restart is a full k-means over every face box


def main(argv=None):
    p = ArgumentParser(description=__doc__)
    p.add_argument("model_py", type=existing_file, help="the work dir's model.py (or a template's, read-only without --write)")
    add_path_list_arg(p, "--train-ann-files", "COCO annotation file(s) (or datasets of --data-format)", required=True)
    add_data_format_arg(p)
    add_subset_arg(p, "--train")
    add_path_list_arg(p, "--train-data-roots", "image root(s) (only to check the files; sizes are read from the "
                      "json)")
    p.add_argument("--input-size", type=input_size_or_width, default=None,
                   help="network input the anchors are for: W, WxH or Wx (height from the images' aspect); "
                   "default: model.py's input_size")
    p.add_argument("--keep-ratio", action="store_true", default=None, help="faces scaled as a letterboxed frame "
                   "(one factor) instead of stretched to the input (default: as train.py runs the size: Wx and a "
                   "model.py with keep_ratio letterboxed, W and WxH stretched)")
    p.add_argument("--min-size", type=non_negative_float, default=None,
                   help="leave out faces smaller than this (original pixels, sqrt(w*h)); default: the config's "
                   "data.train min_size, else 0")
    p.add_argument("--restarts", type=bounded_int(1, MAX_RESTARTS), default=5,
                   help=f"k-means restarts, 1..{MAX_RESTARTS} (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--write", action="store_true", help="write the new anchors into the given model.py (the original is kept as model.py.orig)")
    p.add_argument("--force", action="store_true", help="use the clustered anchors even where they cannot be trusted: "
                   "fewer distinct face shapes than the template has anchors, or no gain in coverage (by default the "
                   "template's anchors are kept, and the tool exits with 2)")
    a = p.parse_args(argv)

    from ote_detection.config import load_config
    from ote_detection.data.coco import load_coco_files, split_paths
    from ote_detection.inference.deploy import common_frame_hw, deployment_geometry
    from ote_detection.models.anchor_clustering import (anchor_coverage, box_sizes, filter_min_size, flat_anchors,
                                                        format_anchors, kmeans_anchors, rewrite_model_py, split_levels,
                                                        template_anchors, config_min_size, config_input_size)

    cfg = load_config(a.model_py)
    try:
        widths, heights, strides, pos_thr = template_anchors(cfg)
    except ValueError as exc:
        raise OteError(f"{a.model_py}: {exc}") from exc
    from ote_detection.data.formats import is_coco, prepare_datasets
    if not is_coco(a.data_format):  # converted to COCO json first; the images are checked on the way
        a.train_ann_files, a.train_data_roots = prepare_datasets(a.train_ann_files, a.train_data_roots, a.data_format,
                                                                 subset=a.train_subset)
    files = split_paths(a.train_ann_files)
    for f in files:
        if not os.path.isfile(f):
            raise OteError(f"{f}: annotation file not found")
    if a.train_data_roots:
        coco = load_coco_files(files, a.train_data_roots)
    else:
        import json
        coco = {"images": [], "annotations": []}
        for n, f in enumerate(files):
            with open(f, encoding="utf-8") as fh:
                d = json.load(fh)
            off = n * 10 ** 9
            coco["images"] += [dict(i, id=i["id"] + off) for i in d.get("images", [])]
            coco["annotations"] += [dict(x, image_id=x["image_id"] + off) for x in d.get("annotations", [])]
    # the geometry train.py gives the same request (inference.deploy.deployment_geometry)
    size, keep_ratio = deployment_geometry(a.input_size, frame_hw=common_frame_hw(coco["images"]), stride=max(strides),
                                           default=(config_input_size(cfg), cfg.get("keep_ratio", False)),
                                           keep_ratio=a.keep_ratio)
    min_size = config_min_size(cfg) if a.min_size is None else a.min_size
    coco = filter_min_size(coco, min_size)
    wh = box_sizes(coco, size, keep_ratio=keep_ratio)
    if not len(wh):
        raise OteError(f"{files[0]}: no face boxes (of at least {min_size:g} px) to cluster")
    per_level = [len(w) for w in widths]
    shapes = len(np.unique(np.round(wh, 1), axis=0))  # distinct (w, h), to 0.1 network px
    if shapes < sum(per_level) and not a.force:
        raise OteError(f"{files[0]}: {len(wh)} face box(es) of {shapes} distinct shape(s) (>= {min_size:g} px) at "
                       f"input {size[0]}x{size[1]}, fewer than the template's {sum(per_level)} anchors: too few to "
                       f"cluster; the template's anchors are kept{' (nothing written)' if a.write else ''} "
                       f"(--force clusters anyway)")
    anchors, mean_iou = kmeans_anchors(wh, sum(per_level), restarts=a.restarts, seed=a.seed)
    new_w, new_h = split_levels(anchors, per_level, like=(widths, heights))
    before = anchor_coverage(wh, flat_anchors(widths, heights), pos_thr)
    after = anchor_coverage(wh, flat_anchors(new_w, new_h), pos_thr)
    print(f"{len(wh)} faces (>= {min_size:g} px) at input {size[0]}x{size[1]}; coverage = share of faces whose best "
          f"anchor (centred) has IoU >= {pos_thr:g}")
    print(f"template anchors: coverage {100 * before:.1f}%")
    print(format_anchors(widths, heights, strides))
    print(f"clustered anchors: coverage {100 * after:.1f}% (mean best IoU {mean_iou:.3f})")
    print(format_anchors(new_w, new_h, strides))
    if after <= before and not a.force:
        raise OteError(f"{files[0]}: the clustered anchors do not improve the coverage ({100 * before:.1f}% -> "
                       f"{100 * after:.1f}%); the template's anchors are kept{' (nothing written)' if a.write else ''} "
                       f"(--force writes them anyway)")
    if a.write:
        note = (f"anchors re-clustered by tools/cluster_anchors.py on {', '.join(files)} at {size[0]}x{size[1]} "
                f"(coverage {100 * before:.1f}% -> {100 * after:.1f}%); original in model.py.orig")
        rewrite_model_py(a.model_py, new_w, new_h, note=note)
        print(f"written to {a.model_py} (original kept as {a.model_py}.orig)")
        own = tuple(config_input_size(cfg))
        if tuple(size) != own:
            print(f"warning: these anchors are for input {size[0]}x{size[1]}, but {a.model_py} says input_size "
                  f"{own[0]}x{own[1]}: train, export and evaluate with --input-size {size[0]}x{size[1]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
