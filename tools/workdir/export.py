#!/usr/bin/env python3
"""Export a snapshot (.pth) of this work dir's model to OpenVINO IR: model.xml + model.bin (FP32).

The IR takes a planar BGR image of 0..255 ([1, 3, H, W], input "image"; normalisation is folded in)
and returns Open Model Zoo's SSD detection format ([1, 1, N, 7], output "detection_out"). The
input size is the snapshot's (training may override it), else the template's. export_info.yaml
beside the IR records the details.
"""

import os

from ote_detection.apis.export import export
from ote_detection.utils.cli import (ArgumentParser, add_int8_check_args, existing_file, input_size_or_width,
                                     non_negative_float, output_dir)
from ote_detection.utils.errors import run_cli

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    p = ArgumentParser(description=__doc__)
    p.add_argument("--load-weights", required=True, type=existing_file, help="snapshot (.pth) to export")
    p.add_argument("--save-model-to", required=True, type=output_dir, help="output folder: model.xml, model.bin, "
                   "export_info.yaml (with the files' sha256). The new set is written to a temporary folder beside it "
                   "and swapped in at once: readers see the old set or the new one, never a mix")
    p.add_argument("--onnx", action="store_true", help="also write model.onnx (the network without the SSD "
                   "post-processing: softmax scores and box deltas)")
    p.add_argument("--input-size", type=input_size_or_width,
                   help="export for this input size instead of the snapshot's own (any snapshot, imported ones "
                        "included; SSD priors are regenerated for it): W, WxH, or Wx (width W, the height from "
                        "--aspect rounded up to the model's stride; the IR is then meant for letterboxed frames, which "
                        "eval.py and visualize.py do by themselves)")
    p.add_argument("--aspect", default=None,
                   help="frame aspect ratio W:H for --input-size Wx (default: 16:9, i.e. 1280x -> 1280x736); "
                        "refused with any other --input-size, which fixes both sides")
    p.add_argument("--int8", action="store_true",
                   help="post-training INT8 quantization (NNCF) of the IR at that size: model.xml is then the INT8 IR, "
                        "model_fp32.xml the FP32 one; export_info.yaml records the AP before and after and the precision "
                        "the CPU runs. Needs --val-ann-files/--val-data-roots (accuracy control) and/or "
                        "--calibration-images")
    p.add_argument("--calibration-images",
                   help="with --int8: folder of images (or COCO .json) to calibrate on (default: the validation images)")
    p.add_argument("--val-ann-files", help="with --int8: COCO annotation file(s) (comma-separated) for accuracy control")
    p.add_argument("--val-data-roots", help="with --int8: image root folder(s) of --val-ann-files (comma-separated)")
    p.add_argument("--max-drop", type=non_negative_float, default=1.0,
                   help="with --int8 and validation files: most COCO AP points INT8 may lose (default: %(default)s)")
    add_int8_check_args(p)
    a = p.parse_args(argv)
    if not a.int8 and (a.calibration_images or a.val_ann_files or a.val_data_roots):
        p.error("--calibration-images / --val-ann-files / --val-data-roots go with --int8")
    export(os.path.join(HERE, "template.yaml"), a.load_weights, a.save_model_to, onnx=a.onnx, input_size=a.input_size,
           aspect=a.aspect, int8=a.int8, calibration_images=a.calibration_images, val_ann_files=a.val_ann_files,
           val_data_roots=a.val_data_roots, max_drop=a.max_drop, max_recall_drop=a.max_recall_drop,
           allow_recall_drop=a.allow_recall_drop)


if __name__ == "__main__":
    run_cli(main)
