"""Box coders: anchors + deltas <-> boxes."""

import math

import torch

from ..registry import BBOX_CODERS


@BBOX_CODERS.register()
class DeltaXYWHBBoxCoder:
    """(dx, dy, dw, dh) of a box relative to its anchor, normalised by means and stds (as mmdetection 2.x).

    Widths are ``x2 - x1`` (no +1). Decoding clamps dw, dh to ``|log(16 / 1000)|`` and, given
    ``max_shape`` (h, w), clips boxes to the image.
    """

    def __init__(self, target_means=(0.0, 0.0, 0.0, 0.0), target_stds=(1.0, 1.0, 1.0, 1.0), clip_border=True):
        self.means = tuple(float(m) for m in target_means)
        self.stds = tuple(float(s) for s in target_stds)
        self.clip_border = clip_border
        self.max_ratio = abs(math.log(16.0 / 1000))

    def encode(self, anchors, boxes):
        pw = anchors[..., 2] - anchors[..., 0]
        ph = anchors[..., 3] - anchors[..., 1]
        px = (anchors[..., 0] + anchors[..., 2]) * 0.5
        py = (anchors[..., 1] + anchors[..., 3]) * 0.5
        gw = boxes[..., 2] - boxes[..., 0]
        gh = boxes[..., 3] - boxes[..., 1]
        gx = (boxes[..., 0] + boxes[..., 2]) * 0.5
        gy = (boxes[..., 1] + boxes[..., 3]) * 0.5
        deltas = torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], dim=-1)
        means = deltas.new_tensor(self.means)
        stds = deltas.new_tensor(self.stds)
        return (deltas - means) / stds

    def decode(self, anchors, deltas, max_shape=None):
        means = deltas.new_tensor(self.means)
        stds = deltas.new_tensor(self.stds)
        d = deltas * stds + means
        dw = d[..., 2].clamp(-self.max_ratio, self.max_ratio)
        dh = d[..., 3].clamp(-self.max_ratio, self.max_ratio)
        pw = anchors[..., 2] - anchors[..., 0]
        ph = anchors[..., 3] - anchors[..., 1]
        px = (anchors[..., 0] + anchors[..., 2]) * 0.5
        py = (anchors[..., 1] + anchors[..., 3]) * 0.5
        cx = px + pw * d[..., 0]
        cy = py + ph * d[..., 1]
        w = pw * dw.exp()
        h = ph * dh.exp()
        boxes = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)
        if max_shape is not None and self.clip_border:
            height, width = max_shape
            boxes = torch.stack([boxes[..., 0].clamp(0, width), boxes[..., 1].clamp(0, height),
                                 boxes[..., 2].clamp(0, width), boxes[..., 3].clamp(0, height)], dim=-1)
        return boxes
