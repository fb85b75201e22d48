#!/usr/bin/env python3
"""Compress this work dir's face detector: fine-tune a trained snapshot with 8-bit quantization (NNCF),
magnitude sparsity (NNCF) and/or filter pruning (torch-pruning), with the settings of
compression_config.json next to this script (learning rate, epochs, schedules, ignored scopes).
The checkpoints (latest.pth, epoch_N.pth) are read by eval.py and export.py like any snapshot; the
exported IR of a quantized model runs in INT8 on the CPU.
"""

import os

from ote_detection.apis.compress import compress
from ote_detection.utils.cli import (ArgumentParser, add_int8_check_args, add_training_args, existing_file,
                                     non_negative_float, training_kwargs)
from ote_detection.utils.errors import run_cli

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    p = ArgumentParser(description=__doc__)
    add_training_args(p, letterbox=True, defaults=("the compression config's total_epochs of the enabled algorithm(s)",
                                "the compression config's optimizer.lr of the enabled algorithm(s)"),
                      load_weights_help="the trained snapshot to compress (required unless --resume-from)",
                      resume_help="continue a compress.py run from its checkpoint (same --nncf-* flags)",
                      input_size_default="the geometry of the --load-weights snapshot (its input size, letterboxed "
                      "if it was trained with train.py --input-size Wx), as --ptq and export.py take it, or of the "
                      "--resume-from checkpoint")
    p.add_argument("--nncf-quantization", action="store_true", default=None,
                   help="8-bit quantization-aware fine-tuning (NNCF); ranges set from training images")
    p.add_argument("--nncf-sparsity", action="store_true", default=None,
                   help="magnitude sparsity (NNCF), level raised on the config's multi-step schedule")
    p.add_argument("--nncf-pruning", action="store_true", default=None,
                   help="filter pruning (torch-pruning, geometric-median importance), exponential schedule; the "
                   "pruned network is physically smaller")
    p.add_argument("--ptq", action="store_true", help="with --nncf-quantization: post-training quantization of the "
                   "OpenVINO IR with accuracy control on the validation files instead of fine-tuning (minutes)")
    p.add_argument("--max-drop", type=non_negative_float, default=1.0,
                   help="--ptq: largest accepted drop of the validation AP, in AP points (default 1.0)")
    p.add_argument("--compression-config", type=existing_file, help="compression config file (default: the template's, "
                   "compression_config.json next to this script)")
    add_int8_check_args(p)
    a = p.parse_args(argv)
    compress(os.path.join(HERE, "template.yaml"), a.train_ann_files, a.train_data_roots, a.save_checkpoints_to,
             nncf_quantization=a.nncf_quantization, nncf_sparsity=a.nncf_sparsity, nncf_pruning=a.nncf_pruning,
             ptq=a.ptq, max_drop=a.max_drop, max_recall_drop=a.max_recall_drop,
             allow_recall_drop=a.allow_recall_drop, compression_config=a.compression_config, **training_kwargs(a))


if __name__ == "__main__":
    run_cli(main)
