#!/usr/bin/env python3
"""Import the weights of an OpenVINO IR (e.g. Open Model Zoo's face-detection-0200) into a snapshot of a template.

The IR's convolutions (BatchNorm folded in, FP16 or dequantised INT8) are matched one to one to the
template's model; the snapshot loads with train.py --load-weights, eval.py and export.py.
"""

import argparse

from ote_detection.apis.import_weights import import_openvino_weights
from ote_detection.utils.errors import run_cli


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("template", help="template.yaml of the model the IR was made from, e.g. "
                   "model_templates/face-detection/face-detection-0200/template.yaml")
    p.add_argument("ir", help="the IR's .xml (its .bin beside it)")
    p.add_argument("output", help="snapshot to write (.pth), atomically")
    p.add_argument("--calibrate-bn", metavar="IMAGES", help="folder(s) or image file(s), comma-separated: measure "
                   "BatchNorm statistics on them (recommended before fine-tuning with train.py; without it BatchNorm "
                   "layers are identities plus bias, exact for inference but not for train-mode batch statistics)")
    p.add_argument("--no-verify", action="store_true", help="skip the comparison of the head outputs of the IR "
                   "and the imported model on a test image")
    a = p.parse_args(argv)
    import_openvino_weights(a.template, a.ir, a.output, verify=not a.no_verify, calibration_images=a.calibrate_bn)


if __name__ == "__main__":
    run_cli(main)
