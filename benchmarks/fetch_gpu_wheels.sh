#!/usr/bin/env bash
# Downloads the few wheels that benchmarks/gpu_check.sh installs on the GPU machine, which reaches no
# package registry and whose python3 (3.12, x86_64) lacks them: pycocotools (COCO AP of eval.py),
# pytorchcv (the backbones) and ptflops (complexity). Run it here, with registry access; the files go
# to benchmarks/gpu_wheels/ (ignored by git, about 1 MB), which travels with the working tree.
#
#   benchmarks/fetch_gpu_wheels.sh            # PYTHON=... picks the interpreter that runs pip
set -euo pipefail
dest="$(cd "$(dirname "$0")" && pwd)/gpu_wheels"
mkdir -p "$dest"
"${PYTHON:-python3}" -m pip download --quiet --no-deps --only-binary=:all: --dest "$dest" \
    --python-version 3.12 --implementation cp --abi cp312 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    pycocotools==2.0.11 pytorchcv==0.0.74 ptflops==0.7.5
ls -l "$dest"
