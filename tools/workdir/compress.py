#!/usr/bin/env python3
"""Compress this work dir's face detector: fine-tune a trained snapshot with 8-bit quantization (NNCF),
magnitude sparsity (NNCF) and/or filter pruning (torch-pruning), with the settings of
compression_config.json next to this script (learning rate, epochs, schedules, ignored scopes).
The checkpoints (latest.pth, epoch_N.pth) are read by eval.py and export.py like any snapshot; the
exported IR of a quantized model runs in INT8 on the CPU.
"""

import argparse
import os

from ote_detection.apis.compress import compress
from ote_detection.utils.errors import run_cli

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_size(text):
    parts = [int(v) for v in text.replace("x", ",").split(",")]
    return (parts[0], parts[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-ann-files", required=True, help="COCO annotation file(s), comma-separated")
    p.add_argument("--train-data-roots", required=True, help="image folder(s), one per annotation file, comma-separated")
    p.add_argument("--val-ann-files", help="COCO annotation file(s) for validation (COCO AP after each epoch; the "
                   "accuracy metric of --ptq)")
    p.add_argument("--val-data-roots", help="image folder(s) of the validation annotation file(s)")
    p.add_argument("--save-checkpoints-to", required=True,
                   help="output folder: epoch_N.pth and latest.pth (with --ptq: model.xml/.bin, INT8 IR)")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--load-weights", help="the trained snapshot to compress (required unless --resume-from)")
    start.add_argument("--resume-from", help="continue a compress.py run from its checkpoint (same --nncf-* flags)")
    p.add_argument("--nncf-quantization", action="store_true", default=None,
                   help="8-bit quantization-aware fine-tuning (NNCF); ranges set from training images")
    p.add_argument("--nncf-sparsity", action="store_true", default=None,
                   help="magnitude sparsity (NNCF), level raised on the config's multi-step schedule")
    p.add_argument("--nncf-pruning", action="store_true", default=None,
                   help="filter pruning (torch-pruning, geometric-median importance), exponential schedule; the "
                   "pruned network is physically smaller")
    p.add_argument("--ptq", action="store_true", help="with --nncf-quantization: post-training quantization of the "
                   "OpenVINO IR with accuracy control on the validation files instead of fine-tuning (minutes)")
    p.add_argument("--max-drop", type=float, default=1.0,
                   help="--ptq: largest accepted drop of the validation AP, in AP points (default 1.0)")
    p.add_argument("--compression-config", help="compression config file (default: the template's, "
                   "compression_config.json next to this script)")
    p.add_argument("--epochs", type=int, help="total number of epochs (default: the config's total_epochs)")
    p.add_argument("--batch-size", type=int, help="images per process and iteration (default: the template's)")
    p.add_argument("--base-learning-rate", type=float, help="learning rate (default: the config's optimizer.lr of "
                   "the enabled algorithm(s))")
    p.add_argument("--gpu-num", type=int, help="number of GPUs, one DDP process each (default: the template's gpu_num, "
                   "limited to the GPUs present; 0 = CPU). Without CUDA, N > 1 runs N CPU processes with gloo")
    p.add_argument("--tensorboard-dir", help="write TensorBoard logs (losses, lr, val AP) to this folder")
    p.add_argument("--workers", type=int, help="data-loading processes per training process")
    p.add_argument("--input-size", type=parse_size, help="override the template's input size, e.g. 128 or 160x128 "
                   "(stored in the checkpoint and used by eval.py/export.py)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="allow overwriting checkpoints of an earlier run in "
                   "--save-checkpoints-to")
    a = p.parse_args(argv)
    compress(os.path.join(HERE, "template.yaml"), a.train_ann_files, a.train_data_roots, a.save_checkpoints_to,
             nncf_quantization=a.nncf_quantization, nncf_sparsity=a.nncf_sparsity, nncf_pruning=a.nncf_pruning,
             load_weights=a.load_weights, resume_from=a.resume_from, ptq=a.ptq, max_drop=a.max_drop,
             compression_config=a.compression_config, val_ann_files=a.val_ann_files, val_data_roots=a.val_data_roots,
             epochs=a.epochs, batch_size=a.batch_size, base_learning_rate=a.base_learning_rate, gpu_num=a.gpu_num,
             tensorboard_dir=a.tensorboard_dir, workers=a.workers, input_size=a.input_size, seed=a.seed,
             overwrite=a.overwrite)


if __name__ == "__main__":
    run_cli(main)
