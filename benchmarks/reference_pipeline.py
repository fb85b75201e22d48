"""The training pipeline's first steps as they were before deferred decoding (ote-face up to 2026-12-06),
kept as the reference of tests/data/test_data_pipeline.py (same seeds: same boxes, close pixels) and as the
"before" of benchmarks/bench_data_pipeline.py. Not used by the package.

It decodes the whole frame to float32, runs PhotoMetricDistortion on it, crops (one IoU test per try,
torchvision's box_iou) and resizes in float32: OTE's (mmdetection's) order of steps.
"""

import random

import cv2
import numpy as np
import torch
from torchvision.ops import box_iou

from ote_detection.data.images import read_image
from ote_detection.data.transforms import TRANSFORMS, resize_image


class LoadImageFromFile:
    def __init__(self, to_float32=False):
        self.to_float32 = to_float32

    def __call__(self, results):
        img = read_image(results["filename"])
        if self.to_float32:
            img = img.astype(np.float32)
        results.update(img=img, img_shape=img.shape[:2], ori_shape=img.shape[:2], scale_factor=(1.0, 1.0))
        return results


class PhotoMetricDistortion:
    def __init__(self, brightness_delta=32, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5), hue_delta=18):
        self.brightness_delta = brightness_delta
        self.contrast_lower, self.contrast_upper = contrast_range
        self.saturation_lower, self.saturation_upper = saturation_range
        self.hue_delta = hue_delta

    def __call__(self, results):
        img = results["img"].astype(np.float32)
        if random.randint(0, 1):
            img += random.uniform(-self.brightness_delta, self.brightness_delta)
        contrast_first = random.randint(0, 1)
        if contrast_first and random.randint(0, 1):
            img *= random.uniform(self.contrast_lower, self.contrast_upper)
        img = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)  # float input: H in [0, 360)
        if random.randint(0, 1):
            img[..., 1] *= random.uniform(self.saturation_lower, self.saturation_upper)
        if random.randint(0, 1):
            img[..., 0] += random.uniform(-self.hue_delta, self.hue_delta)
            img[..., 0] = np.mod(img[..., 0], 360.0)
        img = cv2.cvtColor(img, cv2.COLOR_HSV2BGR)
        if not contrast_first and random.randint(0, 1):
            img *= random.uniform(self.contrast_lower, self.contrast_upper)
        results["img"] = img
        return results


def _iou_patch(patch, boxes):
    return box_iou(torch.as_tensor(patch[None], dtype=torch.float32), torch.as_tensor(boxes)).numpy()[0]


class MinIoURandomCrop:
    def __init__(self, min_ious=(0.1, 0.3, 0.5, 0.7, 0.9), min_crop_size=0.3):
        self.sample_mode = (1, *min_ious, 0)
        self.min_crop_size = min_crop_size

    def __call__(self, results):
        img, boxes, labels = results["img"], results["gt_bboxes"], results["gt_labels"]
        h, w = img.shape[:2]
        while True:
            mode = random.choice(self.sample_mode)
            if mode == 1:
                return results
            for _ in range(50):
                new_w = random.uniform(self.min_crop_size * w, w)
                new_h = random.uniform(self.min_crop_size * h, h)
                if new_h / new_w < 0.5 or new_h / new_w > 2:
                    continue
                left = random.uniform(0, w - new_w)
                top = random.uniform(0, h - new_h)
                patch = np.array([int(left), int(top), int(left + new_w), int(top + new_h)])
                if patch[2] == patch[0] or patch[3] == patch[1]:
                    continue
                if len(boxes):
                    if _iou_patch(patch, boxes).min() < mode:
                        continue
                    centers = (boxes[:, :2] + boxes[:, 2:]) / 2
                    inside = ((centers[:, 0] > patch[0]) & (centers[:, 1] > patch[1])
                              & (centers[:, 0] < patch[2]) & (centers[:, 1] < patch[3]))
                    if not inside.any():
                        continue
                    boxes = boxes[inside].copy()
                    labels = labels[inside]
                    boxes[:, 2:] = np.minimum(boxes[:, 2:], patch[2:])
                    boxes[:, :2] = np.maximum(boxes[:, :2], patch[:2])
                    boxes -= np.tile(patch[:2], 2)
                img = img[patch[1]:patch[3], patch[0]:patch[2]]
                results.update(img=img, gt_bboxes=boxes.astype(np.float32), gt_labels=labels, img_shape=img.shape[:2])
                return results


class Resize:
    def __init__(self, img_scale=None, keep_ratio=False):
        self.img_scale = img_scale

    def __call__(self, results):
        size = results.get("scale", self.img_scale)
        img = results["img"]
        h, w = img.shape[:2]
        img = resize_image(img, size)
        sx, sy = size[0] / w, size[1] / h
        if "gt_bboxes" in results and len(results["gt_bboxes"]):
            results["gt_bboxes"] = (results["gt_bboxes"] * np.array([sx, sy, sx, sy], np.float32)).astype(np.float32)
        ox, oy = results.get("scale_factor", (1.0, 1.0))
        results.update(img=img, img_shape=img.shape[:2], scale_factor=(ox * sx, oy * sy))
        return results


class Normalize:
    def __init__(self, mean, std, to_rgb=True):
        self.mean = np.array(mean, np.float32)
        self.std = np.array(std, np.float32)
        self.to_rgb = to_rgb

    def __call__(self, results):
        img = results["img"].astype(np.float32)
        if self.to_rgb:
            img = img[..., ::-1]
        results["img"] = (img - self.mean) / self.std
        return results


_OLD = {c.__name__: c for c in (LoadImageFromFile, PhotoMetricDistortion, MinIoURandomCrop, Resize, Normalize)}


class ReferencePipeline:
    """The pipeline of config dicts ``steps`` (as ``data.transforms.Compose`` takes them) with the steps
    above in place of the package's (the others are the package's: unchanged)."""

    def __init__(self, steps):
        self.transforms = []
        for step in steps:
            args = {k: v for k, v in step.items() if k != "type"}
            cls = _OLD.get(step["type"])
            self.transforms.append(cls(**args) if cls is not None else TRANSFORMS.build(dict(step)))

    def __call__(self, results):
        results = {k: v for k, v in results.items() if k != "img_info"}  # no size known: decoded at once
        for t in self.transforms:
            results = t(results)
        return results
