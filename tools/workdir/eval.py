#!/usr/bin/env python3
"""Evaluate a snapshot (.pth) or an exported OpenVINO IR (model.xml / model.bin) of this work dir's model.

Writes the template's metrics (COCO AP, AP for faces > 64x64, WIDER FACE easy/medium/hard, size,
complexity) to a metrics.yaml and prints them as a table.
"""

import os

from ote_detection.apis.evaluate import evaluate
from ote_detection.utils.cli import (ArgumentParser, add_data_format_arg, add_path_list_arg, add_subset_arg,
                                     add_tiling_args, existing_dir, existing_file, input_size_or_width,
                                     non_negative_float, output_dir, output_file, positive_int, tiling_options)
from ote_detection.utils.errors import run_cli

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    p = ArgumentParser(description=__doc__)
    p.add_argument("--load-weights", required=True, type=existing_file,
                   help="snapshot .pth, or model.xml / model.bin of an IR")
    add_path_list_arg(p, "--test-ann-files", "COCO annotation file(s) (for ap and ap_64x64)")
    add_path_list_arg(p, "--test-data-roots", "image folder(s), one per annotation file (COCO)")
    add_data_format_arg(p)
    add_subset_arg(p, "--test")
    p.add_argument("--save-metrics-to", type=output_file, help="write the metrics here (YAML, the template's keys "
                   "and display names); checked to be writable before anything is computed")
    p.add_argument("--wider-dir", type=existing_dir, help="WIDER FACE val images: the WIDER root, WIDER_val or "
                   "WIDER_val/images (<event>/<name>.jpg, or a flat folder): computes widerface_e/m/h on the images "
                   "present")
    p.add_argument("--wider-gt-dir", type=existing_dir, help="folder with wider_face_val.mat and "
                   "wider_{easy,medium,hard}_val.mat (default: looked for in --wider-dir and its image folder and "
                   "beside them, also in wider_face_split/ and eval_tools/ground_truth/)")
    p.add_argument("--save-pr-curves", type=output_dir,
                   help="write precision/recall plots (PNG) of each metric to this folder")
    p.add_argument("--precision", default="f32", choices=["f32", "bf16", "f16"],
                   help="OpenVINO inference precision for IR (default f32; the CPU plugin's own default runs FP32 IRs "
                   "in bf16 on CPUs with AMX or AVX512-BF16, f32 otherwise)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per forward pass for snapshots (IR: 1)")
    p.add_argument("--cache-dir", default=os.path.join(HERE, ".detections_cache"),
                   help="cache of detections per weights content, model.py, input size, tiling, precision and image "
                   "list with sizes and mtimes (default: .detections_cache here; "
                   "'' disables)")
    p.add_argument("--input-size", type=input_size_or_width,
                   help="evaluate a snapshot at this input size instead of its own: W, WxH, or Wx (width W, the "
                        "height from the test frames' aspect rounded up to the model's stride, frames letterboxed); "
                        "an IR has the size it was exported at, except one with a dynamic input (e.g. [1,3,?,?]), which is "
                        "reshaped to this size (default there: the template's)")
    p.add_argument("--keep-ratio", action="store_true", default=None,
                   help="letterbox frames into the input (one scale factor, zero padding) instead of stretching them "
                        "(default: stretch, as in training; an IR exported with --input-size Wx letterboxes)")
    add_tiling_args(p)
    p.add_argument("--size-report-thr", type=non_negative_float, default=0.5,
                   help="operating score threshold of the recall-by-face-size report (default: %(default)s)")
    a = p.parse_args(argv)
    evaluate(os.path.join(HERE, "template.yaml"), a.load_weights, a.test_ann_files, a.test_data_roots,
             a.save_metrics_to, wider_dir=a.wider_dir, wider_gt_dir=a.wider_gt_dir, save_pr_curves=a.save_pr_curves,
             precision=a.precision, batch_size=a.batch_size, cache_dir=a.cache_dir or None, input_size=a.input_size,
             keep_ratio=a.keep_ratio, tile=tiling_options(a), size_report_thr=a.size_report_thr,
             data_format=a.data_format, test_subset=a.test_subset)


if __name__ == "__main__":
    run_cli(main)
