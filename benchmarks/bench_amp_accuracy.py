#!/usr/bin/env python3
"""Does --amp keep training numerics? The same fine-tuning schedule in fp32 and with --amp, side by side.

Fine-tunes ``--load-weights`` (a snapshot of the template, e.g. Open Model Zoo weights imported with
tools/import_openvino_weights.py --calibrate-bn) on the airport crops with train.py's ``train()`` for
``--epochs`` epochs, once in fp32 and once with ``amp=True`` (what train.py --amp runs on this machine),
same seed, and prints the per-epoch mean loss and COCO AP (validation on ``--val`` annotations, default
the training images) of both, and the AP difference after the last epoch.

    python benchmarks/bench_amp_accuracy.py --load-weights omz0200.pth [--template 0200] [--epochs 20]
                                            [--lr 0.01] [--batch 5] [--threads 1]
"""

import argparse
import logging
import os
import tempfile

import torch
from common import AIRPORT, AIRPORT_ANN, template

from ote_detection.apis.train import train


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--load-weights", required=True, help="snapshot to fine-tune from (.pth)")
    p.add_argument("--template", default="0200", help="template name (face-detection-0205, or 0205)")
    p.add_argument("--epochs", type=int, default=20, help="epochs of each run")
    p.add_argument("--lr", type=float, default=0.01, help="base learning rate")
    p.add_argument("--batch", type=int, default=5, help="batch size")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--val", default=AIRPORT_ANN,
                   help="validation annotations (COCO, images under data/airport)")
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    torch.set_num_threads(a.threads)
    name = a.template if a.template.startswith("face-detection-") else f"face-detection-{a.template}"
    histories = {}
    with tempfile.TemporaryDirectory(prefix="amp-accuracy-") as tmp:
        for amp in (False, True):
            histories[amp] = train(template(name), AIRPORT_ANN, AIRPORT,
                                   os.path.join(tmp, f"amp{int(amp)}"), val_ann_files=a.val, val_data_roots=AIRPORT,
                                   load_weights=a.load_weights, epochs=a.epochs, batch_size=a.batch,
                                   base_learning_rate=a.lr, gpu_num=0, workers=0, amp=amp, progress=False)
    print(f"{name}, {a.epochs} epochs, batch {a.batch}, lr {a.lr}, {a.threads} thread(s), "
          f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"{'epoch':>5s} {'loss fp32':>10s} {'loss amp':>10s} {'AP fp32':>8s} {'AP amp':>8s} "
          f"{'s/epoch fp32':>12s} {'s/epoch amp':>11s}")
    for f, m in zip(histories[False], histories[True]):
        print(f"{f['epoch']:5d} {f['loss']:10.4f} {m['loss']:10.4f} {f.get('ap', float('nan')):8.2f} "
              f"{m.get('ap', float('nan')):8.2f} {f['epoch_time_s']:12.1f} {m['epoch_time_s']:11.1f}")
    last_f, last_m = histories[False][-1], histories[True][-1]
    print(f"AP after {a.epochs} epochs: fp32 {last_f['ap']:.2f}, amp {last_m['ap']:.2f}, "
          f"difference {last_m['ap'] - last_f['ap']:+.2f} points")
    n = min(3, a.epochs)  # AP on a few images swings from one epoch to the next: also the mean of the last ones
    mean_f = sum(h["ap"] for h in histories[False][-n:]) / n
    mean_m = sum(h["ap"] for h in histories[True][-n:]) / n
    print(f"mean AP of the last {n} epochs: fp32 {mean_f:.2f}, amp {mean_m:.2f}, difference {mean_m - mean_f:+.2f}")


if __name__ == "__main__":
    main()
