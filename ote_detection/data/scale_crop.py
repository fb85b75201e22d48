"""The deployment geometry in the training pipeline: letterboxing, and the deployment-scale crop.

* ``letterbox(frame, input_size, keep_ratio)``: the one letterbox of ote-face. The frame is scaled by one
  factor, ``min(W / w, H / h)``, to fit into the input (W, H) and zero-padded at the right and bottom;
  inference (``inference.predictor``: eval.py, the demo, INT8 calibration) and training (``Letterbox``) call
  it. Model API's ``fit_to_window`` (the IR's ``model_info`` of an ``export.py --input-size Wx``) pads the
  same way.
* ``Letterbox``: the training step that stands for ``Resize`` when a run trains letterboxed
  (``train.py --input-size Wx``; ``with_geometry`` swaps it in).
* ``DeploymentScaleCrop``: crops and rescales a frame so that its faces come out at the sizes the deployed
  network sees them, times a random zoom in ``scale_range``. At deployment a frame of (w, h) is scaled by
  ``s = min(W / w, H / h)`` (letterboxed; stretched: ``W / w`` and ``H / h``); here a window of
  ``(W / (s r), H / (s r))`` frame pixels, at a random place, is mapped onto the (W, H) input with zoom ``r``
  drawn log-uniformly from ``scale_range`` (one affine warp: crop and resize at once; where the window
  leaves the frame the input is zero, as the letterbox pads). It replaces SSD's ``MinIoURandomCrop`` and
  ``Resize``: OTE's ``MinIoURandomCrop(min_crop_size=0.1)`` zooms faces up to 10x, which suits a 256x256
  input that shows faces large, not a deployment input that shows whole frames. The recipe is SCRFD's
  random square crop with a scale range (Guo et al., "Sample and Computation Redistribution for Efficient
  Face Detection", 2021, mmdet ``RandomSquareCrop``: crop sides of 0.3..2.0 of the image), with the range
  taken relative to the deployment scale and the window of the input's shape, not square.

Boxes follow the pixels exactly: the same affine map moves them; a box whose centre leaves the visible
frame is dropped (as ``MinIoURandomCrop`` does), the others are clipped to the visible frame.
"""

import math
import random

import cv2
import numpy as np

from ..registry import TRANSFORMS
from ..utils.errors import OteError
from .transforms import resize_image, with_input_size

__all__ = ["letterbox", "Letterbox", "DeploymentScaleCrop", "with_geometry", "deployment_scale"]


def letterbox(frame, input_size, keep_ratio):
    """``frame`` [h, w, C] resized into ``input_size`` (w, h): stretched, or scaled by one factor and
    zero-padded at the right and bottom (``keep_ratio``). The result has the frame's dtype. Returns
    (image [h, w, C], (sx, sy)): input pixels per frame pixel along x and y."""
    width, height = input_size
    h, w = frame.shape[:2]
    if not keep_ratio:
        return resize_image(frame, (width, height)), (width / w, height / h)
    scale = min(width / w, height / h)
    new_w, new_h = max(1, min(width, round(w * scale))), max(1, min(height, round(h * scale)))
    canvas = np.zeros((height, width) + frame.shape[2:], frame.dtype)
    canvas[:new_h, :new_w] = resize_image(frame, (new_w, new_h))
    return canvas, (new_w / w, new_h / h)


def deployment_scale(frame_wh, input_size, keep_ratio):
    """(sx, sy): input pixels per frame pixel when a frame of ``frame_wh`` (w, h) is shown to the network
    at ``input_size`` (w, h), letterboxed (one factor) or stretched."""
    (w, h), (width, height) = frame_wh, input_size
    if keep_ratio:
        s = min(width / w, height / h)
        return s, s
    return width / w, height / h


def _scale_boxes(results, sx, sy, dx=0.0, dy=0.0):
    """Boxes of ``results`` moved by (dx, dy) frame pixels, then scaled by (sx, sy)."""
    boxes = results.get("gt_bboxes")
    if boxes is None or not len(boxes):
        return boxes
    return ((boxes - np.array([dx, dy, dx, dy], np.float32)) * np.array([sx, sy, sx, sy], np.float32)
            ).astype(np.float32)


@TRANSFORMS.register()
class Letterbox:
    """Resize into ``img_scale`` (w, h) keeping the aspect ratio, zero-padded at the right and bottom:
    ``letterbox``, the inference's own. ``img_scale`` is set from the run's input size."""

    def __init__(self, img_scale=None):
        self.img_scale = img_scale

    def __call__(self, results):
        img, (sx, sy) = letterbox(results["img"], tuple(self.img_scale), keep_ratio=True)
        results["gt_bboxes"] = _scale_boxes(results, sx, sy)
        ox, oy = results.get("scale_factor", (1.0, 1.0))
        results.update(img=img, img_shape=img.shape[:2], scale_factor=(ox * sx, oy * sy))
        return results


@TRANSFORMS.register()
class DeploymentScaleCrop:
    """A window of the frame mapped onto the network input so that faces appear at their deployment
    size times a zoom ``r`` (see the module's docstring).

    Args:
        scale_range: (low, high) of the zoom ``r``, drawn log-uniformly; 1 is the deployment scale, 1.25
            shows faces 25 % larger (a window 0.8 of the frame's side). Both > 0, low <= high.
        img_scale: the network input (w, h); set from the run's input size (``with_geometry``).
        keep_ratio: whether deployment letterboxes (one scale factor) or stretches; set from the run.
        max_tries: windows drawn until one holds a face centre; after that, the whole frame at the
            deployment scale (what the deployed network sees).
    """

    def __init__(self, scale_range=(0.8, 1.25), img_scale=None, keep_ratio=True, max_tries=10):
        try:
            low, high = (float(v) for v in scale_range)
        except (TypeError, ValueError):
            raise OteError(f"model.py: DeploymentScaleCrop scale_range {scale_range!r} is not (low, high)") from None
        if not (0 < low <= high and math.isfinite(high)):
            raise OteError(f"model.py: DeploymentScaleCrop scale_range {scale_range!r}: need 0 < low <= high")
        self.scale_range = (low, high)
        self.img_scale = img_scale
        self.keep_ratio = bool(keep_ratio)
        self.max_tries = int(max_tries)

    def window(self, frame_wh, zoom, rng=random):
        """(x0, y0, ax, ay): the window's top-left corner in frame pixels (negative: the frame starts inside
        the input) and the input pixels per frame pixel, for ``zoom``; the place is drawn with ``rng``."""
        w, h = frame_wh
        width, height = self.img_scale
        sx, sy = deployment_scale(frame_wh, self.img_scale, self.keep_ratio)
        ax, ay = sx * zoom, sy * zoom
        win_w, win_h = width / ax, height / ay
        x0 = rng.uniform(0.0, w - win_w) if win_w <= w else rng.uniform(w - win_w, 0.0)
        y0 = rng.uniform(0.0, h - win_h) if win_h <= h else rng.uniform(h - win_h, 0.0)
        return x0, y0, ax, ay

    def __call__(self, results):
        if self.img_scale is None:
            raise OteError("model.py: DeploymentScaleCrop has no img_scale (the run's input size sets it)")
        img = results["img"]
        h, w = img.shape[:2]
        width, height = (int(v) for v in self.img_scale)
        boxes = results.get("gt_bboxes")
        has_boxes = boxes is not None and len(boxes) > 0
        low, high = self.scale_range
        for attempt in range(self.max_tries + 1):
            if attempt < self.max_tries:
                x0, y0, ax, ay = self.window((w, h), math.exp(random.uniform(math.log(low), math.log(high))))
            else:  # no window held a face: the deployment view of the whole frame
                x0, y0 = 0.0, 0.0
                ax, ay = deployment_scale((w, h), (width, height), self.keep_ratio)
            # the visible frame in input pixels
            vx1, vy1 = max(0.0, -x0 * ax), max(0.0, -y0 * ay)
            vx2, vy2 = min(float(width), (w - x0) * ax), min(float(height), (h - y0) * ay)
            if not has_boxes:
                keep = None
                break
            moved = _scale_boxes(results, ax, ay, x0, y0)
            cx, cy = (moved[:, 0] + moved[:, 2]) / 2, (moved[:, 1] + moved[:, 3]) / 2
            keep = (cx > vx1) & (cx < vx2) & (cy > vy1) & (cy < vy2)
            if keep.any() or attempt == self.max_tries:
                break
        # input index i shows frame position (i + 0.5) / a + x0 - 0.5 (pixel centres, as cv2.resize)
        matrix = np.array([[ax, 0.0, ax * (0.5 - x0) - 0.5], [0.0, ay, ay * (0.5 - y0) - 0.5]])
        out = cv2.warpAffine(img, matrix, (width, height), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        if keep is not None:
            moved = moved[keep]
            moved[:, [0, 2]] = np.clip(moved[:, [0, 2]], vx1, vx2)
            moved[:, [1, 3]] = np.clip(moved[:, [1, 3]], vy1, vy2)
            results["gt_bboxes"] = moved.astype(np.float32)
            results["gt_labels"] = results["gt_labels"][keep]
        ox, oy = results.get("scale_factor", (1.0, 1.0))
        results.update(img=out, img_shape=out.shape[:2], scale_factor=(ox * ax, oy * ay))
        return results


def with_geometry(pipeline, size, keep_ratio=False):
    """A copy of a training ``pipeline`` for the run's input geometry: ``size`` (w, h) into every
    sizing step (``transforms.with_input_size``, and ``DeploymentScaleCrop``), and with ``keep_ratio``
    (letterboxed deployment) ``Resize`` replaced by ``Letterbox``, so training shows frames as
    eval, export and the demo do."""
    out = []
    for step in with_input_size(pipeline, size):
        if step["type"] == "DeploymentScaleCrop":
            step = dict(step, img_scale=tuple(size), keep_ratio=bool(keep_ratio))
        elif keep_ratio and step["type"] == "Resize":
            step = {"type": "Letterbox", "img_scale": tuple(size)}
        out.append(step)
    return out
