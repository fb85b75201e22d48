#!/usr/bin/env python3
"""Time the metrics on the full WIDER FACE val set (3226 images) with generated predictions.

Predictions: every face is detected with probability 0.8 (box jittered, score 0.3..1), plus
random false positives (score 0..0.7) so that an image has about --per-image detections.
Prints the time of WiderFaceGT loading, of WiderFaceGT.evaluate (three settings), and of
evaluate_detections for 'ap' and 'ap_64x64' on the same predictions with the COCO json.

    python benchmarks/bench_wider_metrics.py [--gt-dir ../shared/data/wider_val_gt]
"""

import argparse
import json
import os
import time

import numpy as np
from common import SHARED

from ote_detection.evaluation import WiderFaceGT, evaluate_detections

DEFAULT_GT = os.path.join(SHARED, "data", "wider_val_gt")


def generate(boxes_list, heights, per_image, seed):
    rng = np.random.default_rng(seed)
    out = []
    for boxes, height in zip(boxes_list, heights):
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        b = b[rng.random(len(b)) < 0.8]
        w = np.maximum(b[:, 2], 1)
        h = np.maximum(b[:, 3], 1)
        x1 = b[:, 0] + rng.normal(0, 0.08, len(b)) * w
        y1 = b[:, 1] + rng.normal(0, 0.08, len(b)) * h
        x2 = x1 + w * np.exp(rng.normal(0, 0.08, len(b)))
        y2 = y1 + h * np.exp(rng.normal(0, 0.08, len(b)))
        tp = np.stack([x1, y1, x2, y2, rng.uniform(0.3, 1.0, len(b))], axis=1)
        n_fp = max(per_image - len(tp), 20)
        s = rng.uniform(4, 150, n_fp)
        fx, fy = rng.uniform(0, 1000, n_fp), rng.uniform(0, max(height - 10, 10), n_fp)
        fp = np.stack([fx, fy, fx + s, fy + s * rng.uniform(0.8, 1.4, n_fp),
                       rng.uniform(0.0, 0.7, n_fp)], axis=1)
        out.append(np.concatenate([tp, fp]).astype(np.float32))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gt-dir", default=DEFAULT_GT, help="folder with wider_*_val.mat and "
                        "wider_face_val_all_annotations_coco.json")
    parser.add_argument("--per-image", type=int, default=150, help="detections per image")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated predictions")
    args = parser.parse_args()

    t0 = time.perf_counter()
    wider = WiderFaceGT(args.gt_dir)
    t_load = time.perf_counter() - t0
    print(f"WiderFaceGT load:            {t_load:7.2f} s  ({len(wider)} images)")

    t0 = time.perf_counter()
    with open(os.path.join(args.gt_dir, "wider_face_val_all_annotations_coco.json")) as f:
        coco = json.load(f)
    print(f"COCO json load:              {time.perf_counter() - t0:7.2f} s  "
          f"({len(coco['images'])} images, {len(coco['annotations'])} faces)")
    key_of_id = {im["id"]: wider.key_of(im["file_name"]) for im in coco["images"]}
    height_of_key = {key_of_id[im["id"]]: im["height"] for im in coco["images"]}

    preds = generate(wider.boxes, [height_of_key.get(k, 1024) for k in wider.image_keys],
                     args.per_image, args.seed)
    by_key = dict(zip(wider.image_keys, preds))
    n_det = sum(len(p) for p in preds)
    print(f"predictions:                 {n_det} detections ({n_det / len(preds):.0f} per image)")

    t0 = time.perf_counter()
    r = wider.evaluate(by_key)
    t_wider = time.perf_counter() - t0
    print(f"WiderFaceGT.evaluate:        {t_wider:7.2f} s  easy {r['widerface_e']:.3f}  "
          f"medium {r['widerface_m']:.3f}  hard {r['widerface_h']:.3f}")

    by_id = {img_id: by_key[key] for img_id, key in key_of_id.items()}
    for key in ("ap_64x64", "ap"):
        t0 = time.perf_counter()
        m = evaluate_detections(coco, by_id, [key])
        print(f"evaluate_detections {key + ':':9s} {time.perf_counter() - t0:7.2f} s  "
              f"{m[key]:.3f}")


if __name__ == "__main__":
    main()
