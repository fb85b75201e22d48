#!/usr/bin/env python3
"""Train (or fine-tune) this work dir's face detector on COCO-annotated data.

Defaults come from template.yaml (hyper_parameters.basic, gpu_num) and model.py next to this script.
"""

import os

from ote_detection.apis.train import train
from ote_detection.utils.cli import ArgumentParser, add_training_args, existing_file, training_kwargs
from ote_detection.utils.errors import run_cli

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    p = ArgumentParser(description=__doc__)
    add_training_args(p, letterbox=True, input_size_default="the template's, or that of the --resume-from checkpoint; "
                      "--load-weights only gives the starting weights")
    p.add_argument("--amp", action="store_true", help="mixed precision: bf16 autocast on CPUs with AMX/AVX512-BF16, "
                   "fp16 with a gradient scaler (or bf16) on CUDA; losses stay in fp32. On a CPU without AMX or "
                   "AVX512-BF16 (e.g. AVX2 only) training runs in fp32, and the plan line says so and why")
    p.add_argument("--load-backbone", type=existing_file, metavar="SNAPSHOT",
                   help="start the backbone from the backbone.* weights of this snapshot (another template with the "
                        "same backbone, e.g. an Open Model Zoo import of face-detection-0204 for 0205's "
                        "mobilenetv2_w1), the neck and head from their initialisation; instead of ImageNet weights "
                        "(offline). Not with --load-weights or --resume-from")
    a = p.parse_args(argv)
    train(os.path.join(HERE, "template.yaml"), a.train_ann_files, a.train_data_roots, a.save_checkpoints_to,
          amp=a.amp, load_backbone=a.load_backbone, **training_kwargs(a))


if __name__ == "__main__":
    run_cli(main)
