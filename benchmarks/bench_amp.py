#!/usr/bin/env python3
"""Training-step speed of train.py's --amp against fp32, in one process.

Times full training iterations (forward, loss in fp32, backward, SGD step) of a template's model on real
airport images through the project's own ``Trainer.run_step``: fp32 NCHW (the baseline), fp32
channels_last, bf16 autocast NCHW, bf16 autocast + channels_last, and that with the depthwise
convolutions' backward in fp32 (models/layers.Fp32DepthwiseConv2d): what --amp runs on a CPU with AMX or
AVX512-BF16; on other CPUs --amp runs fp32 channels_last. Variants are interleaved round by round so that
machine load affects them alike; the median ms per iteration, its split into forward (with the losses),
backward and optimizer step, and the ratio to the fp32 baseline are printed.

``--profile N`` also runs N iterations of each variant under ``torch.profiler`` and prints the operators
with the most self CPU time.

    python benchmarks/bench_amp.py [--template 0200|0205|...] [--size 256] [--batch 8] [--threads 2]
                                   [--rounds 6] [--profile 3] [--variants fp32+cl,bf16+cl,bf16+cl+dw32]
"""

import argparse
import collections
import os
import statistics
import time

import torch
from common import template, train_dataset

from ote_detection.apis.task import Task
from ote_detection.engine.optim import build_optimizer
from ote_detection.engine.trainer import Trainer, amp_dtype, build_train_loader


# name -> (autocast dtype or None, channels_last, depthwise convolutions in fp32)
VARIANTS = {"fp32": (None, False, False), "fp32+cl": (None, True, False), "bf16": (torch.bfloat16, False, False),
            "bf16+cl": (torch.bfloat16, True, False), "bf16+cl+dw32": (torch.bfloat16, True, True)}
LABELS = {"fp32": "fp32", "fp32+cl": "fp32 channels_last", "bf16": "bf16 autocast",
          "bf16+cl": "bf16 + channels_last", "bf16+cl+dw32": "bf16 + cl, depthwise fp32"}


def profile_table(trainer, batch, iters, top):
    """The ``top`` operators by self CPU time over ``iters`` iterations, as lines of text."""
    from torch.profiler import ProfilerActivity, profile

    # torch's profiler library (kineto) writes "USDT: ... profiler_start" / "profiler_stop" at each start and
    # stop and, in a CUDA build on a machine with no NVIDIA driver, "ERROR: ... gpuGetDeviceCount failed with
    # code 35" when it records the GPUs' properties in the trace, whatever the activities (CPU only here; the
    # legacy use_kineto=False profiler goes through kineto too). Its log threshold is the one setting that
    # stops them (KINETO_LOG_LEVEL, read when the profiler first starts: 5 drops errors, 6 the USDT lines);
    # a value the user set is kept.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(iters):
            trainer.run_step(batch)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1
    groups = collections.Counter()
    for e in events:  # forward ops called from an autograd node (aten::convolution_backward...) are backward
        groups["backward" if "backward" in e.key.lower() else "other"] += e.self_cpu_time_total
    lines = [f"    self CPU {total / 1000 / iters:.0f} ms/iter; ops named *backward*: "
             f"{100 * groups['backward'] / total:.0f} %"]
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]:
        lines.append(f"    {e.key[:44]:44s} {100 * e.self_cpu_time_total / total:5.1f} %  "
                     f"{e.self_cpu_time_total / 1000 / iters:7.1f} ms/iter  {e.count // iters:5d} calls/iter")
    return lines


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--template", default="face-detection-0200",
                   help="template name (face-detection-0205, or 0205) or template.yaml path")
    p.add_argument("--size", type=int, default=None, help="input size (square); default: the template's")
    p.add_argument("--batch", type=int, default=8, help="images per iteration")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--rounds", type=int, default=6, help="timed iterations per variant (after 2 warm-up ones)")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma-separated subset of {','.join(VARIANTS)} (fp32 is always run, as the baseline)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="also profile N iterations of each variant and print the top operators by self CPU time")
    p.add_argument("--top", type=int, default=12, help="operators listed per profile")
    a = p.parse_args()
    names = ["fp32"] + [n for n in a.variants.split(",") if n and n != "fp32"]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"--variants: unknown {', '.join(unknown)} (choose from {', '.join(VARIANTS)})")
    path = template(a.template)
    if not os.path.isfile(path):
        p.error(f"--template: {path} does not exist")
    torch.set_num_threads(a.threads)
    task = Task(path)
    if a.size:
        task.set_input_size((a.size, a.size))
    dataset = train_dataset(task)
    batch = next(iter(build_train_loader(dataset, a.batch, 0)))
    native = amp_dtype("cpu")
    amp_runs = "bf16+cl+dw32" if native is not None else "fp32+cl"
    trainers = {}
    for name in names:
        dtype, cl, dw32 = VARIANTS[name]
        torch.manual_seed(0)
        model = task.build_detector()
        trainers[name] = Trainer(model, [batch], build_optimizer(model, dict(type="SGD", lr=1e-4, momentum=0.9)),
                                 max_epochs=1, amp=dtype or False, channels_last=cl, fp32_depthwise=dw32,
                                 progress=False)
        trainers[name].model.train()
    times = {name: collections.defaultdict(list) for name in names}
    for r in range(a.rounds + 2):
        for name, t in trainers.items():
            start = time.perf_counter()
            t.run_step(batch)
            if r >= 2:
                times[name]["iter"].append((time.perf_counter() - start) * 1000)
                for k, v in t.storage["time"].items():
                    times[name][k].append(v * 1000)
    h, w = task.input_size[1], task.input_size[0]
    print(f"{task.name} {w}x{h}, batch {a.batch}, {a.threads} thread(s), torch {torch.__version__}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16: {native is not None}; "
          f"median of {a.rounds} interleaved iterations")
    print(f"{'variant':24s} {'ms/iter':>8s} {'forward':>8s} {'backward':>8s} {'optim':>7s}   speed-up vs fp32")
    base = statistics.median(times["fp32"]["iter"])
    for name in names:
        med = {k: statistics.median(v) for k, v in times[name].items()}
        mark = "   <- what --amp runs on this CPU" if name == amp_runs else ""
        print(f"{LABELS[name]:24s} {med['iter']:8.1f} {med['forward']:8.1f} {med['backward']:8.1f} "
              f"{med['optimizer']:7.1f}   x{base / med['iter']:.2f}{mark}")
    if a.profile:
        for name in names:
            print(f"profile of {LABELS[name]} ({a.profile} iterations):")
            print("\n".join(profile_table(trainers[name], batch, a.profile, a.top)))


if __name__ == "__main__":
    main()
