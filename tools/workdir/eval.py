#!/usr/bin/env python3
"""Evaluate a snapshot (.pth) or an exported OpenVINO IR (model.xml / model.bin) of this work dir's model.

Writes the template's metrics (COCO AP, AP for faces > 64x64, WIDER FACE easy/medium/hard, size,
complexity) to a metrics.yaml and prints them as a table.
"""

import argparse
import os

from ote_detection.apis.evaluate import evaluate
from ote_detection.utils.errors import run_cli

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--load-weights", required=True, help="snapshot .pth, or model.xml / model.bin of an IR")
    p.add_argument("--test-ann-files", help="COCO annotation file(s), comma-separated (for ap and ap_64x64)")
    p.add_argument("--test-data-roots", help="image folder(s), one per annotation file, comma-separated")
    p.add_argument("--save-metrics-to", help="write the metrics here (YAML, the template's keys and display names)")
    p.add_argument("--wider-dir", help="folder with WIDER FACE val images (<event>/<name>.jpg, or flat): computes "
                   "widerface_e/m/h on the images present")
    p.add_argument("--wider-gt-dir", help="folder with wider_face_val.mat and wider_{easy,medium,hard}_val.mat "
                   "(default: looked for in and around --wider-dir)")
    p.add_argument("--save-pr-curves", help="write precision/recall plots (PNG) of each metric to this folder")
    p.add_argument("--precision", default="f32", choices=["f32", "bf16", "f16"],
                   help="OpenVINO inference precision for IR (default f32; the CPU default would be bf16 on AMX)")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass for snapshots (IR: 1)")
    p.add_argument("--cache-dir", default=os.path.join(HERE, ".detections_cache"),
                   help="cache of detections per weights file and image list (default: .detections_cache here; "
                   "'' disables)")
    a = p.parse_args(argv)
    evaluate(os.path.join(HERE, "template.yaml"), a.load_weights, a.test_ann_files, a.test_data_roots,
             a.save_metrics_to, wider_dir=a.wider_dir, wider_gt_dir=a.wider_gt_dir, save_pr_curves=a.save_pr_curves,
             precision=a.precision, batch_size=a.batch_size, cache_dir=a.cache_dir or None)


if __name__ == "__main__":
    run_cli(main)
