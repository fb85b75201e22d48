#!/usr/bin/env python3
"""Train (or fine-tune) this work dir's face detector on COCO-annotated data.

Defaults come from template.yaml (hyper_parameters.basic, gpu_num) and model.py next to this script.
"""

import argparse
import os

from ote_detection.apis.train import train
from ote_detection.utils.cli import (existing_file, input_size, non_negative_float, non_negative_int, output_dir,
                                     positive_int, seed)
from ote_detection.utils.errors import run_cli

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-ann-files", required=True, help="COCO annotation file(s), comma-separated")
    p.add_argument("--train-data-roots", required=True, help="image folder(s), one per annotation file, comma-separated")
    p.add_argument("--val-ann-files", help="COCO annotation file(s) for validation (COCO AP after each epoch)")
    p.add_argument("--val-data-roots", help="image folder(s) of the validation annotation file(s)")
    p.add_argument("--save-checkpoints-to", required=True, type=output_dir,
                   help="output folder: epoch_N.pth and latest.pth are written there (atomically) after each epoch. "
                   "A folder holding checkpoints of an earlier run is refused unless --resume-from continues that run "
                   "or --overwrite is given; one process at a time may write it (lock)")
    p.add_argument("--overwrite", action="store_true", help="replace the checkpoints of an earlier run in "
                   "--save-checkpoints-to (they are removed before training starts)")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--resume-from", type=existing_file, help="continue a training run from this checkpoint: "
                       "weights, optimizer state and epoch count; ends at once if --epochs does not exceed the stored "
                       "epoch")
    start.add_argument("--load-weights", type=existing_file,
                       help="start a fresh schedule (epoch 0, warm-up) from these weights")
    p.add_argument("--epochs", type=positive_int, help="total number of epochs (default: the template's)")
    p.add_argument("--batch-size", type=positive_int,
                   help="images per process and iteration (default: the template's)")
    p.add_argument("--base-learning-rate", type=non_negative_float,
                   help="SGD learning rate before warm-up/steps (default: the template's)")
    p.add_argument("--gpu-num", type=non_negative_int, help="number of GPUs, one DDP process each (default: the "
                   "template's gpu_num, limited to the GPUs present; 0 = CPU). Without CUDA, N > 1 runs N CPU "
                   "processes with gloo")
    p.add_argument("--tensorboard-dir", type=output_dir,
                   help="write TensorBoard logs (losses, lr, val AP) to this folder")
    p.add_argument("--workers", type=non_negative_int, help="data-loading processes per training process (default: "
                   "model.py's workers_per_gpu, at most the CPU count; 0 = load in the training process)")
    p.add_argument("--input-size", type=input_size, help="override the template's input size, e.g. 128 or 160x128 "
                   "(width x height, each side 32..8192; stored in the checkpoint and used by eval.py and export.py)")
    p.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    p.add_argument("--amp", action="store_true", help="mixed precision: bf16 autocast on CPUs with AMX/AVX512-BF16, "
                   "fp16 with a gradient scaler (or bf16) on CUDA; losses stay in fp32")
    a = p.parse_args(argv)
    train(os.path.join(HERE, "template.yaml"), a.train_ann_files, a.train_data_roots, a.save_checkpoints_to,
          val_ann_files=a.val_ann_files, val_data_roots=a.val_data_roots, resume_from=a.resume_from,
          load_weights=a.load_weights, epochs=a.epochs, batch_size=a.batch_size,
          base_learning_rate=a.base_learning_rate,
          gpu_num=a.gpu_num, tensorboard_dir=a.tensorboard_dir, workers=a.workers,
          input_size=tuple(a.input_size) if a.input_size else None, seed=a.seed, amp=a.amp, overwrite=a.overwrite)


if __name__ == "__main__":
    run_cli(main)
