#!/usr/bin/env python3
"""Instantiate a model template in a work dir (template, model config, train.py/eval.py..., snapshot)."""

from ote_detection.apis.instantiate import instantiate
from ote_detection.utils.cli import ArgumentParser
from ote_detection.utils.errors import run_cli


def main(argv=None):
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("template", help="path to a model template, e.g. "
                        "model_templates/face-detection/face-detection-0200/template.yaml")
    parser.add_argument("work_dir", help="directory to create (or update) for this model")
    parser.add_argument("--do-not-load-snapshot", action="store_true",
                        help="do not download the template's pretrained snapshot (snapshot.pth)")
    parser.add_argument("--omz-weights", nargs="?", const="FP16", metavar="PRECISION",
                        choices=("FP32", "FP16", "FP16-INT8"),
                        help="when the snapshot cannot be downloaded, fetch the template's Open Model Zoo IR "
                        "(FP16 by default, or FP32 / FP16-INT8) and import its weights as snapshot.pth instead "
                        "(templates 0200, 0202, 0204)")
    args = parser.parse_args(argv)
    instantiate(args.template, args.work_dir, load_snapshot=not args.do_not_load_snapshot,
                omz_weights=args.omz_weights)


if __name__ == "__main__":
    run_cli(main)
