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

from ote_detection.utils.cli import (ArgumentParser, add_data_format_arg, add_path_list_arg, add_subset_arg,
                                     bounded_int, existing_file, input_size_or_width, non_negative_float)
from ote_detection.utils.errors import run_cli

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
    from ote_detection.apis.cluster_anchors import cluster_anchors
    cluster_anchors(a.model_py, a.train_ann_files, a.train_data_roots, data_format=a.data_format,
                    train_subset=a.train_subset, input_size=a.input_size, keep_ratio=a.keep_ratio, min_size=a.min_size,
                    restarts=a.restarts, seed=a.seed, write=a.write, force=a.force)
    return 0


if __name__ == "__main__":
    run_cli(main)
