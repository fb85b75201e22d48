#!/usr/bin/env python3
"""Train (or fine-tune) this work dir's face detector on COCO-annotated data.

Defaults come from template.yaml (hyper_parameters.basic, gpu_num) and model.py next to this script.
"""

import os

from ote_detection.apis.train import train
from ote_detection.utils.cli import ArgumentParser, add_training_args, training_kwargs
from ote_detection.utils.errors import run_cli

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    p = ArgumentParser(description=__doc__)
    add_training_args(p)
    p.add_argument("--amp", action="store_true", help="mixed precision: bf16 autocast on CPUs with AMX/AVX512-BF16, "
                   "fp16 with a gradient scaler (or bf16) on CUDA; losses stay in fp32")
    a = p.parse_args(argv)
    train(os.path.join(HERE, "template.yaml"), a.train_ann_files, a.train_data_roots, a.save_checkpoints_to,
          amp=a.amp, **training_kwargs(a))


if __name__ == "__main__":
    run_cli(main)
