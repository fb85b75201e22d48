#!/usr/bin/env python3
"""Export a snapshot (.pth) of this work dir's model to OpenVINO IR: model.xml + model.bin (FP32).

The IR takes a planar BGR image of 0..255 ([1, 3, H, W], input "image"; normalisation is folded in)
and returns Open Model Zoo's SSD detection format ([1, 1, N, 7], output "detection_out"). The
input size is the snapshot's (training may override it), else the template's. export_info.yaml
beside the IR records the details.
"""

import argparse
import os

from ote_detection.apis.export import export
from ote_detection.utils.errors import run_cli

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--load-weights", required=True, help="snapshot (.pth) to export")
    p.add_argument("--save-model-to", required=True, help="output folder: model.xml, model.bin, export_info.yaml "
                   "(written to a temporary folder first, then moved there)")
    p.add_argument("--onnx", action="store_true", help="also write model.onnx (the network without the SSD "
                   "post-processing: softmax scores and box deltas)")
    a = p.parse_args(argv)
    export(os.path.join(HERE, "template.yaml"), a.load_weights, a.save_model_to, onnx=a.onnx)


if __name__ == "__main__":
    run_cli(main)
