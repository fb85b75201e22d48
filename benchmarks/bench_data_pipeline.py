#!/usr/bin/env python3
"""CPU cost of one training sample of a template against the JPEG decode floor, side by side in one run.

For each round, and each image of the set in turn, three things are timed back to back on the same file
(in turns of order: each comes first, second and third equally often, so that no one gains from the file's
bytes being in the CPU's cache from the one before):
``cv2.imread`` (the floor), one sample of the template's training pipeline as the trainer gets it
(``dataset[i]``: decode, augmentation, tensors), and the same sample through the pipeline as it was before
deferred decoding (benchmarks/reference_pipeline.py: the "before"). Times are the CPU time of this thread
(``time.thread_time``: other processes on a shared machine do not count), one OpenCV and one torch
thread, float32. Printed: mean ms per sample, the ratios to ``cv2.imread``, images per second per core,
and the CPU time of an 8-GPU WIDER FACE epoch.

``--reduced`` also measures an idea that is not used: decoding the JPEG at 1/2 (``cv2.IMREAD_REDUCED_COLOR_2``)
where the resize shrinks the image at least 2x; it prints its time and how much it smooths the network's
input (mean absolute horizontal gradient of the 256x256 frame, against the bilinear resize of the full frame
that training used and evaluation uses).

    python benchmarks/bench_data_pipeline.py [--template 0200] [--rounds 20] [--reduced]
"""

import argparse
import os
import random
import time

import cv2
import numpy as np
import torch
from machine import cpu_model  # beside this file (its folder is first on sys.path)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATES = os.path.join(ROOT, "model_templates", "face-detection")
WIDER10 = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "wider_train10"))
WIDER_TRAIN_IMAGES = 12880


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--template", default="0200", help="template name (face-detection-0200, or 0200)")
    p.add_argument("--ann", default=os.path.join(WIDER10, "annotations_coco.json"),
                   help="COCO annotation file of the images (default: ../shared/data/wider_train10, real WIDER FACE "
                   "train images of 1024 px width)")
    p.add_argument("--root", default=WIDER10, help="image folder of --ann")
    p.add_argument("--rounds", type=int, default=20, help="passes over the images (each times all three)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the augmentation")
    p.add_argument("--reduced", action="store_true", help="also measure JPEG decoding at 1/2 (an idea not used)")
    a = p.parse_args()

    from reference_pipeline import ReferencePipeline

    from ote_detection.apis.task import Task
    from ote_detection.apis.train import build_train_dataset

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    name = a.template if a.template.startswith("face-detection-") else f"face-detection-{a.template}"
    task = Task(os.path.join(TEMPLATES, name, "template.yaml"))
    dataset = build_train_dataset(task.cfg, a.ann, a.root, task.classes, quiet=True)
    dataset = getattr(dataset, "dataset", dataset)  # RepeatDataset's copies: the same samples
    reference = ReferencePipeline(dataset.pipeline.steps)
    def imread(i):
        assert cv2.imread(dataset.items[i][0]) is not None, dataset.items[i][0]

    def before(i):
        path, boxes, labels, _ = dataset.items[i]
        reference({"filename": path, "gt_bboxes": boxes.copy(), "gt_labels": labels.copy()})

    runs = {"imread": imread, "pipeline": dataset.__getitem__, "before": before}
    times = {k: [] for k in runs}
    random.seed(a.seed)
    for r in range(a.rounds):
        for i in range(len(dataset)):
            keys = list(runs)
            keys = keys[(r + i) % 3:] + keys[:(r + i) % 3]  # each goes first, second, third in turn
            for key in keys:
                t0 = time.thread_time()
                runs[key](i)
                times[key].append(time.thread_time() - t0)
    ms = {k: 1000 * float(np.mean(v)) for k, v in times.items()}
    n = len(times["imread"])
    w, h = task.input_size
    print(f"{name} training pipeline, input {w}x{h}; {len(dataset)} images of {a.ann} x {a.rounds} rounds = {n} "
          f"samples; CPU: {cpu_model()}, {os.cpu_count()} core(s); 1 thread, float32; CPU time of this thread")
    print(f"{'':28s} {'ms/sample':>9s} {'/ imread':>8s} {'images/s/core':>13s} {'WIDER epoch, CPU s':>18s}")
    for key, label in (("imread", "cv2.imread (the floor)"), ("before", "pipeline before"),
                       ("pipeline", "pipeline now")):
        print(f"{label:28s} {ms[key]:9.2f} {ms[key] / ms['imread']:8.2f} {1000 / ms[key]:13.1f} "
              f"{WIDER_TRAIN_IMAGES * ms[key] / 1000:18.0f}")
    print(f"speed-up {ms['before'] / ms['pipeline']:.2f}x; goal: pipeline / imread <= 1.5 "
          f"({'met' if ms['pipeline'] / ms['imread'] <= 1.5 else 'NOT met'}: {ms['pipeline'] / ms['imread']:.2f})")
    for gpus, workers in ((8, 2), (8, 8)):
        cores = gpus * workers
        print(f"{WIDER_TRAIN_IMAGES} WIDER images on {gpus} GPUs x {workers} loader workers ({cores} cores): "
              f"{WIDER_TRAIN_IMAGES * ms['before'] / 1000 / cores:.1f} s before, "
              f"{WIDER_TRAIN_IMAGES * ms['pipeline'] / 1000 / cores:.1f} s now "
              f"({cores * 1000 / ms['pipeline']:.0f} images/s fed)")
    if a.reduced:
        reduced_decoding(dataset, a.rounds, (w, h))


def reduced_decoding(dataset, rounds, size):
    """Full frames decoded at 1/2 and resized to ``size`` against the full decode and resize."""
    full_t, half_t, grad_full, grad_half = [], [], [], []
    for _ in range(rounds):
        for path, *_ in dataset.items:
            t0 = time.thread_time()
            full = cv2.resize(cv2.imread(path), size, interpolation=cv2.INTER_LINEAR)
            t1 = time.thread_time()
            half = cv2.resize(cv2.imread(path, cv2.IMREAD_REDUCED_COLOR_2), size, interpolation=cv2.INTER_LINEAR)
            t2 = time.thread_time()
            full_t.append(t1 - t0)
            half_t.append(t2 - t1)
            grad_full.append(np.abs(np.diff(full.astype(np.float32), axis=1)).mean())
            grad_half.append(np.abs(np.diff(half.astype(np.float32), axis=1)).mean())
    print(f"idea not used, JPEG decoded at 1/2 (whole frames, resized to {size[0]}x{size[1]}): "
          f"{1000 * np.mean(half_t):.2f} ms against {1000 * np.mean(full_t):.2f} ms "
          f"({np.mean(half_t) / np.mean(full_t):.2f}x); mean |horizontal gradient| "
          f"{np.mean(grad_half):.2f} against {np.mean(grad_full):.2f} ({np.mean(grad_half) / np.mean(grad_full):.2f}x: "
          "a smoother input than the full-frame bilinear resize of training so far and of evaluation)")


if __name__ == "__main__":
    main()
