#!/usr/bin/env python3
"""Train (or fine-tune) this work dir's face detector on COCO-annotated data.

Defaults come from template.yaml (hyper_parameters.basic, gpu_num) and model.py next to this script.
"""

import argparse
import os

from ote_detection.apis.train import train
from ote_detection.utils.errors import run_cli

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_size(text):
    parts = [int(v) for v in text.replace("x", ",").split(",")]
    return (parts[0], parts[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-ann-files", required=True, help="COCO annotation file(s), comma-separated")
    p.add_argument("--train-data-roots", required=True, help="image folder(s), one per annotation file, comma-separated")
    p.add_argument("--val-ann-files", help="COCO annotation file(s) for validation (COCO AP after each epoch)")
    p.add_argument("--val-data-roots", help="image folder(s) of the validation annotation file(s)")
    p.add_argument("--save-checkpoints-to", required=True,
                   help="output folder: epoch_N.pth and latest.pth are written there (atomically) after each epoch")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--resume-from", help="continue a training run from this checkpoint: weights, optimizer state "
                       "and epoch count; ends at once if --epochs does not exceed the stored epoch")
    start.add_argument("--load-weights", help="start a fresh schedule (epoch 0, warm-up) from these weights")
    p.add_argument("--epochs", type=int, help="total number of epochs (default: the template's)")
    p.add_argument("--batch-size", type=int, help="images per process and iteration (default: the template's)")
    p.add_argument("--base-learning-rate", type=float, help="SGD learning rate before warm-up/steps (default: the template's)")
    p.add_argument("--gpu-num", type=int, help="number of GPUs, one DDP process each (default: the template's gpu_num, "
                   "limited to the GPUs present; 0 = CPU). Without CUDA, N > 1 runs N CPU processes with gloo")
    p.add_argument("--tensorboard-dir", help="write TensorBoard logs (losses, lr, val AP) to this folder")
    p.add_argument("--workers", type=int, help="data-loading processes per training process (default: model.py's "
                   "workers_per_gpu, at most the CPU count)")
    p.add_argument("--input-size", type=parse_size, help="override the template's input size, e.g. 128 or 160x128 "
                   "(for quick experiments; stored in the checkpoint and used by eval.py)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    a = p.parse_args(argv)
    train(os.path.join(HERE, "template.yaml"), a.train_ann_files, a.train_data_roots, a.save_checkpoints_to,
          val_ann_files=a.val_ann_files, val_data_roots=a.val_data_roots, resume_from=a.resume_from,
          load_weights=a.load_weights, epochs=a.epochs, batch_size=a.batch_size, base_learning_rate=a.base_learning_rate,
          gpu_num=a.gpu_num, tensorboard_dir=a.tensorboard_dir, workers=a.workers, input_size=a.input_size, seed=a.seed)


if __name__ == "__main__":
    run_cli(main)
