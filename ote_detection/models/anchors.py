"""Anchor (prior) generators."""

import torch

from ..registry import ANCHOR_GENERATORS


@ANCHOR_GENERATORS.register()
class SSDAnchorGeneratorClustered:
    """SSD anchors with per-level lists of widths and heights (clustered on the training set).

    Level ``i`` has one anchor of size ``widths[i][k] x heights[i][k]`` per ``k`` centred at
    ``(x * stride + stride / 2, y * stride + stride / 2)`` for every feature-map cell. The order is
    cell-major (row by row), anchors of one cell contiguous: the order of the head's
    ``permute(0, 2, 3, 1)`` output, and of OpenVINO's PriorBoxClustered.
    """

    def __init__(self, strides, widths, heights):
        if not (len(strides) == len(widths) == len(heights)):
            raise ValueError("strides, widths and heights must have one entry per level")
        self.strides = [int(s) for s in strides]
        self.widths = [list(map(float, w)) for w in widths]
        self.heights = [list(map(float, h)) for h in heights]
        for w, h in zip(self.widths, self.heights):
            if len(w) != len(h):
                raise ValueError("widths and heights of one level must have the same length")

    @property
    def num_levels(self):
        return len(self.strides)

    @property
    def num_base_anchors(self):
        return [len(w) for w in self.widths]

    def base_anchors(self, level):
        stride = self.strides[level]
        w = torch.tensor(self.widths[level])
        h = torch.tensor(self.heights[level])
        c = stride / 2.0
        return torch.stack([c - 0.5 * w, c - 0.5 * h, c + 0.5 * w, c + 0.5 * h], dim=-1)

    def grid_anchors(self, featmap_sizes, device="cpu"):
        """All anchors of all levels, concatenated: a [sum(H*W*A), 4] tensor of (x1, y1, x2, y2)."""
        anchors = []
        for level, (feat_h, feat_w) in enumerate(featmap_sizes):
            stride = self.strides[level]
            base = self.base_anchors(level).to(device)
            shift_x = torch.arange(feat_w, device=device, dtype=torch.float32) * stride
            shift_y = torch.arange(feat_h, device=device, dtype=torch.float32) * stride
            yy, xx = torch.meshgrid(shift_y, shift_x, indexing="ij")
            shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)
            anchors.append((base[None] + shifts).reshape(-1, 4))
        return torch.cat(anchors)
