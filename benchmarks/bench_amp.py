#!/usr/bin/env python3
"""Training-step speed of train.py's --amp (bf16 autocast + channels_last) against fp32, in one process.

Times full training iterations (forward, loss in fp32, backward, SGD step) of a template's model on real
airport images through the project's own Trainer: fp32 NCHW (the baseline), fp32 channels_last, bf16
autocast NCHW, and bf16 autocast + channels_last (what --amp runs on a CPU with AMX/AVX512-BF16).
Variants are interleaved round by round so that machine load affects them alike; the median ms per
iteration and the ratio to the baseline are printed. bf16 is timed also on CPUs without native bf16
(AVX2 only), where torch emulates it slowly and --amp therefore runs fp32 with channels_last.

    python benchmarks/bench_amp.py [--template face-detection-0200] [--size 256] [--batch 8] [--threads 2]
"""

import argparse
import os
import statistics
import time

import torch

from ote_detection.apis.task import Task
from ote_detection.apis.train import build_train_dataset
from ote_detection.engine.optim import build_optimizer
from ote_detection.engine.trainer import Trainer, amp_dtype, build_train_loader

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AIRPORT = os.path.join(ROOT, "data", "airport")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--template", default="face-detection-0200")
    p.add_argument("--size", type=int, default=256, help="input size (square)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=6, help="timed iterations per variant (after 2 warm-up ones)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    task = Task(os.path.join(ROOT, "model_templates", "face-detection", a.template, "template.yaml"))
    task.set_input_size((a.size, a.size))
    dataset = build_train_dataset(task.cfg, os.path.join(AIRPORT, "annotation_faces_train.json"), AIRPORT,
                                  task.classes)
    batch = next(iter(build_train_loader(dataset, a.batch, 0)))
    native = amp_dtype("cpu")
    amp_runs = "bf16 + channels_last" if native is not None else "fp32 channels_last"
    variants = {"fp32": (None, False), "fp32 channels_last": (None, True),
                "bf16 autocast": (torch.bfloat16, False), "bf16 + channels_last": (torch.bfloat16, True)}
    trainers = {}
    for name, (dtype, cl) in variants.items():
        torch.manual_seed(0)
        model = task.build_detector()
        trainers[name] = Trainer(model, [batch], build_optimizer(model, dict(type="SGD", lr=1e-4, momentum=0.9)),
                                 max_epochs=1, amp=dtype or False, channels_last=cl, progress=False)
        trainers[name].model.train()
    times = {name: [] for name in variants}
    for r in range(a.rounds + 2):
        for name, t in trainers.items():
            start = time.perf_counter()
            t.run_step(batch)
            if r >= 2:
                times[name].append((time.perf_counter() - start) * 1000)
    print(f"{a.template} {a.size}x{a.size}, batch {a.batch}, {a.threads} thread(s), torch {torch.__version__}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16: {native is not None}; "
          f"median of {a.rounds} iterations")
    base = statistics.median(times["fp32"])
    for name, ts in times.items():
        med = statistics.median(ts)
        mark = "   <- what --amp runs on this CPU" if name == amp_runs else ""
        print(f"{name:32s} {med:9.1f} ms/iter   speed-up x{base / med:.2f}{mark}")


if __name__ == "__main__":
    main()
