#!/usr/bin/env python3
"""Does data loading starve the training step? The share of each iteration spent waiting for the loader.

Trains a template's model for ``--iters`` iterations on the airport images (full-HD JPEGs, decoded,
augmented and resized by the template's training pipeline) with each ``--workers`` value in turn, through
``Trainer.train`` (the loop train.py runs), and prints what the trainer logs as ``data_time`` (waiting
for the next batch) and ``iter_time`` per iteration: the mean over the iterations after the first (which
also starts the worker processes) and the share of the iteration spent waiting. ``--amp`` runs the step
as train.py --amp does.

    python benchmarks/bench_data_wait.py [--template 0200] [--workers 0,2] [--iters 8] [--batch 8] [--threads 2]
"""

import argparse
import os
import statistics

import torch
from common import template, train_dataset

from ote_detection.apis.task import Task
from ote_detection.data.coco import RepeatDataset
from ote_detection.engine.hooks import HookBase
from ote_detection.engine.optim import build_optimizer
from ote_detection.engine.trainer import Trainer, build_train_loader


class Times(HookBase):
    def __init__(self):
        self.times = []

    def after_iter(self):
        self.times.append(dict(self.trainer.storage["time"]))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--template", default="0200", help="template name (face-detection-0205, or 0205)")
    p.add_argument("--workers", default="0,2", help="comma-separated --workers values to compare")
    p.add_argument("--iters", type=int, default=8, help="iterations per --workers value")
    p.add_argument("--batch", type=int, default=8, help="images per iteration")
    p.add_argument("--size", type=int, default=None, help="input size (square); default: the template's")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads of the training process")
    p.add_argument("--amp", action="store_true", help="the step of train.py --amp")
    a = p.parse_args()
    name = a.template if a.template.startswith("face-detection-") else f"face-detection-{a.template}"
    torch.set_num_threads(a.threads)
    task = Task(template(name))
    if a.size:
        task.set_input_size((a.size, a.size))
    dataset = train_dataset(task)
    dataset = RepeatDataset(dataset, -(-a.iters * a.batch // len(dataset)))
    w, h = task.input_size
    print(f"{name} {w}x{h}, batch {a.batch}, {a.threads} thread(s), {os.cpu_count()} CPU(s), amp {a.amp}; "
          f"means over iterations 2..{a.iters}")
    print(f"{'workers':>7s} {'data ms':>8s} {'iter ms':>8s} {'data wait':>9s}   (first iteration: data / iter ms)")
    for workers in (int(v) for v in a.workers.split(",")):
        torch.manual_seed(0)
        model = task.build_detector()
        loader = FirstBatches(build_train_loader(dataset, a.batch, workers), a.iters)
        trainer = Trainer(model, loader, build_optimizer(model, task.cfg.optimizer), max_epochs=1, amp=a.amp,
                          progress=False)
        probe = Times()
        trainer.register_hooks([probe])
        trainer.train()
        first, rest = probe.times[0], probe.times[1:]
        data = statistics.mean(t["data"] for t in rest) * 1000
        it = statistics.mean(t["iter"] for t in rest) * 1000
        print(f"{workers:7d} {data:8.1f} {it:8.1f} {100 * data / it:8.1f} %   "
              f"({first['data'] * 1000:.0f} / {first['iter'] * 1000:.0f})")
        del loader, trainer


class FirstBatches:
    """The first ``n`` batches of a DataLoader (one epoch of n iterations for the Trainer)."""

    def __init__(self, loader, n):
        self.loader, self.n = loader, min(n, len(loader))
        self.sampler = loader.sampler  # the trainer sets the epoch of a DistributedSampler

    def __len__(self):
        return self.n

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i >= self.n:
                return
            yield batch


if __name__ == "__main__":
    main()
