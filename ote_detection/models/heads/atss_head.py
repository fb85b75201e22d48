"""ATSS head (Zhang et al., "Bridging the Gap Between Anchor-based and Anchor-free Detection via Adaptive
Training Sample Selection", CVPR 2020), as mmdetection 2.x (and OTE's fork) implements it."""

import torch
import torch.nn as nn

from ...registry import ANCHOR_GENERATORS, ASSIGNERS, BBOX_CODERS, HEADS
from ..layers import Scale, bias_init_with_prob, conv_tower, init_towers, normal_init, run_tower
from ..losses import build_loss, reduce_mean
from .base import BaseDenseHead, CenternessOutputs, ExportFamily

EPS = 1e-12


@HEADS.register()
class ATSSHead(BaseDenseHead):
    """Anchor-based head with FCOS's towers: per anchor, class logits, box deltas of the box coder and a
    centerness logit.

    Layers (mmdetection's names): ``cls_convs`` / ``reg_convs`` (``stacked_convs`` 3x3 ``ConvModule``s:
    conv without bias, GroupNorm of ``norm_cfg``, ReLU), ``atss_cls`` / ``atss_reg`` / ``atss_centerness``
    3x3 predictors, one learnable ``Scale`` per level on the deltas; centerness from the regression tower.

    ``forward`` returns ``CenternessOutputs(cls_scores [B, A*C, H, W], bbox_preds [B, A*4, H, W],
    centernesses [B, A, H, W])`` per level.

    Training: anchors are assigned per image by ``train_cfg.assigner`` (ATSS); with ``allowed_border >= 0``
    only anchors inside the image (plus that border) take part. Losses (mmdetection's): focal loss over all
    anchors / number of positives (each image counting at least 1); the box loss (GIoU) between decoded
    predictions and ground truth of positives, weighted by their centerness target / sum of those targets;
    centerness BCE / number of positives. The centerness target is FCOS's, from the anchor centre to the
    sides of its ground truth.

    Inference score: ``sigmoid(cls) * sigmoid(centerness)`` (OTE's ``multiclass_nms`` with ``score_factors``).
    """

    export_family = ExportFamily.NMS
    train_cfg_keys = ("assigner", "allowed_border", "pos_weight")

    def __init__(self, num_classes, in_channels, anchor_generator, bbox_coder=None, feat_channels=256,
                 stacked_convs=4, loss_cls=None, loss_bbox=None, loss_centerness=None, conv_cfg=None,
                 norm_cfg=dict(type="GN", num_groups=32, requires_grad=True), reg_decoded_bbox=False,
                 train_cfg=None, test_cfg=None):
        super().__init__(num_classes, train_cfg, test_cfg)
        if conv_cfg is not None:
            raise ValueError("ATSSHead: conv_cfg is not supported")
        self.in_channels = in_channels
        self.feat_channels = feat_channels
        self.anchor_generator = ANCHOR_GENERATORS.build(anchor_generator)
        self.bbox_coder = BBOX_CODERS.build(bbox_coder or dict(
            type="DeltaXYWHBBoxCoder", target_means=(0.0, 0.0, 0.0, 0.0), target_stds=(0.1, 0.1, 0.2, 0.2)))
        self.loss_cls = build_loss(loss_cls or dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25,
                                                    loss_weight=1.0))
        self.loss_bbox = build_loss(loss_bbox or dict(type="GIoULoss", loss_weight=2.0))
        self.loss_centerness = build_loss(loss_centerness or dict(type="CrossEntropyLoss", use_sigmoid=True,
                                                                  loss_weight=1.0))
        self.num_anchors = self.anchor_generator.num_base_anchors[0]
        self.cls_convs = conv_tower(in_channels, feat_channels, stacked_convs, norm_cfg)
        self.reg_convs = conv_tower(in_channels, feat_channels, stacked_convs, norm_cfg)
        self.atss_cls = nn.Conv2d(feat_channels, self.num_anchors * num_classes, 3, padding=1)
        self.atss_reg = nn.Conv2d(feat_channels, self.num_anchors * 4, 3, padding=1)
        self.atss_centerness = nn.Conv2d(feat_channels, self.num_anchors, 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in self.anchor_generator.strides)
        self.assigner = ASSIGNERS.build(self.train_cfg["assigner"]) if "assigner" in self.train_cfg else None
        self._anchor_cache = {}
        self.init_weights()

    def init_weights(self):
        init_towers(self.cls_convs, self.reg_convs)
        normal_init(self.atss_cls, std=0.01, bias=bias_init_with_prob(0.01))
        normal_init(self.atss_reg, std=0.01)
        normal_init(self.atss_centerness, std=0.01)

    @property
    def strides(self):
        return list(self.anchor_generator.strides)

    def prediction_layers(self):
        return [self.atss_cls, self.atss_reg, self.atss_centerness]

    def forward(self, feats):
        cls_scores, bbox_preds, centernesses = [], [], []
        for x, scale in zip(feats, self.scales):
            cls_feat, reg_feat = run_tower(self.cls_convs, x), run_tower(self.reg_convs, x)
            cls_scores.append(self.atss_cls(cls_feat))
            bbox_preds.append(scale(self.atss_reg(reg_feat)).float())
            centernesses.append(self.atss_centerness(reg_feat))
        return CenternessOutputs(cls_scores, bbox_preds, centernesses)

    # -- shared by loss and inference ------------------------------------------------------------
    def anchors(self, featmap_sizes, device):
        key = (tuple(tuple(int(v) for v in s) for s in featmap_sizes), str(device))
        if key in self._anchor_cache:
            return self._anchor_cache[key]
        anchors = self.anchor_generator.grid_anchors(featmap_sizes, device)
        if not torch.compiler.is_compiling():  # tracing (export) computes them in the graph, uncached
            self._anchor_cache[key] = anchors
        return anchors

    def _flatten(self, outs):
        """[B, A, C] logits, [B, A, 4] deltas, [B, A] centerness logits in anchor order."""
        return (self.flatten_levels(outs.cls_scores, self.num_classes), self.flatten_levels(outs.bbox_preds, 4),
                self.flatten_levels(outs.centernesses, 1)[..., 0])

    @staticmethod
    def centerness_target(anchors, gt_boxes):
        """FCOS centerness of the anchor centres [N] w.r.t. their ground truth boxes (both [N, 4])."""
        cx = (anchors[:, 0] + anchors[:, 2]) / 2
        cy = (anchors[:, 1] + anchors[:, 3]) / 2
        lr = torch.stack([cx - gt_boxes[:, 0], gt_boxes[:, 2] - cx], dim=1)
        tb = torch.stack([cy - gt_boxes[:, 1], gt_boxes[:, 3] - cy], dim=1)
        return torch.sqrt((lr.min(dim=-1).values / lr.max(dim=-1).values)
                          * (tb.min(dim=-1).values / tb.max(dim=-1).values))

    # -- training ----------------------------------------------------------------------------------
    def _inside_flags(self, anchors, input_hw):
        border = self.train_cfg.get("allowed_border", -1)
        if border is None or border < 0:
            return torch.ones(anchors.shape[0], dtype=torch.bool, device=anchors.device)
        height, width = input_hw
        return ((anchors[:, 0] >= -border) & (anchors[:, 1] >= -border)
                & (anchors[:, 2] < width + border) & (anchors[:, 3] < height + border))

    def get_targets(self, anchors, num_level_anchors, gt_bboxes, gt_labels, input_hw):
        """Per image: labels [A] (``num_classes`` = background), label weights [A] (0 outside the allowed
        border), matched ground-truth boxes [A, 4]; and the number of positives per image."""
        inside = self._inside_flags(anchors, input_hw)
        level_of = torch.repeat_interleave(torch.arange(len(num_level_anchors), device=anchors.device),
                                           torch.tensor(num_level_anchors, device=anchors.device))
        num_inside = torch.bincount(level_of[inside], minlength=len(num_level_anchors)).tolist()
        inside_anchors = anchors[inside]
        pos_weight = self.train_cfg.get("pos_weight", -1)
        labels, weights, matched_boxes, num_pos = [], [], [], []
        for boxes, classes in zip(gt_bboxes, gt_labels):  # images, not boxes
            boxes = boxes.float()
            assigned = anchors.new_zeros(anchors.shape[0], dtype=torch.long)
            assigned[inside] = self.assigner.assign(inside_anchors, num_inside, boxes)
            pos = assigned > 0
            label = torch.full_like(assigned, self.num_classes)
            matched = anchors.new_zeros(anchors.shape[0], 4)
            if pos.any():
                label[pos] = classes[assigned[pos] - 1]
                matched[pos] = boxes[assigned[pos] - 1]
            weight = inside.float()
            if pos_weight is not None and pos_weight > 0:
                weight[pos] = float(pos_weight)
            labels.append(label)
            weights.append(weight)
            matched_boxes.append(matched)
            num_pos.append(int(pos.sum()))
        return torch.stack(labels), torch.stack(weights), torch.stack(matched_boxes), num_pos

    def loss(self, outs, gt_bboxes, gt_labels):
        if self.assigner is None:
            raise ValueError("ATSSHead: train_cfg has no assigner")
        featmap_sizes = self.featmap_sizes(outs)
        device = outs.cls_scores[0].device
        anchors = self.anchors(featmap_sizes, device)
        num_level_anchors = self.anchor_generator.num_anchors_per_level(featmap_sizes)
        input_hw = tuple(int(s) * self.strides[0] for s in featmap_sizes[0])
        logits, deltas, ctr = self._flatten(outs)
        labels, weights, matched, num_pos = self.get_targets(anchors, num_level_anchors, gt_bboxes, gt_labels,
                                                             input_hw)
        # mmdetection: every image counts at least one positive, averaged over processes
        num_total = max(reduce_mean(float(sum(max(n, 1) for n in num_pos)), device), 1.0)
        loss_cls = self.loss_cls(logits.reshape(-1, self.num_classes), labels.reshape(-1), weights.reshape(-1),
                                 avg_factor=num_total)
        # positives (possibly none: the sums below are then zeros that still belong to the graph)
        pos = labels < self.num_classes
        pos_anchors = anchors[None].expand(labels.shape[0], -1, -1)[pos]
        pos_boxes = matched[pos]
        # the regression target decoded, as mmdetection: decode(encode(gt)) (= gt up to rounding)
        target_boxes = self.bbox_coder.decode(pos_anchors, self.bbox_coder.encode(pos_anchors, pos_boxes))
        ctr_targets = self.centerness_target(pos_anchors, target_boxes)
        avg = reduce_mean(float(ctr_targets.sum()), device)
        loss_bbox = self.loss_bbox(self.bbox_coder.decode(pos_anchors, deltas[pos]), target_boxes,
                                   weight=ctr_targets, avg_factor=avg if avg >= EPS else 1.0)
        loss_centerness = self.loss_centerness(ctr[pos], ctr_targets, avg_factor=num_total)
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "loss_centerness": loss_centerness}

    # -- inference ---------------------------------------------------------------------------------
    def decode(self, outs, input_hw):
        """Boxes [B, A, 4] (clipped to the input) and scores [B, A, C] = sigmoid(cls) * sigmoid(centerness)."""
        anchors = self.anchors(self.featmap_sizes(outs), outs.cls_scores[0].device)
        logits, deltas, ctr = self._flatten(outs)
        boxes = self.bbox_coder.decode(anchors[None], deltas, max_shape=input_hw)
        scores = logits.sigmoid() * ctr.sigmoid()[..., None]
        return boxes, scores
