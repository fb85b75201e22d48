#!/usr/bin/env python3
"""Demo: detect faces on a web camera, a video, an image or a folder of images, and draw them.

With a display (and an OpenCV build with a GUI) the frames are shown in a window: q or Esc quits (an
image or a folder waits for a key per image). Without one (no DISPLAY, or opencv-python-headless) the
demo is headless: give --output to write the annotated frames to a video or a folder. Each frame shows
the boxes, their scores, and two FPS figures: the model's and end to end. A summary line follows.

  python visualize.py --load-weights export/model.bin --video 0
  python visualize.py --load-weights export/model.bin --video airport/val --output annotated/
  python visualize.py --load-weights snapshot.pth --video street.mp4 --output street_faces.mp4
"""

import argparse
import os

from ote_detection.apis.visualize import run_demo
from ote_detection.utils.cli import (MAX_JOBS, MAX_THREADS, ArgumentParser, add_tiling_args, bounded_int,
                                     input_size_or_width, non_negative_int, tiling_options)
from ote_detection.utils.errors import run_cli

HERE = os.path.dirname(os.path.abspath(__file__))


def score(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be between 0 and 1")
    return value


def main(argv=None):
    p = ArgumentParser(description=__doc__)
    p.add_argument("--load-weights", required=True,
                   help="exported IR (model.xml or model.bin), an Open Model Zoo face-detection IR, or a snapshot .pth")
    p.add_argument("--video", required=True,
                   help="web camera index (0), video file or stream URL, an image, or a folder of images")
    p.add_argument("--output", help="write the annotated frames: a video (.mp4, .avi, .mkv, .mov), a folder of "
                   "images, or one image file for an image input (needed when no window can be opened)")
    show = p.add_mutually_exclusive_group()
    show.add_argument("--show", dest="show", action="store_true", default=None,
                      help="open a window (default: when there is a display and OpenCV has a GUI)")
    show.add_argument("--no-show", dest="show", action="store_false",
                      help="no window: only --output (or, without it, just measure the speed)")
    p.add_argument("--score-thr", type=score, default=0.5, help="draw boxes scoring at least this (default 0.5)")
    p.add_argument("--precision", default="default", choices=["default", "f32", "bf16", "f16"],
                   help="OpenVINO inference precision for an IR (default: the CPU plugin's own: it runs FP32 IRs in "
                   "bf16 on CPUs with AMX or AVX512-BF16, f32 otherwise; the demo is about speed; eval.py uses f32)")
    p.add_argument("--threads", type=bounded_int(1, MAX_THREADS),
                   help=f"CPU threads for inference, 1..{MAX_THREADS} (default: all)")
    p.add_argument("--jobs", type=bounded_int(1, MAX_JOBS), default=2,
                   help=f"OpenVINO inference requests in flight, 1..{MAX_JOBS} (asynchronous inference; each holds a "
                        "frame and its buffers; default 2)")
    p.add_argument("--sync", action="store_true",
                   help="plain synchronous loop (read, infer, draw, one frame at a time), for comparison")
    p.add_argument("--keep-ratio", action="store_true", default=None,
                   help="letterbox each frame into the network input (keep its aspect ratio) instead of stretching "
                        "(default: stretch; an IR exported with --input-size Wx letterboxes)")
    p.add_argument("--input-size", type=input_size_or_width,
                   help="inference size of a snapshot: W, WxH, or Wx (width W, the height from the first frame's "
                        "aspect rounded up to the model's stride, frames letterboxed); an IR has its own, except one "
                        "with a dynamic input (e.g. [1,3,?,?]), which is reshaped to this size (default there: the "
                        "template's) (default: the snapshot's)")
    p.add_argument("--max-frames", type=non_negative_int, default=0,
                   help="stop after this many frames (default 0: all, or until q / Esc / Ctrl-C)")
    p.add_argument("--no-fps", dest="overlay", action="store_false", help="do not draw the FPS lines on the frames")
    add_tiling_args(p)
    a = p.parse_args(argv)
    run_demo(os.path.join(HERE, "template.yaml"), a.load_weights, a.video, output=a.output, show=a.show,
             score_thr=a.score_thr, precision=a.precision, threads=a.threads, jobs=a.jobs, sync=a.sync,
             keep_ratio=a.keep_ratio, input_size=a.input_size, max_frames=a.max_frames or None, overlay=a.overlay,
             tile=tiling_options(a))


if __name__ == "__main__":
    run_cli(main)
