#!/usr/bin/env python3
"""The GPU check behind benchmarks/gpu_check.sh (run that script, which installs the wheels first).

Rows of the table (one CUDA device; all data are the airport crops in data/airport):
  * ``step <template> fp32|amp``: training iterations of each template at its template batch size and
    input size (0206: batch 5 at 640x640) through ``Trainer.run_step``; ``amp`` is what ``train.py --amp``
    runs on this GPU (bf16 autocast, or fp16 with a GradScaler where bf16 is unsupported). ms per iteration
    (median of ``--iters`` after 3 warm-up ones, synchronised) and peak allocated GPU memory (MiB).
  * ``train.py --gpu-num 1 (NCCL)``: one epoch of 0200 on airport through torchrun with one process, so
    that the process group (NCCL) and DistributedDataParallel paths run; the wall time of the command.
  * ``train.py 0206 --gpu-num 1``: one epoch of 0206 on airport (a snapshot for the next row).
  * ``eval 0206 snapshot (CUDA)``: the torch evaluation path (TorchPredictor, detect_images, COCO AP) on
    CUDA, and the same on the CPU: the two APs must agree within 0.5 point.

Exits 1 when any row fails (the table says which, and why, in one line each), 0 otherwise. Without CUDA
it prints one line and exits 0.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATES = os.path.join(ROOT, "model_templates", "face-detection")
AIRPORT = os.path.join(ROOT, "data", "airport")
AIRPORT_ANN = os.path.join(AIRPORT, "annotation_faces_train.json")


def no_cuda_reason():
    """None when a CUDA device is usable, else why not (one line)."""
    try:
        import torch
    except ImportError as exc:
        return f"torch cannot be imported ({exc})"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device"
    return None


def template_names():
    return sorted(d for d in os.listdir(TEMPLATES) if os.path.isfile(os.path.join(TEMPLATES, d, "template.yaml")))


def step_rows(names, iters, device="cuda", small=False):
    """(row name, ms/iter, peak MiB, note, error) of training steps, fp32 and amp, per template; ``small``
    (the CPU dry run): batch 2 at 128x128."""
    import torch

    from ote_detection.apis.task import Task
    from ote_detection.apis.train import build_train_dataset
    from ote_detection.data.coco import collate_train
    from ote_detection.engine.optim import build_optimizer
    from ote_detection.engine.trainer import Trainer, amp_dtype

    device = torch.device(device)
    cuda = device.type == "cuda"
    rows = []
    for name in names:
        task = Task(os.path.join(TEMPLATES, name, "template.yaml"))
        batch_size = 2 if small else int(task.basic["batch_size"])
        if small:
            task.set_input_size((128, 128))
        dataset = build_train_dataset(task.cfg, AIRPORT_ANN, AIRPORT, task.classes)
        batch = collate_train([dataset[i % len(dataset)] for i in range(batch_size)])
        w, h = task.input_size
        for amp in (False, True):
            kind = {torch.bfloat16: "bf16", torch.float16: "fp16, GradScaler"}.get(amp_dtype(device), "fp32")
            label = f"step {name[-4:]} " + (f"amp ({kind})" if amp else "fp32")
            trainer = model = None
            try:
                torch.manual_seed(0)
                model = task.build_detector()
                trainer = Trainer(model, [batch], build_optimizer(model, task.cfg.optimizer), max_epochs=1,
                                  device=device, amp=amp, progress=False)
                trainer.model.train()
                for _ in range(3):
                    trainer.run_step(batch)
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                times = []
                for _ in range(iters):
                    start = time.perf_counter()
                    trainer.run_step(batch)  # ends with .item(): synchronised
                    times.append((time.perf_counter() - start) * 1000)
                peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
                rows.append((label, statistics.median(times), peak, f"batch {batch_size}, {w}x{h}", None))
            except Exception as exc:  # a failed row is reported, the others still run
                rows.append((label, None, None, f"batch {batch_size}, {w}x{h}", one_line(exc)))
            finally:
                trainer = model = None
                if cuda:
                    torch.cuda.empty_cache()
    return rows


def one_line(exc):
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return text[:160]


def run_cmd(label, cmd, env, timeout):
    """(row) of a subprocess: wall seconds, or its last error line."""
    start = time.perf_counter()
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return (label, None, None, "", f"timed out after {timeout} s")
    wall = time.perf_counter() - start
    if r.returncode != 0:
        lines = [ln for ln in (r.stderr or r.stdout).splitlines() if ln.strip()]
        return (label, None, None, "", f"exit {r.returncode}: {lines[-1][:160] if lines else ''}")
    return (label, wall * 1000, None, "wall time of the command", None)


def train_rows(tmp, env, cuda=True):
    """train.py of 0200 through torchrun/NCCL and of 0206 (whose snapshot the eval row uses); without
    ``cuda`` (the dry run) on the CPU (torchrun then uses gloo) at 128x128."""
    rows = []
    common = ["--train-ann-files", AIRPORT_ANN, "--train-data-roots", AIRPORT, "--epochs", "1", "--workers", "2",
              "--gpu-num", "1" if cuda else "0"] + ([] if cuda else ["--input-size", "128"])
    for name, torchrun in (("face-detection-0200", True), ("face-detection-0206", False)):
        work = os.path.join(tmp, name)
        r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "instantiate_template.py"),
                            os.path.join(TEMPLATES, name, "template.yaml"), work, "--do-not-load-snapshot"],
                           env=env, capture_output=True, text=True)
        if r.returncode != 0:
            rows.append((f"instantiate {name}", None, None, "", (r.stderr.strip().splitlines() or [""])[-1][:160]))
            continue
        out = os.path.join(tmp, f"out-{name}")
        launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
                    if torchrun else [sys.executable])
        label = f"train.py {name[-4:]} --gpu-num {1 if cuda else 0}" + (
            f" (torchrun, {'NCCL' if cuda else 'gloo'})" if torchrun else "")
        rows.append(run_cmd(label, launcher + [os.path.join(work, "train.py"), "--save-checkpoints-to", out]
                            + common, env, timeout=300 if cuda else 900))
    return rows


def eval_row(snapshot, device="cuda"):
    """COCO AP of the 0206 snapshot on airport through CUDA (``device``), checked against the CPU."""
    from ote_detection.apis.task import Task
    from ote_detection.data.coco import load_coco_files
    from ote_detection.inference.predictor import TorchPredictor, detect_images
    from ote_detection.evaluation import evaluate_detections

    label = f"eval 0206 snapshot ({device})"
    if not os.path.isfile(snapshot):
        return (label, None, None, "", f"no snapshot at {snapshot} (the 0206 training row failed)")
    try:
        task = Task(os.path.join(TEMPLATES, "face-detection-0206", "template.yaml"))
        coco = load_coco_files(AIRPORT_ANN, AIRPORT, task.classes)
        paths = [img["path"] for img in coco["images"]]
        keys = [img["id"] for img in coco["images"]]
        aps = {}
        for dev in dict.fromkeys((device, "cpu")):  # once in the CPU dry run
            model, size = task.load_snapshot(snapshot)
            predictor = TorchPredictor(model.to(dev), size, batch_size=5)
            start = time.perf_counter()
            dets = detect_images(predictor, paths, keys, batch_size=5, progress=False)  # numpy out: synchronised
            if dev == device:
                ms = (time.perf_counter() - start) * 1000 / len(paths)
            aps[dev] = evaluate_detections(coco, dets, ["ap"])["ap"]
        note = f"AP {aps[device]:.2f} (CPU {aps['cpu']:.2f}), ms per image"
        error = None if abs(aps[device] - aps["cpu"]) <= 0.5 else f"{device} and CPU AP differ by more than 0.5"
        return (label, ms, None, note, error)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        return (label, None, None, "", one_line(exc))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--templates", default="all", help="comma-separated template names for the step rows "
                   "(default: all of model_templates/face-detection)")
    p.add_argument("--iters", type=int, default=10, help="timed training iterations per step row")
    p.add_argument("--skip-train", action="store_true", help="only the step rows (no train.py / eval rows)")
    p.add_argument("--cpu-dry-run", action="store_true", help="run every row on the CPU at 128x128 and batch 2 "
                   "(tests the script itself where no GPU is at hand; its figures say nothing about a GPU)")
    a = p.parse_args()
    reason = None if a.cpu_dry_run else no_cuda_reason()
    if reason:
        print(f"gpu_check: skipped, no CUDA: {reason}")
        return 0
    import torch

    device = "cpu" if a.cpu_dry_run else "cuda"

    names = template_names() if a.templates == "all" else [
        n if n.startswith("face-detection-") else f"face-detection-{n}" for n in a.templates.split(",")]
    start = time.perf_counter()
    rows = step_rows(names, a.iters, device, small=a.cpu_dry_run)
    if not a.skip_train:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
            rows += train_rows(tmp, env, cuda=not a.cpu_dry_run)
            rows.append(eval_row(os.path.join(tmp, "out-face-detection-0206", "latest.pth"), device))
    where = "CPU dry run" if a.cpu_dry_run else torch.cuda.get_device_name(0)
    print(f"GPU check: {where}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"{time.perf_counter() - start:.0f} s")
    print(f"| {'check':38s} | {'ms':>9s} | {'peak MiB':>8s} | {'status':6s} | note")
    print(f"|{'-' * 40}|{'-' * 11}|{'-' * 10}|{'-' * 8}|------")
    for label, ms, peak, note, error in rows:
        ms_s = f"{ms:9.1f}" if ms is not None else f"{'-':>9s}"
        peak_s = f"{peak:8.0f}" if peak is not None else f"{'-':>8s}"
        print(f"| {label:38s} | {ms_s} | {peak_s} | {'FAIL' if error else 'ok':6s} | {error or note}")
    failed = sum(1 for row in rows if row[4])
    print(f"gpu_check: {failed} of {len(rows)} checks failed" if failed else f"gpu_check: all {len(rows)} checks ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
