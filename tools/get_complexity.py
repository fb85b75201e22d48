#!/usr/bin/env python3
"""Print parameter count (Mp) and complexity (GFLOPs) of model templates at their input size, next to the
values the template reports (OTE counted 2 x multiply-adds with mmcv's ptflops port; we use ptflops)."""

import glob
import os

from ote_detection.apis.task import Task
from ote_detection.utils.complexity import model_complexity
from ote_detection.utils.cli import ArgumentParser
from ote_detection.utils.errors import run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    p = ArgumentParser(description=__doc__)
    p.add_argument("templates", nargs="*", help="template.yaml files (default: every face-detection template that "
                   "can be built)")
    a = p.parse_args(argv)
    paths = a.templates or sorted(glob.glob(os.path.join(ROOT, "model_templates", "face-detection", "*", "template.yaml")))
    print(f"{'template':<22}{'input':>10}{'GFLOPs':>10}{'ref':>9}{'Mp':>8}{'ref':>8}")
    for path in paths:
        task = Task(path)
        ref = {m["key"]: m.get("value") for m in task.template["metrics"]}
        try:
            detector = task.build_detector()
        except Exception as exc:  # a model type not implemented yet (FCOS, ATSS)
            print(f"{task.name:<22}{'':>10}  not built: {str(exc).splitlines()[0]}")
            continue
        gflops, mparams = model_complexity(detector, task.input_size)
        size = "x".join(map(str, task.input_size))
        print(f"{task.name:<22}{size:>10}{gflops:>10.2f}{ref.get('complexity', ''):>9}{mparams:>8.2f}{ref.get('size', ''):>8}")


if __name__ == "__main__":
    run_cli(main)
