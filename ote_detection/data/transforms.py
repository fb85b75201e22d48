"""Data transforms of the mmdetection pipeline format, on numpy images (BGR, HxWx3) and boxes (x1, y1, x2, y2).

Each transform takes and returns a ``results`` dict: ``img``, ``gt_bboxes`` [N, 4] float32,
``gt_labels`` [N] int64, ``img_shape``, ``ori_shape``, ``scale_factor`` (x, y), ``filename``, and
``img_info`` ({'width', 'height'} of the image as read, where the dataset knows it).

**Deferred decoding.** Where the image size is known, ``LoadImageFromFile`` does not decode: ``img`` is a
``DeferredImage``, and the steps that allow it (marked ``defers_decoding``) only record what they do:
``MinIoURandomCrop`` its crop (it needs the size and the boxes, not the pixels), ``Resize`` its size,
``PhotoMetricDistortion`` its random parameters (drawn at its place in the pipeline: the random stream is
the one of the eager pipeline). ``Compose`` decodes before the first step that needs pixels: the file is
decoded (uint8), cropped and resized, then the photometric steps run in float32 on the resized image
(OTE's recipe runs them on the full frame first). Crop and brightness/contrast commute with the resize
exactly; saturation and hue (through HSV, not linear) differ only where the bilinear resize mixes pixels
of different colours; tests/data/test_data_pipeline.py measures the difference and
benchmarks/bench_data_pipeline.py the speed (docs/data_pipeline.md). Any other transform gets the
decoded array, as before.
"""

import random

import cv2
import numpy as np
import torch

from ..registry import TRANSFORMS
from ..utils.errors import OteError
from .images import read_image  # noqa: F401 - the one image reader (data.images), used here and re-exported


def resize_image(img, size):
    """Resize to (width, height) exactly like training and export preprocessing (bilinear)."""
    width, height = size
    if img.shape[1] == width and img.shape[0] == height:
        return img
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)


class DeferredImage:
    """An image file to decode later, with the steps to apply then: a crop (``box``, x1, y1, x2, y2 in the
    pixels as read), a resize to ``size`` (w, h), both on the uint8 pixels, then ``pixel_steps`` (functions
    of a float32 [H, W, 3] array) in order. ``shape``: (H, W, 3) of the image these steps give."""

    def __init__(self, path, width, height, to_float32=False):
        self.path, self.width, self.height, self.to_float32 = path, int(width), int(height), to_float32
        self.box = (0, 0, self.width, self.height)
        self.size = None
        self.pixel_steps = []

    @property
    def shape(self):
        if self.size is not None:
            return self.size[1], self.size[0], 3
        x1, y1, x2, y2 = self.box
        return y2 - y1, x2 - x1, 3

    def decode(self):
        """The image as the eager pipeline would have it (BGR, uint8, or float32 after pixel steps or with
        ``to_float32``); OteError naming the file if it cannot be decoded or is not of the size given."""
        img = read_image(self.path)
        if img.shape[:2] != (self.height, self.width):
            raise OteError(f"{self.path}: decodes to {img.shape[1]}x{img.shape[0]}, but its annotation file gives "
                           f"{self.width}x{self.height} (the file changed since it was checked?)")
        x1, y1, x2, y2 = self.box
        img = img[y1:y2, x1:x2]
        if self.size is not None:
            img = resize_image(img, self.size)
        if self.to_float32 or self.pixel_steps:
            img = img.astype(np.float32)
        for step in self.pixel_steps:
            img = step(img)
        return img


def decoded(img):
    """``img`` as an array (a ``DeferredImage`` is decoded)."""
    return img.decode() if isinstance(img, DeferredImage) else img


def crop_image(img, patch):
    """``img`` cropped to ``patch`` (x1, y1, x2, y2, integers inside the image); deferred where it can be."""
    x1, y1, x2, y2 = patch
    if isinstance(img, DeferredImage) and img.size is None:  # pixel steps commute with a crop
        bx, by = img.box[:2]
        img.box = (bx + x1, by + y1, bx + x2, by + y2)
        return img
    return decoded(img)[y1:y2, x1:x2]


def resize_step(img, size):
    """``resize_image`` of ``img``; deferred where it can be."""
    if isinstance(img, DeferredImage) and img.size is None:
        img.size = tuple(size)
        return img
    return resize_image(decoded(img), size)


@TRANSFORMS.register()
class LoadImageFromFile:
    """Reads ``filename``; where ``img_info`` gives the size as read, the decoding is deferred (see the
    module docstring)."""

    defers_decoding = True

    def __init__(self, to_float32=False):
        self.to_float32 = to_float32

    def __call__(self, results):
        info = results.get("img_info") or {}
        if "width" in info and "height" in info:
            img = DeferredImage(results["filename"], info["width"], info["height"], self.to_float32)
        else:
            img = read_image(results["filename"])
            if self.to_float32:
                img = img.astype(np.float32)
        results.update(img=img, img_shape=img.shape[:2], ori_shape=img.shape[:2], scale_factor=(1.0, 1.0))
        return results


@TRANSFORMS.register()
class LoadAnnotations:
    """Boxes and labels are put into ``results`` by the dataset; this step is kept for config compatibility."""

    defers_decoding = True

    def __init__(self, with_bbox=True):
        self.with_bbox = with_bbox

    def __call__(self, results):
        return results


@TRANSFORMS.register()
class PhotoMetricDistortion:
    """Random brightness, contrast (before or after), saturation and hue, each with probability 1/2, in
    float32 without clipping (mmdetection's). The parameters are drawn where the step stands; on a
    ``DeferredImage`` the distortion runs after its crop and resize."""

    defers_decoding = True

    def __init__(self, brightness_delta=32, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5), hue_delta=18):
        self.brightness_delta = brightness_delta
        self.contrast_lower, self.contrast_upper = contrast_range
        self.saturation_lower, self.saturation_upper = saturation_range
        self.hue_delta = hue_delta

    def draw(self):
        """(brightness delta, contrast factor, contrast first, saturation factor, hue shift); None: not applied."""
        def maybe(low, high):
            return random.uniform(low, high) if random.randint(0, 1) else None
        brightness = maybe(-self.brightness_delta, self.brightness_delta)
        contrast_first = random.randint(0, 1)
        contrast = maybe(self.contrast_lower, self.contrast_upper) if contrast_first else None
        saturation = maybe(self.saturation_lower, self.saturation_upper)
        hue = maybe(-self.hue_delta, self.hue_delta)
        if not contrast_first:
            contrast = maybe(self.contrast_lower, self.contrast_upper)
        return brightness, contrast, contrast_first, saturation, hue

    @staticmethod
    def apply(img, params, copy=True):
        """``img`` (BGR, any dtype) distorted by ``draw()``'s ``params``: float32 (``copy=False``: a float32
        ``img`` is changed in place)."""
        brightness, contrast, contrast_first, saturation, hue = params
        img = img.astype(np.float32, copy=copy)
        if brightness is not None:
            img += brightness
        if contrast_first and contrast is not None:
            img *= contrast
        # always through HSV: OpenCV's conversion is no identity where all three values are negative (a dark
        # pixel after a negative brightness delta: S = (V - min) / |V|), and OTE's recipe has that too
        img = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)  # float input: H in [0, 360)
        if saturation is not None:
            img[..., 1] *= saturation
        if hue is not None:  # H stays in [0, 360): what np.mod(H + hue, 360) gives, bit for bit, 5x faster
            h = img[..., 0]
            h += hue
            if hue >= 0:
                np.subtract(h, 360.0, out=h, where=h >= 360.0)
            else:
                np.add(h, 360.0, out=h, where=h < 0.0)
        img = cv2.cvtColor(img, cv2.COLOR_HSV2BGR)
        if not contrast_first and contrast is not None:
            img *= contrast
        return img

    def __call__(self, results):
        params = self.draw()
        img = results["img"]
        if isinstance(img, DeferredImage):
            img.pixel_steps.append(lambda pixels: self.apply(pixels, params, copy=False))
        else:
            results["img"] = self.apply(img, params)
        return results


def box_iou(boxes1, boxes2):
    """IoU [N, M] of boxes [N, 4] and [M, 4] (x1, y1, x2, y2), in float32 as ``torchvision.ops.box_iou``."""
    boxes1, boxes2 = np.asarray(boxes1, np.float32), np.asarray(boxes2, np.float32)
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    lt = np.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = np.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1[:, None] + area2[None, :] - inter)


@TRANSFORMS.register()
class MinIoURandomCrop:
    """SSD's random crop: pick a minimum IoU (or no crop), then up to 50 tries for a patch of 0.5..2
    aspect ratio whose IoU with every box reaches it; keep the boxes whose centres fall inside.

    The 50 tries are drawn, then tested together; the random stream is then set to where the first
    patch that passes was drawn (the numbers, patches and boxes of trying one at a time)."""

    defers_decoding = True
    TRIES = 50

    def __init__(self, min_ious=(0.1, 0.3, 0.5, 0.7, 0.9), min_crop_size=0.3):
        self.sample_mode = (1, *min_ious, 0)
        self.min_crop_size = min_crop_size

    def _patch(self, w, h, boxes, mode):
        """The first of the tries whose patch passes (random stream left after it), or None (all drawn).

        IoU(patch, box) <= box area / patch area and <= patch area / box area, so the least IoU of a patch
        with the boxes is at most min(smallest / patch area, patch / largest box area), and at most
        sqrt(smallest / largest box area) for any patch: patches (or modes) beyond these bounds fail
        without their IoU (margin 1e-4: the float32 IoU's rounding)."""
        bounded = len(boxes) and mode > 0
        if bounded:
            areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            smallest, largest = float(areas.min()), float(areas.max())
            bounded = smallest > 0
            if bounded and np.sqrt(smallest / largest) < mode * (1 - 1e-4):
                self._draw_tries(w, h)  # no try can pass; their numbers are drawn all the same
                return None
        state = random.getstate()
        patches, drawn = self._draw_tries(w, h)
        if not patches:
            return None
        first = 0
        if len(boxes):
            p = np.array(patches, np.float32)
            keep = np.arange(len(p))
            if bounded:
                area = (p[:, 2] - p[:, 0]) * (p[:, 3] - p[:, 1])
                keep = keep[np.minimum(smallest / area, area / largest) >= mode * (1 - 1e-4)]
            if mode > 0 and len(keep):  # (with mode 0 every patch passes: IoU >= 0)
                keep = keep[~(box_iou(p[keep], boxes).min(axis=1) < mode)]  # as `iou < mode: next try`
            centers = (boxes[:, :2] + boxes[:, 2:]) / 2
            q = p[keep]
            inside = ((centers[None, :, 0] > q[:, None, 0]) & (centers[None, :, 1] > q[:, None, 1])
                      & (centers[None, :, 0] < q[:, None, 2]) & (centers[None, :, 1] < q[:, None, 3]))
            passed = keep[inside.any(axis=1)]
            if not len(passed):
                return None
            first = int(passed[0])
        random.setstate(state)
        for _ in range(drawn[first]):
            random.random()  # random.uniform draws one random() each
        return patches[first]

    def _draw_tries(self, w, h):
        """The patches of the tries that have one (aspect ratio and size allow it), and the count of random
        numbers drawn up to and including each."""
        patches, drawn, n = [], [], 0
        rand, min_w, min_h = random.random, self.min_crop_size * w, self.min_crop_size * h
        for _ in range(self.TRIES):  # random.uniform(a, b) is a + (b - a) * random.random(), inlined
            new_w = min_w + (w - min_w) * rand()
            new_h = min_h + (h - min_h) * rand()
            n += 2
            if new_h / new_w < 0.5 or new_h / new_w > 2:
                continue
            left = (w - new_w) * rand()
            top = (h - new_h) * rand()
            n += 2
            patch = (int(left), int(top), int(left + new_w), int(top + new_h))
            if patch[2] != patch[0] and patch[3] != patch[1]:
                patches.append(patch)
                drawn.append(n)
        return patches, drawn

    def __call__(self, results):
        img, boxes, labels = results["img"], results["gt_bboxes"], results["gt_labels"]
        h, w = img.shape[:2]
        while True:
            mode = random.choice(self.sample_mode)
            if mode == 1:
                return results
            patch = self._patch(w, h, boxes, mode)
            if patch is None:
                continue
            if len(boxes):
                centers = (boxes[:, :2] + boxes[:, 2:]) / 2
                inside = ((centers[:, 0] > patch[0]) & (centers[:, 1] > patch[1])
                          & (centers[:, 0] < patch[2]) & (centers[:, 1] < patch[3]))
                boxes = boxes[inside].copy()
                labels = labels[inside]
                boxes[:, 2:] = np.minimum(boxes[:, 2:], patch[2:])
                boxes[:, :2] = np.maximum(boxes[:, :2], patch[:2])
                boxes -= np.tile(patch[:2], 2)
            img = crop_image(img, patch)
            results.update(img=img, gt_bboxes=boxes.astype(np.float32), gt_labels=labels, img_shape=img.shape[:2])
            return results


@TRANSFORMS.register()
class Resize:
    """Resize to ``img_scale`` (w, h) without keeping the aspect ratio (the only mode our templates use)."""

    defers_decoding = True

    def __init__(self, img_scale=None, keep_ratio=False):
        if keep_ratio:
            raise OteError("model.py: Resize(keep_ratio=True) is not supported; SSD templates resize to a fixed size")
        self.img_scale = img_scale

    def __call__(self, results):
        size = results.get("scale", self.img_scale)
        img = results["img"]
        h, w = img.shape[:2]
        img = resize_step(img, size)
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
        img = np.ascontiguousarray(results["img"], np.float32)  # (not changed in place below)
        if img.ndim == 3 and img.shape[2] == 3:
            # one pass of OpenCV over the pixels: x * (1 / std) - mean / std, channels swapped by the matrix
            # ((x - mean) / std to 1-2 float32 ulps; 6x faster than numpy broadcasting over the last axis)
            order = [2, 1, 0] if self.to_rgb else [0, 1, 2]
            m = np.zeros((3, 4), np.float32)
            m[np.arange(3), order] = 1.0 / self.std
            m[:, 3] = -self.mean / self.std
            img = cv2.transform(img, m)
        else:
            img = ((img[..., ::-1] if self.to_rgb else img) - self.mean) / self.std
        results["img"] = img
        return results


@TRANSFORMS.register()
class RandomFlip:
    def __init__(self, flip_ratio=0.5, direction="horizontal"):
        if direction != "horizontal":
            raise OteError(f"model.py: RandomFlip direction '{direction}' is not supported")
        self.flip_ratio = flip_ratio

    def __call__(self, results):
        if random.random() < self.flip_ratio:
            img = results["img"]
            img = cv2.flip(np.ascontiguousarray(img), 1) if img.ndim == 3 and img.shape[2] <= 4 else img[:, ::-1]
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
    """The transforms in order; a ``DeferredImage`` is decoded before the first transform that is not
    marked ``defers_decoding`` (and at the end). ``steps``: the transforms as given (config dicts)."""

    def __init__(self, transforms):
        self.steps = list(transforms)
        self.transforms = [TRANSFORMS.build(t) if isinstance(t, dict) else t for t in transforms]

    def __call__(self, results):
        for t in self.transforms:
            if not getattr(t, "defers_decoding", False) and isinstance(results.get("img"), DeferredImage):
                results["img"] = results["img"].decode()
            results = t(results)
        if isinstance(results.get("img"), DeferredImage):
            results["img"] = results["img"].decode()
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
