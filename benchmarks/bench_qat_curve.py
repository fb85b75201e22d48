#!/usr/bin/env python3
"""QAT on a tiny training set: COCO AP against the number of QAT iterations, for several settings.

Starting point: the Open Model Zoo face-detection-0200 FP16 IR's weights imported into the template's
model (BatchNorms folded; their statistics calibrated on the airport frames without changing the eval-mode
function, as bench_compression.py does). Every variant quantizes a copy with NNCF (range
initialisation on the training images), optionally adapts the BatchNorm statistics, then fine-tunes it on
--train (default wider_train10, training augmentation, SGD momentum 0.9, wd 5e-4, fixed lr) and measures the
AP of the fake-quantized torch model (NNCF's simulation; the INT8 IR differs from it by a fraction of an AP
point) on airport and wider_val5 after 0, 1, 2, 5, 10, 20 iterations.

Variants (name: range-init images, BN adaptation, BatchNorm during fine-tuning):
  ote:        augmented training batches, BN adaptation on augmented batches (30), BN in train mode
              (the template's settings before issue 19)
  plain:      un-augmented images (resize only), no BN adaptation, BN frozen (eval mode)  (ours now)
  plain-bntrain: un-augmented images, no BN adaptation, BN in train mode
  plain-mixed: as plain with NNCF's "mixed" preset (asymmetric activations)
  fp32:       no quantization, BN frozen: what the same fine-tuning does to the float model

    python benchmarks/bench_qat_curve.py [--variants ote,plain] [--iters 0,1,2,5,10,20] [--batch-size 8]
"""

import argparse
import copy
import json
import os
import time

import torch

os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "0")

from common import DATA, ROOT, load_experiment  # noqa: E402

from ote_detection.compression.quantization import (collect_batches, collect_images, freeze_batchnorm,  # noqa: E402
                                                    plain_images, quantize_model)
from ote_detection.engine.optim import build_optimizer  # noqa: E402
from ote_detection.engine.trainer import build_train_loader  # noqa: E402

VARIANTS = {
    "ote": dict(init="augmented", bn_adapt=30, freeze_bn=False, preset=None),
    "plain": dict(init="plain", bn_adapt=0, freeze_bn=True, preset=None),
    "plain-bntrain": dict(init="plain", bn_adapt=0, freeze_bn=False, preset=None),
    "plain-mixed": dict(init="plain", bn_adapt=0, freeze_bn=True, preset="mixed"),
    "fp32": dict(init=None, bn_adapt=0, freeze_bn=True, preset=None),
}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="face-detection-0200",
                   help="template name (its Open Model Zoo FP16 IR is imported)")
    p.add_argument("--variants", default="ote,plain,plain-bntrain",
                   help=f"comma-separated variant names (of {', '.join(VARIANTS)}; see above)")
    p.add_argument("--iters", default="0,1,2,5,10,20", help="iteration counts at which AP is measured")
    p.add_argument("--batch-size", type=int, default=8, help="fine-tuning batch size")
    p.add_argument("--lr", type=float, default=0.00025, help="fixed SGD learning rate of the fine-tuning")
    p.add_argument("--train", default="wider_train10", choices=sorted(DATA), help="range-init / fine-tuning set")
    p.add_argument("--work", default=os.path.join(ROOT, "outputs", "bench_qat_curve"),
                   help="folder of the imported snapshot (reused) and results<tag>.json")
    p.add_argument("--tag", default="", help="suffix of results.json (several runs in one --work)")
    a = p.parse_args()
    torch.manual_seed(0)
    task, dataset, paths, det, ap = load_experiment(a.model, a.work, a.train)
    loader = build_train_loader(dataset, a.batch_size, 0, 0)

    results = {"fp32": ap(det), "settings": vars(a)}
    print("fp32", results["fp32"], flush=True)
    checkpoints = sorted(int(x) for x in a.iters.split(","))
    for name in a.variants.split(","):
        v = VARIANTS[name]
        t0 = time.time()
        model = copy.deepcopy(det)
        if v["init"] is None:
            init = bn = None
        elif v["init"] == "plain":
            init = plain_images(paths, task.input_size, task.keep_ratio, task.img_norm_cfg, 10)
            bn = [torch.cat(init)] if v["bn_adapt"] else []
        else:
            init = collect_images(loader, 10)
            bn = collect_batches(loader, v["bn_adapt"]) if v["bn_adapt"] else []
        q = model if init is None else quantize_model(model, init, bn, preset=v["preset"])
        opt = build_optimizer(q, dict(task.cfg.optimizer, lr=a.lr))
        curve, it = {}, 0
        batches = iter(())
        for target in checkpoints:
            while it < target:
                q.train()
                if v["freeze_bn"]:
                    freeze_batchnorm(q)
                try:
                    imgs, boxes, labels = next(batches)
                except StopIteration:
                    batches = iter(loader)
                    imgs, boxes, labels = next(batches)
                losses = q(imgs, boxes, labels)
                loss = sum(x.float() for x in losses.values())
                opt.zero_grad()
                loss.backward()
                opt.step()
                it += 1
            curve[target] = ap(q)
            print(f"{name} iter {target}: {curve[target]} ({time.time() - t0:.0f} s)", flush=True)
        results[name] = curve
        with open(os.path.join(a.work, f"results{a.tag}.json"), "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
