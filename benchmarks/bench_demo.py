#!/usr/bin/env python3
"""The demo's asynchronous pipeline against the plain synchronous loop, end to end on a real video.

A video is made from the 10 airport frames (1920x1080, mp4v, repeated --repeat times) with OpenCV. The
Open Model Zoo face-detection-0200 IR (or --weights) then runs over it through ``demo.app.run_frames``,
the code behind visualize.py, writing an annotated mp4 as a user would:

* sync: read a frame, preprocess, infer (one synchronous request), draw, write; one frame at a time;
* async: a reader thread decodes and preprocesses ahead, --jobs OpenVINO requests in flight
  (AsyncInferQueue), drawing and writing in order in the main thread.

For 1 and 2 inference threads (OpenVINO INFERENCE_NUM_THREADS) and the given --precision (default: the
CPU's own, bf16 on CPUs with AMX, f32 otherwise; the precision used is printed), the two modes run
--rounds times interleaved (load from other processes hits both alike); the best round of each is kept.
Printed: end-to-end FPS of each, the ratio async / sync, and the model's FPS (busy time of the engine).

    python benchmarks/bench_demo.py [--precision default] [--repeat 3] [--rounds 3] [--jobs 2]
"""

import argparse
import os
import sys
import tempfile

from common import AIRPORT, SHARED, omz_ir, template


def airport_dir():
    for root in (AIRPORT, os.path.join(SHARED, "data", "airport")):
        if os.path.isdir(os.path.join(root, "val")):
            return os.path.join(root, "val")
    sys.exit("airport images not found (data/airport or ../shared/data/airport)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=omz_ir("face-detection-0200"), help="IR to run (default: OMZ 0200)")
    p.add_argument("--template", default=template("0200"),
                   help="template of the model (class names)")
    p.add_argument("--precision", default="default", choices=["default", "f32", "bf16", "f16"],
                   help="OpenVINO inference precision (default: the CPU's own)")
    p.add_argument("--repeat", type=int, default=3, help="the 10 frames are repeated this many times in the video")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per mode; the best is reported")
    p.add_argument("--jobs", type=int, default=2, help="requests in flight in the async mode")
    p.add_argument("--threads", default="1,2", help="comma-separated inference thread counts")
    a = p.parse_args(argv)

    import cv2
    import torch

    from ote_detection.demo.app import describe_predictor, run_frames
    from ote_detection.inference.factory import make_predictor
    from ote_detection.apis.task import Task
    from ote_detection.demo.frames import open_sink, open_source, write_video
    from ote_detection.data.transforms import read_image

    torch.set_num_threads(1)
    folder = airport_dir()
    frames = [read_image(os.path.join(folder, n)) for n in sorted(os.listdir(folder)) if n.endswith(".jpg")]
    task = Task(a.template)
    with tempfile.TemporaryDirectory() as tmp:
        video = write_video(os.path.join(tmp, "airport.mp4"), frames * a.repeat, fps=25)
        h, w = frames[0].shape[:2]
        print(f"video: {len(frames) * a.repeat} frames {w}x{h} mp4v (airport x{a.repeat}); output: annotated mp4; "
              f"OpenCV {cv2.__version__}, {os.cpu_count()} CPUs")
        rows = []
        for threads in [int(t) for t in a.threads.split(",")]:
            predictor = make_predictor(task, a.weights, precision=a.precision, threads=threads)
            print(f"threads {threads}: " + describe_predictor(predictor, os.path.basename(a.weights), True, a.jobs))
            best = {}
            for _ in range(a.rounds):
                for mode in ("sync", "async"):
                    source = open_source(video)
                    sink = open_sink(os.path.join(tmp, f"out_{mode}.mp4"), source)
                    stats = run_frames(predictor, source, sink, jobs=a.jobs, sync=mode == "sync", progress=False,
                                       class_names=task.classes)
                    if mode not in best or stats.e2e_fps > best[mode].e2e_fps:
                        best[mode] = stats
            rows.append((threads, best["sync"], best["async"]))
        print(f"\n{'threads':>7} | {'sync FPS':>8} | {'async FPS':>9} | {'ratio':>5} | model FPS sync / async")
        for threads, s, asy in rows:
            print(f"{threads:>7} | {s.e2e_fps:8.1f} | {asy.e2e_fps:9.1f} | {asy.e2e_fps / s.e2e_fps:5.2f} | "
                  f"{s.model_fps:.1f} / {asy.model_fps:.1f}")


if __name__ == "__main__":
    main()
