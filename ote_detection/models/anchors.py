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


@ANCHOR_GENERATORS.register()
class AnchorGenerator:
    """mmdetection 2.x's AnchorGenerator (RetinaNet / ATSS anchors).

    Level ``i`` has base size ``base_sizes[i]`` (default: its stride) and one anchor per (ratio, scale):
    width ``base * scale / sqrt(ratio)``, height ``base * scale * sqrt(ratio)`` (``ratio`` = h / w),
    scales either given or ``octave_base_scale * 2 ** (k / scales_per_octave)``. Anchors are centred at
    ``(x * stride + center_offset * base, y * stride + center_offset * base)``; mmdetection's (and OTE's)
    default ``center_offset=0`` puts the centre on the top-left corner of the cell. Order: scale-major
    within a cell (``scale_major=True``), cells row by row, anchors of a cell contiguous.
    """

    def __init__(self, strides, ratios, scales=None, base_sizes=None, scale_major=True, octave_base_scale=None,
                 scales_per_octave=None, centers=None, center_offset=0.0):
        if centers is not None:
            raise ValueError("AnchorGenerator: explicit centers are not supported (use center_offset)")
        if not 0.0 <= center_offset <= 1.0:
            raise ValueError(f"AnchorGenerator: center_offset must be in [0, 1], got {center_offset}")
        self.strides = [int(s) for s in strides]
        self.base_sizes = [float(s) for s in (base_sizes or self.strides)]
        if len(self.base_sizes) != len(self.strides):
            raise ValueError("AnchorGenerator: base_sizes and strides differ in number")
        if (scales is None) == (octave_base_scale is None or scales_per_octave is None):
            raise ValueError("AnchorGenerator: give either scales or octave_base_scale with scales_per_octave")
        if scales is None:
            scales = [octave_base_scale * 2 ** (i / scales_per_octave) for i in range(scales_per_octave)]
        self.scales = torch.tensor([float(s) for s in scales])
        self.ratios = torch.tensor([float(r) for r in ratios])
        self.scale_major = scale_major
        self.center_offset = float(center_offset)

    @property
    def num_levels(self):
        return len(self.strides)

    @property
    def num_base_anchors(self):
        return [len(self.scales) * len(self.ratios)] * self.num_levels

    def base_anchors(self, level):
        base = self.base_sizes[level]
        c = self.center_offset * base
        h_ratios = self.ratios.sqrt()
        w_ratios = 1.0 / h_ratios
        if self.scale_major:
            ws = (base * w_ratios[:, None] * self.scales[None, :]).reshape(-1)
            hs = (base * h_ratios[:, None] * self.scales[None, :]).reshape(-1)
        else:
            ws = (base * self.scales[:, None] * w_ratios[None, :]).reshape(-1)
            hs = (base * self.scales[:, None] * h_ratios[None, :]).reshape(-1)
        return torch.stack([c - 0.5 * ws, c - 0.5 * hs, c + 0.5 * ws, c + 0.5 * hs], dim=-1)

    def num_anchors_per_level(self, featmap_sizes):
        return [int(h) * int(w) * n for (h, w), n in zip(featmap_sizes, self.num_base_anchors)]

    def grid_anchors(self, featmap_sizes, device="cpu"):
        """All anchors of all levels, concatenated: a [sum(H*W*A), 4] tensor of (x1, y1, x2, y2)."""
        anchors = []
        for level, (feat_h, feat_w) in enumerate(featmap_sizes):
            stride = self.strides[level]
            base = self.base_anchors(level).to(device)
            shift_x = torch.arange(int(feat_w), device=device, dtype=torch.float32) * stride
            shift_y = torch.arange(int(feat_h), device=device, dtype=torch.float32) * stride
            yy, xx = torch.meshgrid(shift_y, shift_x, indexing="ij")
            shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)
            anchors.append((base[None] + shifts).reshape(-1, 4))
        return torch.cat(anchors)


def cached_grid_anchors(generator, cache, featmap_sizes, device):
    """``generator.grid_anchors(featmap_sizes, device)`` (one [N_l, 4] tensor a level, input pixels), kept in
    ``cache`` (a dict owned by the head) per feature-map sizes and device. Not cached while torch compiles,
    exports or traces (TorchScript runs the model twice and compares the graphs): the trace then computes them
    in the graph."""
    key = (tuple(tuple(int(v) for v in s) for s in featmap_sizes), str(device))
    if key in cache:
        return cache[key]
    anchors = generator.grid_anchors(featmap_sizes, device)
    if not (torch.compiler.is_compiling() or torch.jit.is_tracing()):
        cache[key] = anchors
    return anchors
