"""Tiled inference: small faces in big frames with a detector of small input.

``TiledPredictor(predictor)`` is a ``FramePredictor`` itself: per frame it runs

* a full-frame pass (the inner predictor's own resize, optional: ``full_frame``), for faces larger
  than a tile, and
* overlapping tiles cut from the frame: each tile covers ``input_size / tile_scale`` frame pixels
  (``tile_scale=1``: native resolution, the tile is the network input without resizing; ``0.5``: a
  tile of twice the input size, scaled down by 2), laid out evenly so the first and the last tile
  touch the frame's borders and neighbours overlap by at least ``overlap`` of a tile.

All tiles of all frames of a call go to the inner predictor in one ``predict_frames`` call (it
batches them: one batch for PyTorch, one request after the other for an IR). Detections are shifted
into frame pixels and merged with torchvision's ``batched_nms`` (per class, ``nms_iou``). A tile
detection that touches a tile edge lying inside the frame (``drop_cut``) is dropped before the merge:
the face is cut by that edge, and with an overlap larger than the face the neighbouring tile (or the
full-frame pass for faces larger than the overlap) has it whole; the cut box would otherwise survive
NMS next to the whole one (their IoU is low) as a false positive.

Cost: ``1 + tiles`` network runs per frame (``tiles_per_frame(frame_hw)`` says how many).
"""

import math

import numpy as np
import torch
from torchvision.ops import batched_nms

from ..utils.errors import OteError
from .predictor import FramePredictor

__all__ = ["TiledPredictor", "tile_grid", "MIN_TILE_SIDE", "MAX_TILES_PER_FRAME"]

MIN_TILE_SIDE = 8  # frame pixels: a tile smaller than this holds no face (and 0 px tiles cannot be resized)
MAX_TILES_PER_FRAME = 1024  # network runs per frame: beyond this a --tile-scale / --tile-overlap is a typo


def _positions(length, tile, overlap):
    """Start offsets of tiles of ``tile`` px covering ``length`` px with at least ``overlap`` (0..1) overlap."""
    if tile >= length:
        return [0]
    step = tile * (1.0 - overlap)
    n = int(math.ceil((length - tile) / max(step, 1.0))) + 1
    return [int(round(i * (length - tile) / (n - 1))) for i in range(n)]


def tile_grid(frame_hw, tile_wh, overlap):
    """Tiles (x1, y1, x2, y2) in frame pixels covering a frame of ``frame_hw`` (h, w)."""
    h, w = (int(v) for v in frame_hw[:2])
    tw, th = min(int(round(tile_wh[0])), w), min(int(round(tile_wh[1])), h)
    return [(x, y, x + tw, y + th) for y in _positions(h, th, overlap) for x in _positions(w, tw, overlap)]


class TiledPredictor(FramePredictor):
    """A frame predictor running ``predictor`` on overlapping tiles (+ the full frame) and merging.

    Args:
        predictor: any ``FramePredictor`` (PyTorch or IR); its ``input_size`` sets the tile size.
        overlap: least overlap of neighbouring tiles, as a fraction of the tile (0 <= overlap < 1).
        full_frame: also run the inner predictor on the whole frame.
        tile_scale: network pixels per frame pixel inside a tile (1.0: native resolution).
        nms_iou: IoU threshold of the merge.
        max_per_img: detections kept per frame after the merge (best first).
        drop_cut: drop tile detections touching an inner tile edge (see the module docstring).
        cut_margin: distance to a tile edge (frame pixels) that counts as touching.
    """

    def __init__(self, predictor, overlap=0.25, full_frame=True, tile_scale=1.0, nms_iou=0.45, max_per_img=200,
                 drop_cut=True, cut_margin=2.0):
        if not 0.0 <= float(overlap) < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        if float(tile_scale) <= 0:
            raise ValueError(f"tile_scale must be positive, got {tile_scale}")
        self.inner = predictor
        w, h = predictor.input_size
        if min(w, h) / float(tile_scale) < MIN_TILE_SIDE:
            raise OteError(f"--tile-scale {float(tile_scale):g}: tiles of {w / float(tile_scale):.3g}x"
                           f"{h / float(tile_scale):.3g} frame pixels (the {w}x{h} input / {float(tile_scale):g}); "
                           f"a tile needs at least {MIN_TILE_SIDE} px a side, so --tile-scale at most "
                           f"{min(w, h) / MIN_TILE_SIDE:g} for this model")
        self.overlap = float(overlap)
        self.full_frame = bool(full_frame)
        self.tile_scale = float(tile_scale)
        self.nms_iou = float(nms_iou)
        self.max_per_img = int(max_per_img)
        self.drop_cut = bool(drop_cut)
        self.cut_margin = float(cut_margin)

    @property
    def input_size(self):
        return self.inner.input_size

    @property
    def keep_ratio(self):
        return self.inner.keep_ratio

    @property
    def batch_size(self):
        return self.inner.batch_size

    def tile_size(self):
        w, h = self.inner.input_size
        return w / self.tile_scale, h / self.tile_scale

    def tiles(self, frame_hw):
        """Tile rectangles for a frame; none when one tile would cover the whole frame. More than
        ``MAX_TILES_PER_FRAME`` is refused with one line, before any of them is cut."""
        h, w = (int(v) for v in frame_hw[:2])
        tw, th = (min(int(round(t)), side) for t, side in zip(self.tile_size(), (w, h)))
        count = len(_positions(w, tw, self.overlap)) * len(_positions(h, th, self.overlap))
        if count > MAX_TILES_PER_FRAME:
            raise OteError(f"tiling a {w}x{h} frame into tiles of {tw}x{th} px with overlap {self.overlap:g} takes "
                           f"{count} tiles, over the bound of {MAX_TILES_PER_FRAME} per frame: use a smaller "
                           "--tile-scale or --tile-overlap")
        grid = tile_grid(frame_hw, self.tile_size(), self.overlap)
        h, w = frame_hw[:2]
        if len(grid) == 1 and grid[0] == (0, 0, w, h) and self.full_frame:
            return []
        return grid

    def tiles_per_frame(self, frame_hw):
        return len(self.tiles(frame_hw))

    def runs_per_frame(self, frame_hw):
        """Network runs for one frame: tiles + the full-frame pass."""
        return self.tiles_per_frame(frame_hw) + int(self.full_frame)

    def _crop(self, frame, rect):
        x1, y1, x2, y2 = rect
        return np.ascontiguousarray(frame[y1:y2, x1:x2])

    def _tile_dets(self, det, rect, frame_hw):
        """Detections of one tile -> frame pixels, cut ones dropped."""
        if not len(det):
            return det
        x1, y1, x2, y2 = rect
        h, w = frame_hw[:2]
        det = det.copy()
        if self.drop_cut:
            m = self.cut_margin
            cut = np.zeros(len(det), bool)
            if x1 > 0:
                cut |= det[:, 0] <= m
            if y1 > 0:
                cut |= det[:, 1] <= m
            if x2 < w:
                cut |= det[:, 2] >= (x2 - x1) - m
            if y2 < h:
                cut |= det[:, 3] >= (y2 - y1) - m
            det = det[~cut]
        det[:, [0, 2]] += x1
        det[:, [1, 3]] += y1
        return det

    def merge(self, dets):
        """Concatenated [N, 6] detections of one frame -> NMS per class, best first, at most max_per_img."""
        dets = [d for d in dets if len(d)]
        if not dets:
            return np.zeros((0, 6), np.float32)
        d = np.concatenate(dets).astype(np.float32)
        t = torch.from_numpy(d)
        keep = batched_nms(t[:, :4], t[:, 4], t[:, 5].long(), self.nms_iou)[: self.max_per_img]
        return d[keep.numpy()]

    def predict_frames(self, frames):
        jobs, owners = [], []
        for i, frame in enumerate(frames):
            for rect in self.tiles(frame.shape[:2]):
                jobs.append(self._crop(frame, rect))
                owners.append((i, rect))
        per_frame = [[] for _ in frames]
        if self.full_frame:
            for i, det in enumerate(self.inner.predict_frames(list(frames))):
                per_frame[i].append(det)
        if jobs:
            for (i, rect), det in zip(owners, self.inner.predict_frames(jobs)):
                per_frame[i].append(self._tile_dets(det, rect, frames[i].shape[:2]))
        return [self.merge(d) for d in per_frame]

    def predict_batch(self, batch, scales, frame_hws):
        raise NotImplementedError("TiledPredictor needs the original frames: use predict_frames")
