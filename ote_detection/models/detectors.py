"""Detectors: backbone -> (neck) -> head, for every head family (SSD, FCOS, ATSS)."""

import torch
import torch.nn as nn

from ..registry import BACKBONES, DETECTORS, HEADS, NECKS
from .heads.base import map_outputs


@DETECTORS.register()
@DETECTORS.register("FCOS")
@DETECTORS.register("ATSS")
class SingleStageDetector(nn.Module):
    """Backbone, optional neck and a dense head that follows ``models/heads/base.py``'s contract.

    * ``forward(img)``: the head's outputs NamedTuple of per-level maps (what export converts);
    * ``forward(img, gt_bboxes, gt_labels)``: the loss dict (so DDP wraps the whole training step);
    * ``predict(img)``: per image a ``Detections`` (boxes [N, 4], scores [N], labels [N]) in input pixels.

    ``img`` is [B, 3, H, W], normalised as the config's ``img_norm_cfg`` says.
    """

    def __init__(self, backbone, bbox_head, neck=None, train_cfg=None, test_cfg=None, pretrained=None):
        super().__init__()
        self.backbone = BACKBONES.build(backbone)
        self.neck = NECKS.build(neck) if neck else None
        self.bbox_head = HEADS.build(bbox_head, train_cfg=train_cfg, test_cfg=test_cfg)

    def extract_feat(self, img):
        feats = self.backbone(img)
        return self.neck(feats) if self.neck is not None else feats

    def forward(self, img, gt_bboxes=None, gt_labels=None):
        outs = self.bbox_head(self.extract_feat(img))
        if gt_bboxes is None:
            return outs
        # target assignment and losses in fp32, also under autocast
        with torch.autocast(img.device.type, enabled=False):
            outs = map_outputs(outs, lambda t: t.float())
            return self.bbox_head.loss(outs, gt_bboxes, gt_labels)

    @torch.no_grad()
    def predict(self, img):
        return self.bbox_head.predict(self.forward(img), tuple(img.shape[-2:]))
