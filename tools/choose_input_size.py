#!/usr/bin/env python3
"""Choose a deployment input size: export a snapshot to OpenVINO IR at several input sizes and measure each
on a validation set (COCO AP, AP50, recall of faces < 32 px, latency per frame with 1 thread and all
threads). The smallest size whose AP50 is within --tolerance of the best is marked.

Sizes: W (square), WxH, or Wx (width W, height from the validation frames' aspect ratio, rounded up to the
model's stride). Each size is exported and run as export.py and eval.py do it: Wx letterboxed (the aspect
kept), W and WxH stretched (--keep-ratio / --stretch: all one way); each IR folder has export_info.yaml. Example:

  python tools/choose_input_size.py model_templates/face-detection/face-detection-0200/template.yaml \\
      snapshot.pth --val-ann-files airport.json --val-data-roots airport/ --sizes 256,640x,960x,1280x
"""

from ote_detection.utils.cli import (ArgumentParser, add_data_format_arg, add_path_list_arg, add_subset_arg,
                                     existing_file, output_dir, positive_float, positive_int)
from ote_detection.utils.errors import run_cli


FIT = {None: "letterboxed for Wx sizes (aspect kept), stretched for W and WxH", True: "letterboxed (aspect kept)",
       False: "stretched"}


def main(argv=None):
    p = ArgumentParser(description=__doc__)
    p.add_argument("template", type=existing_file, help="template.yaml of the model (a work dir's or the repository's)")
    p.add_argument("weights", type=existing_file, help="PyTorch snapshot (.pth) to export at each size "
                   "(e.g. made by tools/import_openvino_weights.py from an Open Model Zoo IR)")
    add_path_list_arg(p, "--val-ann-files", "COCO annotation file(s) of the validation set", required=True)
    add_path_list_arg(p, "--val-data-roots", "image root(s) of those files (COCO)")
    add_data_format_arg(p)
    add_subset_arg(p, "--val")
    p.add_argument("--sizes", default="256,640x,960x,1280x",
                   help="comma-separated input sizes to try: W, WxH or Wx (default: %(default)s)")
    p.add_argument("--precision", default="default", choices=["default", "f32", "bf16", "f16"],
                   help="OpenVINO inference precision (default: the CPU plugin's own: it runs FP32 IRs in bf16 on CPUs "
                   "with AMX or AVX512-BF16, f32 otherwise; f32 forces FP32 everywhere)")
    fit = p.add_mutually_exclusive_group()
    fit.add_argument("--stretch", action="store_true", help="stretch frames to every input size, Wx too (the aspect "
                     "ratio is then not kept; default: Wx letterboxed, W and WxH stretched, as export.py and eval.py)")
    fit.add_argument("--keep-ratio", action="store_true", help="letterbox frames into every input size, W and WxH "
                     "too (one scale factor, zero padding; default: Wx letterboxed, W and WxH stretched)")
    p.add_argument("--int8-calibration", metavar="IMAGES", help="folder or COCO json of images: also measure a "
                   "post-training INT8 IR per size (nncf.quantize on the OpenVINO model, calibrated on these)")
    p.add_argument("--calibration-images", type=positive_int, default=10,
                   help="number of calibration images used (default: %(default)s)")
    p.add_argument("--score-thr", type=positive_float, default=0.5,
                   help="operating score threshold of the small-face recall (default: %(default)s)")
    p.add_argument("--tolerance", type=positive_float, default=1.0,
                   help="AP50 points below the best that still count as as good (default: %(default)s)")
    p.add_argument("--repeats", type=positive_int, default=1, help="timing passes over the frames (median taken)")
    p.add_argument("--no-all-threads", action="store_true", help="time with 1 thread only")
    p.add_argument("--save-irs-to", type=output_dir, help="keep the IRs in this folder (one sub-folder per size)")
    a = p.parse_args(argv)

    from ote_detection.apis.choose_input_size import choose_input_size, format_sweep
    keep_ratio = False if a.stretch else (True if a.keep_ratio else None)  # None: as export.py / eval.py decide
    rows, choice = choose_input_size(a.template, a.weights, a.val_ann_files, a.val_data_roots, a.sizes,
                                     precision=a.precision, keep_ratio=keep_ratio,
                                     int8_calibration=a.int8_calibration, calibration_images=a.calibration_images,
                                     save_irs_to=a.save_irs_to, score_thr=a.score_thr, tolerance=a.tolerance,
                                     repeats=a.repeats, all_threads=not a.no_all_threads, data_format=a.data_format,
                                     val_subset=a.val_subset)
    import openvino as ov
    hint = a.precision if a.precision != "default" else \
        f"default (= {ov.Core().get_property('CPU', 'INFERENCE_PRECISION_HINT').to_string()} on this CPU)"
    print(format_sweep(rows, choice, a.score_thr,
                       title=f"OpenVINO {ov.__version__} CPU, precision: {hint}; "
                             f"frames {FIT[keep_ratio]}"))
    if choice is not None:
        w, h = rows[choice]["size"]
        flags = rows[choice]["export_flags"]
        fit = "letterboxed" if rows[choice]["keep_ratio"] else "stretched"
        print(f"choice: {flags or f'--input-size {w}x{h}'} ({rows[choice]['precision']}, {fit})"
              + ("" if flags else "; export.py letterboxes only --input-size Wx"))
    return 0


if __name__ == "__main__":
    run_cli(main)
