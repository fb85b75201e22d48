#!/usr/bin/env bash
# GPU check (one CUDA device, under 8 minutes on one GPU): CUDA training steps of every template in fp32
# and with --amp (ms/iter, peak memory; 0206 at its batch 5 at 640x640), train.py --gpu-num 1 through
# torchrun/NCCL for one epoch on airport, and the torch eval of a 0206 snapshot through CUDA. Prints one
# table; exits non-zero when any check fails. Without CUDA it says so in one line and exits 0 (for CI).
#
# The GPU machine reaches no package registry: the wheels its python3 lacks (pycocotools, pytorchcv,
# ptflops) are brought in benchmarks/gpu_wheels/ (benchmarks/fetch_gpu_wheels.sh downloads them) and
# installed with pip --no-deps --no-index into a folder of their own (the system site-packages are not
# touched). OpenVINO and NNCF are not needed: the training and torch evaluation paths import without them.
#
#   benchmarks/gpu_check.sh [--templates 0200,0206] [--iters 10] [--skip-train]   # PYTHON=python3
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-python3}"
if ! command -v "$py" >/dev/null; then
    echo "gpu_check: FAIL: no python interpreter '$py' (set PYTHON)"
    exit 1
fi
if ! reason="$("$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>&1)"; then
    echo "gpu_check: skipped, no CUDA device (torch.cuda.is_available() is false${reason:+: ${reason##*$'\n'}})"
    exit 0
fi
site="$root/benchmarks/gpu_wheels/site"
if ! "$py" -c 'import pycocotools, pytorchcv, ptflops' 2>/dev/null; then
    shopt -s nullglob
    wheels=("$root"/benchmarks/gpu_wheels/*.whl)
    if [ ${#wheels[@]} -eq 0 ]; then
        echo "gpu_check: FAIL: pycocotools/pytorchcv/ptflops are missing and benchmarks/gpu_wheels/ has no wheels (run benchmarks/fetch_gpu_wheels.sh where a registry is reachable)"
        exit 1
    fi
    if ! "$py" -m pip install --quiet --no-deps --no-index --target "$site" --upgrade "${wheels[@]}"; then
        echo "gpu_check: FAIL: pip could not install ${wheels[*]##*/} into $site"
        exit 1
    fi
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}:$site"
exec "$py" "$root/benchmarks/gpu_check.py" "$@"
