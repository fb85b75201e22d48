"""Detectors: backbone -> (neck) -> head."""

import torch
import torch.nn as nn

from ..registry import BACKBONES, DETECTORS, HEADS, NECKS


@DETECTORS.register()
class SingleStageDetector(nn.Module):
    """``forward(img)`` gives the head's raw per-level outputs (what export converts);
    ``forward(img, gt_bboxes, gt_labels)`` gives the loss dict (so DDP wraps the training step);
    ``predict(img, scale_factors)`` gives per-image detections in original-image pixels."""

    def __init__(self, backbone, bbox_head, neck=None, train_cfg=None, test_cfg=None, pretrained=None):
        super().__init__()
        self.backbone = BACKBONES.build(backbone)
        self.neck = NECKS.build(neck) if neck else None
        self.bbox_head = HEADS.build(bbox_head, train_cfg=train_cfg, test_cfg=test_cfg)

    def extract_feat(self, img):
        feats = self.backbone(img)
        return self.neck(feats) if self.neck is not None else feats

    def forward(self, img, gt_bboxes=None, gt_labels=None):
        outputs = self.bbox_head(self.extract_feat(img))
        if gt_bboxes is None:
            return outputs
        return self.bbox_head.loss(*outputs, gt_bboxes, gt_labels)

    @torch.no_grad()
    def predict(self, img, scale_factors=None):
        """img [B, 3, H, W] (normalised); scale_factors [B, 2] (input/original, x and y) or None.
        Returns a list of [N, 6] tensors: x1, y1, x2, y2, score, label."""
        cls_scores, bbox_preds = self.forward(img)
        scores, boxes = self.bbox_head.decode(cls_scores, bbox_preds, img.shape[-2:])
        results = []
        for i in range(img.shape[0]):
            det = self.bbox_head.nms(scores[i], boxes[i])
            if scale_factors is not None:
                det[:, :4] /= scale_factors[i].repeat(2).to(det)
            results.append(det)
        return results
