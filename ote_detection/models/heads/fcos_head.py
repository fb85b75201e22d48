"""FCOS head (Tian et al., "FCOS: Fully Convolutional One-Stage Object Detection", ICCV 2019), as
mmdetection 2.x (and OTE's fork) implements it."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...registry import HEADS
from ..layers import Scale, bias_init_with_prob, conv_tower, init_towers, normal_init, run_tower
from ..losses import build_loss, reduce_mean
from .base import BaseDenseHead, CenternessOutputs, ExportFamily

INF = 1e8


@HEADS.register()
class FCOSHead(BaseDenseHead):
    """Anchor-free head: per location, class logits, distances (l, t, r, b) to the box sides and a
    centerness logit.

    Layers (mmdetection's names, so OTE snapshots load): ``cls_convs`` and ``reg_convs``, each
    ``stacked_convs`` 3x3 ``ConvModule``s (conv, GroupNorm of ``norm_cfg``, ReLU; conv bias only without
    norm), shared by all levels; ``conv_cls`` / ``conv_reg`` / ``conv_centerness`` 3x3 predictors; one
    learnable ``Scale`` per level on the regression output. Centerness comes from the classification tower
    (``centerness_on_reg=False``, the default) or the regression tower.

    ``forward`` returns ``CenternessOutputs(cls_scores [B, C, H, W], bbox_preds [B, 4, H, W],
    centernesses [B, 1, H, W])`` per level.
    ``bbox_preds`` are distances in input pixels (``exp`` of the scaled output); with ``norm_on_bbox`` they are
    ``relu`` of it, in units of the level's stride (``decode`` multiplies by the stride).

    Training targets (per image): a location is a positive of a ground truth when it lies inside the box
    (or, with ``center_sampling``, inside the box's centre region of radius ``center_sample_radius * stride``)
    and its largest distance to the box sides is within the level's ``regress_ranges`` (both ends
    inclusive); among several such boxes the smallest one wins. Losses (mmdetection's): focal loss over all
    locations / number of positives (at least 1); IoU loss of positive boxes weighted by the centerness
    target / sum of those targets; centerness BCE / number of positives. Centerness target:
    ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))``.

    Inference score (what NMS sees): ``sigmoid(cls) * sigmoid(centerness)``, as OTE's ``multiclass_nms``
    with ``score_factors`` (the product is thresholded by ``score_thr``).
    """

    export_family = ExportFamily.NMS
    train_cfg_keys = ()  # targets come from regress_ranges and center sampling, not from train_cfg

    def __init__(self, num_classes, in_channels, feat_channels=256, stacked_convs=4, strides=(4, 8, 16, 32, 64),
                 regress_ranges=((-1, 64), (64, 128), (128, 256), (256, 512), (512, INF)), center_sampling=False,
                 center_sample_radius=1.5, norm_on_bbox=False, centerness_on_reg=False, conv_bias="auto",
                 loss_cls=None, loss_bbox=None, loss_centerness=None, conv_cfg=None,
                 norm_cfg=dict(type="GN", num_groups=32, requires_grad=True), dcn_on_last_conv=False,
                 train_cfg=None, test_cfg=None):
        super().__init__(num_classes, train_cfg, test_cfg)
        if conv_cfg is not None or dcn_on_last_conv:
            raise ValueError("FCOSHead: conv_cfg / dcn_on_last_conv are not supported")
        if len(regress_ranges) != len(strides):
            raise ValueError("FCOSHead: regress_ranges and strides differ in number")
        self.in_channels = in_channels
        self.feat_channels = feat_channels
        self._strides = [int(s) for s in strides]
        self.regress_ranges = [(float(lo), float(hi)) for lo, hi in regress_ranges]
        self.center_sampling = center_sampling
        self.center_sample_radius = float(center_sample_radius)
        self.norm_on_bbox = norm_on_bbox
        self.centerness_on_reg = centerness_on_reg
        self.loss_cls = build_loss(loss_cls or dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25,
                                                    loss_weight=1.0))
        self.loss_bbox = build_loss(loss_bbox or dict(type="IoULoss", loss_weight=1.0))
        self.loss_centerness = build_loss(loss_centerness or dict(type="CrossEntropyLoss", use_sigmoid=True,
                                                                  loss_weight=1.0))
        self.cls_convs = conv_tower(in_channels, feat_channels, stacked_convs, norm_cfg, bias=conv_bias)
        self.reg_convs = conv_tower(in_channels, feat_channels, stacked_convs, norm_cfg, bias=conv_bias)
        self.conv_cls = nn.Conv2d(feat_channels, num_classes, 3, padding=1)
        self.conv_reg = nn.Conv2d(feat_channels, 4, 3, padding=1)
        self.conv_centerness = nn.Conv2d(feat_channels, 1, 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in self.strides)
        self._point_cache = {}
        self.init_weights()

    def init_weights(self):
        init_towers(self.cls_convs, self.reg_convs)
        normal_init(self.conv_cls, std=0.01, bias=bias_init_with_prob(0.01))
        normal_init(self.conv_reg, std=0.01)
        normal_init(self.conv_centerness, std=0.01)

    @property
    def strides(self):
        return list(self._strides)

    def prediction_layers(self):
        return [self.conv_cls, self.conv_reg, self.conv_centerness]

    def forward(self, feats):
        cls_scores, bbox_preds, centernesses = [], [], []
        for x, scale in zip(feats, self.scales):
            cls_feat, reg_feat = run_tower(self.cls_convs, x), run_tower(self.reg_convs, x)
            bbox_pred = scale(self.conv_reg(reg_feat)).float()
            bbox_pred = F.relu(bbox_pred) if self.norm_on_bbox else bbox_pred.exp()
            cls_scores.append(self.conv_cls(cls_feat))
            bbox_preds.append(bbox_pred)
            centernesses.append(self.conv_centerness(reg_feat if self.centerness_on_reg else cls_feat))
        return CenternessOutputs(cls_scores, bbox_preds, centernesses)

    # -- shared by loss and inference ------------------------------------------------------------
    def points(self, featmap_sizes, device):
        """Per level [H*W, 2] locations (x, y) = (j * stride + stride // 2, i * stride + stride // 2)."""
        key = (tuple(tuple(int(v) for v in s) for s in featmap_sizes), str(device))
        if key in self._point_cache:
            return self._point_cache[key]
        points = []
        for (h, w), stride in zip(featmap_sizes, self.strides):
            ys = torch.arange(int(h), device=device, dtype=torch.float32) * stride
            xs = torch.arange(int(w), device=device, dtype=torch.float32) * stride
            yy, xx = torch.meshgrid(ys, xs, indexing="ij")
            points.append(torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1) + stride // 2)
        # export (torch.export or TorchScript tracing, which runs twice and compares) computes them in the
        # graph, uncached
        if not (torch.compiler.is_compiling() or torch.jit.is_tracing()):
            self._point_cache[key] = points
        return points

    def _flatten(self, outs):
        """[B, P, C] logits, [B, P, 4] distances (in pixels with norm_on_bbox at inference), [B, P] centerness."""
        return (self.flatten_levels(outs.cls_scores, self.num_classes), self.flatten_levels(outs.bbox_preds, 4),
                self.flatten_levels(outs.centernesses, 1)[..., 0])

    @staticmethod
    def distance2bbox(points, distance, max_shape=None):
        x1 = points[..., 0] - distance[..., 0]
        y1 = points[..., 1] - distance[..., 1]
        x2 = points[..., 0] + distance[..., 2]
        y2 = points[..., 1] + distance[..., 3]
        if max_shape is not None:
            height, width = max_shape
            x1, x2 = x1.clamp(0, width), x2.clamp(0, width)
            y1, y2 = y1.clamp(0, height), y2.clamp(0, height)
        return torch.stack([x1, y1, x2, y2], dim=-1)

    # -- training ----------------------------------------------------------------------------------
    def get_targets(self, points, gt_bboxes, gt_labels):
        """Per image: labels [P] (``num_classes`` = background) and (l, t, r, b) targets [P, 4] in pixels
        (divided by the level's stride with ``norm_on_bbox``). ``points``: per-level lists."""
        num_per_level = [p.shape[0] for p in points]
        all_points = torch.cat(points)
        ranges = torch.cat([p.new_tensor(r).expand(n, 2) for p, r, n in zip(points, self.regress_ranges,
                                                                             num_per_level)])
        strides = torch.cat([p.new_full((n,), float(s)) for p, s, n in zip(points, self.strides, num_per_level)])
        labels, targets = [], []
        for boxes, classes in zip(gt_bboxes, gt_labels):  # images, not boxes
            label, target = self._targets_single(all_points, ranges, strides, boxes.float(), classes)
            if self.norm_on_bbox:
                target = target / strides[:, None]
            labels.append(label)
            targets.append(target)
        return torch.stack(labels), torch.stack(targets)

    def _targets_single(self, points, ranges, strides, boxes, classes):
        num_points, num_gts = points.shape[0], boxes.shape[0]
        if num_gts == 0:
            return classes.new_full((num_points,), self.num_classes), boxes.new_zeros(num_points, 4)
        areas = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[None].expand(num_points, num_gts)
        xs, ys = points[:, 0, None], points[:, 1, None]
        dist = torch.stack([xs - boxes[:, 0], ys - boxes[:, 1], boxes[:, 2] - xs, boxes[:, 3] - ys], dim=-1)
        if self.center_sampling:
            radius = strides[:, None] * self.center_sample_radius
            cx = (boxes[:, 0] + boxes[:, 2]) / 2
            cy = (boxes[:, 1] + boxes[:, 3]) / 2
            x1 = torch.maximum(cx - radius, boxes[:, 0])
            y1 = torch.maximum(cy - radius, boxes[:, 1])
            x2 = torch.minimum(cx + radius, boxes[:, 2])
            y2 = torch.minimum(cy + radius, boxes[:, 3])
            inside = torch.stack([xs - x1, ys - y1, x2 - xs, y2 - ys], dim=-1).min(dim=-1).values > 0
        else:
            inside = dist.min(dim=-1).values > 0
        max_dist = dist.max(dim=-1).values
        in_range = (max_dist >= ranges[:, 0, None]) & (max_dist <= ranges[:, 1, None])
        areas = torch.where(inside & in_range, areas, torch.full_like(areas, INF))
        min_area, which = areas.min(dim=1)
        labels = classes[which].clone()
        labels[min_area == INF] = self.num_classes
        targets = dist[torch.arange(num_points, device=points.device), which]
        return labels, targets

    @staticmethod
    def centerness_target(targets):
        """sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)) of positive (l, t, r, b) targets [N, 4]."""
        lr = targets[:, [0, 2]]
        tb = targets[:, [1, 3]]
        return torch.sqrt((lr.min(dim=-1).values / lr.max(dim=-1).values)
                          * (tb.min(dim=-1).values / tb.max(dim=-1).values))

    def loss(self, outs, gt_bboxes, gt_labels):
        points = self.points(self.featmap_sizes(outs), outs.cls_scores[0].device)
        logits, dist, ctr = self._flatten(outs)
        labels, targets = self.get_targets(points, gt_bboxes, gt_labels)
        all_points = torch.cat(points)[None].expand(labels.shape[0], -1, -1)
        pos = labels < self.num_classes
        num_pos = max(reduce_mean(float(pos.sum()), logits.device), 1.0)
        loss_cls = self.loss_cls(logits.reshape(-1, self.num_classes), labels.reshape(-1), avg_factor=num_pos)
        # positives (possibly none: the sums below are then zeros that still belong to the graph)
        pos_targets = targets[pos]
        ctr_targets = self.centerness_target(pos_targets)
        pos_points = all_points[pos]
        loss_bbox = self.loss_bbox(self.distance2bbox(pos_points, dist[pos]),
                                   self.distance2bbox(pos_points, pos_targets), weight=ctr_targets,
                                   avg_factor=max(reduce_mean(float(ctr_targets.sum()), logits.device), 1e-6))
        loss_centerness = self.loss_centerness(ctr[pos], ctr_targets, avg_factor=num_pos)
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "loss_centerness": loss_centerness}

    # -- inference ---------------------------------------------------------------------------------
    def decode(self, outs, input_hw):
        """Boxes [B, P, 4] (clipped to the input) and scores [B, P, C] = sigmoid(cls) * sigmoid(centerness)."""
        points = self.points(self.featmap_sizes(outs), outs.cls_scores[0].device)
        logits, dist, ctr = self._flatten(outs)
        if self.norm_on_bbox:
            strides = torch.cat([p.new_full((p.shape[0], 1), float(s)) for p, s in zip(points, self.strides)])
            dist = dist * strides
        boxes = self.distance2bbox(torch.cat(points)[None], dist, max_shape=input_hw)
        scores = logits.sigmoid() * ctr.sigmoid()[..., None]
        return boxes, scores
