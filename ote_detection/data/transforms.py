"""Data transforms of the mmdetection pipeline format, on numpy images (BGR, HxWx3) and boxes (x1, y1, x2, y2).

Each transform takes and returns a ``results`` dict: ``img``, ``gt_bboxes`` [N, 4] float32,
``gt_labels`` [N] int64, ``img_shape``, ``ori_shape``, ``scale_factor`` (x, y), ``filename``.
"""

import random

import cv2
import numpy as np
import torch
from torchvision.ops import box_iou

from ..registry import TRANSFORMS
from ..utils.errors import OteError
from .images import read_image  # noqa: F401 - the one image reader (data.images), used here and re-exported


def resize_image(img, size):
    """Resize to (width, height) exactly like training and export preprocessing (bilinear)."""
    width, height = size
    if img.shape[1] == width and img.shape[0] == height:
        return img
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)


@TRANSFORMS.register()
class LoadImageFromFile:
    def __init__(self, to_float32=False):
        self.to_float32 = to_float32

    def __call__(self, results):
        img = read_image(results["filename"])
        if self.to_float32:
            img = img.astype(np.float32)
        results.update(img=img, img_shape=img.shape[:2], ori_shape=img.shape[:2], scale_factor=(1.0, 1.0))
        return results


@TRANSFORMS.register()
class LoadAnnotations:
    """Boxes and labels are put into ``results`` by the dataset; this step is kept for config compatibility."""

    def __init__(self, with_bbox=True):
        self.with_bbox = with_bbox

    def __call__(self, results):
        return results


@TRANSFORMS.register()
class PhotoMetricDistortion:
    """Random brightness, contrast (before or after), saturation and hue, each with probability 1/2."""

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
    """IoU of one crop window with each box."""
    return box_iou(torch.as_tensor(patch[None], dtype=torch.float32), torch.as_tensor(boxes)).numpy()[0]


@TRANSFORMS.register()
class MinIoURandomCrop:
    """SSD's random crop: pick a minimum IoU (or no crop), then up to 50 tries for a patch of 0.5..2
    aspect ratio whose IoU with every box reaches it; keep the boxes whose centres fall inside."""

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


@TRANSFORMS.register()
class Resize:
    """Resize to ``img_scale`` (w, h) without keeping the aspect ratio (the only mode our templates use)."""

    def __init__(self, img_scale=None, keep_ratio=False):
        if keep_ratio:
            raise OteError("model.py: Resize(keep_ratio=True) is not supported; SSD templates resize to a fixed size")
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


@TRANSFORMS.register()
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


@TRANSFORMS.register()
class RandomFlip:
    def __init__(self, flip_ratio=0.5, direction="horizontal"):
        if direction != "horizontal":
            raise OteError(f"model.py: RandomFlip direction '{direction}' is not supported")
        self.flip_ratio = flip_ratio

    def __call__(self, results):
        if random.random() < self.flip_ratio:
            img = results["img"][:, ::-1]
            w = img.shape[1]
            boxes = results["gt_bboxes"].copy()
            if len(boxes):
                boxes[:, [0, 2]] = w - results["gt_bboxes"][:, [2, 0]]
            results.update(img=img, gt_bboxes=boxes)
        return results


@TRANSFORMS.register()
class DefaultFormatBundle:
    def __call__(self, results):
        img = np.ascontiguousarray(results["img"].transpose(2, 0, 1))
        results["img"] = torch.from_numpy(img)
        results["gt_bboxes"] = torch.from_numpy(np.asarray(results["gt_bboxes"], np.float32).reshape(-1, 4))
        results["gt_labels"] = torch.from_numpy(np.asarray(results["gt_labels"], np.int64))
        return results


@TRANSFORMS.register()
class ImageToTensor:
    def __init__(self, keys=("img",)):
        self.keys = keys

    def __call__(self, results):
        for key in self.keys:
            results[key] = torch.from_numpy(np.ascontiguousarray(results[key].transpose(2, 0, 1)))
        return results


@TRANSFORMS.register()
class Collect:
    def __init__(self, keys, meta_keys=None):
        self.keys = keys

    def __call__(self, results):
        return results


@TRANSFORMS.register()
class MultiScaleFlipAug:
    """Test-time wrapper: one scale, no flip (what the templates use); runs its inner transforms."""

    def __init__(self, transforms, img_scale, flip=False):
        if flip or (isinstance(img_scale, list) and len(img_scale) > 1):
            raise OteError("model.py: MultiScaleFlipAug supports one scale without flip")
        self.img_scale = tuple(img_scale[0] if isinstance(img_scale, list) else img_scale)
        self.transforms = Compose(transforms)

    def __call__(self, results):
        results["scale"] = self.img_scale
        return self.transforms(results)


class Compose:
    def __init__(self, transforms):
        self.transforms = [TRANSFORMS.build(t) if isinstance(t, dict) else t for t in transforms]

    def __call__(self, results):
        for t in self.transforms:
            results = t(results)
        return results


def with_input_size(pipeline, size):
    """A copy of ``pipeline`` whose Resize / MultiScaleFlipAug steps resize to ``size`` (w, h): the
    config's one top-level ``input_size`` (or ``--input-size``) is the only place the size is set."""
    out = []
    for t in pipeline:
        t = dict(t)
        if t["type"] in ("Resize", "MultiScaleFlipAug"):
            t["img_scale"] = tuple(size)
        if t["type"] == "MultiScaleFlipAug":
            t["transforms"] = with_input_size(t["transforms"], size)
        out.append(t)
    return out
