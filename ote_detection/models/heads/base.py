"""The contract between a detector and its head; every head family implements it.

A dense head turns the neck's (or backbone's) feature levels into per-location predictions.
``SingleStageDetector`` and the export adapters call only what is documented here, so adding a head
family needs no change in ``engine/`` or ``apis/``.

Args to every method (B images, L feature levels):

* ``feats``: list of L tensors ``[B, C_l, H_l, W_l]``, finest level first.
* ``outs``: what ``forward`` returned: a tuple of per-level lists of maps, e.g. SSD's
  ``(cls_scores, bbox_preds)`` or FCOS's ``(cls_scores, bbox_preds, centernesses)``; the
  ``i``-th list holds L tensors ``[B, K_i, H_l, W_l]``.
* ``gt_bboxes``: list of B float tensors ``[G_b, 4]`` (x1, y1, x2, y2) in input pixels; ``G_b`` may be 0.
* ``gt_labels``: list of B long tensors ``[G_b]`` of class indices in ``[0, num_classes)``.
* ``input_hw``: ``(H, W)`` of the network input, in pixels.

Methods:

* ``forward(feats) -> outs``
* ``loss(outs, gt_bboxes, gt_labels) -> dict[str, Tensor]`` of scalar losses (the trainer sums
  them). Target assignment and losses run in fp32 even under autocast. An image without
  ground truth gives a finite loss (only negatives), and gradients flow.
* ``decode(outs, input_hw) -> (boxes [B, A, 4], scores [B, A, C])``: every candidate box in input
  pixels (clipped to the image) and its per-class score in [0, 1] (no background column), before
  any thresholding or NMS. It uses only traceable tensor ops, so export can put it in the graph.
* ``predict(outs, input_hw) -> list of B tensors [N, 6]``: x1, y1, x2, y2, score, label in input
  pixels, best first. The default is ``decode`` then ``multiclass_nms`` with ``test_cfg``.

Class attribute ``export_family`` names the export adapter (``export/adapters.py``):

* ``"ssd"``: the IR ends in OpenVINO's ``DetectionOutput`` (Open Model Zoo SSD format); the head
  then also provides ``export_raw(outs) -> (scores [B, A*(C+1)], deltas [B, A*4])``,
  ``prior_boxes(featmap_sizes) -> [A, 4]`` and ``detection_output_attrs() -> dict``.
* ``"nms"``: ``decode`` is in the graph, followed by an OpenVINO NMS op; outputs ``boxes``
  [N, 5] (x1, y1, x2, y2, score in input pixels) and ``labels`` [N] (Open Model Zoo's
  face-detection-0205/0206 format).
"""

import torch
import torch.nn as nn

from ..postprocess import multiclass_nms


class BaseDenseHead(nn.Module):
    export_family = "nms"

    def __init__(self, num_classes, train_cfg=None, test_cfg=None):
        super().__init__()
        self.num_classes = int(num_classes)
        self.train_cfg = dict(train_cfg or {})
        self.test_cfg = dict(test_cfg or {})

    def forward(self, feats):
        raise NotImplementedError

    def loss(self, outs, gt_bboxes, gt_labels):
        raise NotImplementedError

    def decode(self, outs, input_hw):
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, outs, input_hw):
        boxes, scores = self.decode(outs, input_hw)
        return [multiclass_nms(b.float(), s.float(), self.test_cfg) for b, s in zip(boxes, scores)]

    @staticmethod
    def flatten_levels(maps, channels):
        """Per-level maps [B, K * channels, H_l, W_l] -> [B, sum_l(H_l * W_l * K), channels], cell-major
        with the K predictions of a cell contiguous: the order of the anchors / points of every head."""
        batch = maps[0].shape[0]
        return torch.cat([m.permute(0, 2, 3, 1).reshape(batch, -1, channels) for m in maps], 1)

    @staticmethod
    def featmap_sizes(outs):
        """[(H_l, W_l)] of the first per-level list of ``outs``."""
        return [tuple(t.shape[-2:]) for t in outs[0]]
