"""SSD head with clustered anchors and (optionally) depthwise-separable prediction convolutions."""

import math

import torch
import torch.nn as nn

from ...registry import ANCHOR_GENERATORS, ASSIGNERS, BBOX_CODERS, HEADS
from ..losses import hard_negative_mined_ce, smooth_l1_sum
from .base import BaseDenseHead, ExportFamily, SSDOutputs


def _prediction_conv(in_channels, out_channels, depthwise, activation):
    if not depthwise:
        return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
    act = {"relu": nn.ReLU, "relu6": nn.ReLU6}[activation]
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1, groups=in_channels),
        nn.BatchNorm2d(in_channels),
        act(inplace=True),
        nn.Conv2d(in_channels, out_channels, kernel_size=1),
    )


@HEADS.register()
class SSDHead(BaseDenseHead):
    """Per level: a box-regression and a classification branch (softmax over classes + background).

    ``forward`` returns ``SSDOutputs(cls_scores, bbox_preds)``: per level [B, A_l * (C + 1), H, W] logits
    (background last) and [B, A_l * 4, H, W] deltas of the box coder, anchors of one cell contiguous.

    With ``loss_balancing`` the classification loss is weighted by a learnt log-variance
    ``loss_weights[0]`` (``exp(-w) * L + w / 2``). OTE's head also created ``loss_weights[1]`` for
    the regression loss but returned the unbalanced regression loss, so ``w[1]`` never trained; we keep
    that behaviour (and the parameter, for checkpoint compatibility).
    """

    export_family = ExportFamily.SSD
    train_cfg_keys = ("assigner", "neg_pos_ratio", "smoothl1_beta")

    def __init__(self, num_classes, in_channels, anchor_generator, bbox_coder, depthwise_heads=False,
                 depthwise_heads_activations="relu6", loss_balancing=False, reg_decoded_bbox=False,
                 train_cfg=None, test_cfg=None):
        super().__init__(num_classes, train_cfg, test_cfg)
        self.cls_out_channels = num_classes + 1
        self.anchor_generator = ANCHOR_GENERATORS.build(anchor_generator)
        self.bbox_coder = BBOX_CODERS.build(bbox_coder)
        num_anchors = self.anchor_generator.num_base_anchors
        if len(in_channels) != len(num_anchors):
            raise ValueError("in_channels and anchor levels differ in number")
        self.reg_convs = nn.ModuleList(
            _prediction_conv(c, a * 4, depthwise_heads, depthwise_heads_activations)
            for c, a in zip(in_channels, num_anchors))
        self.cls_convs = nn.ModuleList(
            _prediction_conv(c, a * self.cls_out_channels, depthwise_heads, depthwise_heads_activations)
            for c, a in zip(in_channels, num_anchors))
        self.loss_balancing = loss_balancing
        if loss_balancing:
            self.loss_weights = nn.Parameter(torch.zeros(2))
        self.assigner = ASSIGNERS.build(self.train_cfg["assigner"]) if "assigner" in self.train_cfg else None
        self._anchor_cache = {}
        self.init_weights()

    def init_weights(self):
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def strides(self):
        return list(self.anchor_generator.strides)

    def prediction_layers(self):
        """The last convolution of every level's classification and regression branch."""
        return [[m for m in branch.modules() if isinstance(m, nn.Conv2d)][-1]
                for branch in list(self.cls_convs) + list(self.reg_convs)]

    def forward(self, feats):
        cls_scores = [conv(f) for f, conv in zip(feats, self.cls_convs)]
        bbox_preds = [conv(f) for f, conv in zip(feats, self.reg_convs)]
        return SSDOutputs(cls_scores, bbox_preds)

    # -- shared by loss and inference ------------------------------------------------------------
    def anchors(self, featmap_sizes, device):
        key = (tuple(tuple(int(v) for v in s) for s in featmap_sizes), str(device))
        if key in self._anchor_cache:
            return self._anchor_cache[key]
        anchors = self.anchor_generator.grid_anchors(featmap_sizes, device)
        if not torch.compiler.is_compiling():  # tracing (export) computes them in the graph, uncached
            self._anchor_cache[key] = anchors
        return anchors

    def flatten_outputs(self, cls_scores, bbox_preds):
        """Level maps -> [B, A, C+1] logits and [B, A, 4] deltas in anchor order."""
        return self.flatten_levels(cls_scores, self.cls_out_channels), self.flatten_levels(bbox_preds, 4)

    # -- training ----------------------------------------------------------------------------------
    def loss(self, outs, gt_bboxes, gt_labels):
        logits, deltas = self.flatten_outputs(*outs)
        anchors = self.anchors(self.featmap_sizes(outs), logits.device)
        batch, num_anchors = logits.shape[:2]
        labels = logits.new_full((batch, num_anchors), self.num_classes, dtype=torch.long)
        targets = deltas.new_zeros(batch, num_anchors, 4)
        valid = torch.ones(batch, num_anchors, dtype=torch.bool, device=logits.device)
        for i, (boxes, classes) in enumerate(zip(gt_bboxes, gt_labels)):  # loop over images, not boxes
            assigned = self.assigner.assign(anchors, boxes)
            pos = assigned > 0
            valid[i] = assigned >= 0
            if pos.any():
                matched = assigned[pos] - 1
                labels[i, pos] = classes[matched]
                targets[i, pos] = self.bbox_coder.encode(anchors[pos], boxes[matched])
        positive = (labels < self.num_classes) & valid
        negative = (labels == self.num_classes) & valid
        # mmdetection divides by the number of positives, each image counting at least one
        num_total_pos = positive.sum(dim=1).clamp(min=1).sum().float()
        loss_cls = hard_negative_mined_ce(logits, labels, positive, negative,
                                          self.train_cfg.get("neg_pos_ratio", 3)).sum() / num_total_pos
        loss_bbox = smooth_l1_sum(deltas, targets, positive.float(),
                                  beta=self.train_cfg.get("smoothl1_beta", 1.0)).sum() / num_total_pos
        if self.loss_balancing:
            w = self.loss_weights[0]
            loss_cls = torch.exp(-w) * loss_cls + 0.5 * w
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox}

    # -- inference ---------------------------------------------------------------------------------
    def decode(self, outs, input_hw):
        """Boxes [B, A, 4] in input pixels, clipped, and scores [B, A, C] (softmax, background dropped)."""
        logits, deltas = self.flatten_outputs(*outs)
        anchors = self.anchors(self.featmap_sizes(outs), logits.device)
        scores = logits.softmax(dim=-1)[..., : self.num_classes]
        boxes = self.bbox_coder.decode(anchors[None], deltas, max_shape=input_hw)
        return boxes, scores

    # -- export (ExportFamily.SSD: OpenVINO DetectionOutput) ------------------------------------------
    def export_raw(self, outs):
        """DetectionOutput's first two inputs, in anchor order: (scores [B, A * (C + 1)] softmax with the
        background last, deltas [B, A * 4]).

        The deltas are the box coder's with its dw/dh clamp applied and its means added, divided by the
        stds (which DetectionOutput multiplies in again as the prior variances of ``prior_variances``);
        with zero means (all templates) that is only the clamp, applied to the raw deltas."""
        logits, deltas = self.flatten_outputs(*outs)
        batch = logits.shape[0]
        coder = self.bbox_coder
        offset = [m / s for m, s in zip(coder.means, coder.stds)]
        ratio = float(getattr(coder, "max_ratio", math.inf))
        if math.isfinite(ratio):
            big = float(torch.finfo(torch.float32).max)
            # the clamp acts on d = delta * std + mean; in units of std that is (bound - mean) / std
            bound = [big, big, ratio / coder.stds[2], ratio / coder.stds[3]]
            hi = deltas.new_tensor(bound) - deltas.new_tensor(offset)
            lo = -deltas.new_tensor(bound) - deltas.new_tensor(offset)
            deltas = torch.minimum(torch.maximum(deltas, lo), hi)
        if any(m != 0 for m in coder.means):
            deltas = deltas + deltas.new_tensor(offset)
        return logits.softmax(dim=-1).reshape(batch, -1), deltas.reshape(batch, -1)

    def prior_boxes(self, featmap_sizes):
        """All anchors [A, 4] (x1, y1, x2, y2) in input pixels, in the order of ``export_raw``."""
        return self.anchor_generator.grid_anchors(featmap_sizes, "cpu")

    def prior_variances(self):
        """DetectionOutput's prior variances: the box coder's four target stds."""
        return list(self.bbox_coder.stds)

    def box_coder_info(self):
        """The box coder, as ``export_info.yaml`` describes it (to decode the raw ONNX outputs)."""
        coder = self.bbox_coder
        return {"target_means": list(coder.means), "target_stds": list(coder.stds),
                "dwdh_clamp": float(coder.max_ratio)}

    # -- import of Open Model Zoo SSD IRs (omz_import/) -----------------------------------------------
    # parameters an IR has no weights for (the loss-balancing weights; an import sets them to zero)
    training_only_parameters = ("loss_weights",)

    def prior_shapes(self):
        """Per level (stride, widths [K], heights [K]) of the anchors in input pixels: OpenVINO
        PriorBoxClustered's ``step``, ``width`` and ``height`` attributes."""
        gen = self.anchor_generator
        return [(gen.strides[i], list(gen.widths[i]), list(gen.heights[i])) for i in range(gen.num_levels)]

    def prediction_branches(self):
        """``{'reg': [...], 'cls': [...]}``: per level (name relative to the head, module) of the box and the
        class branch (a conv chain ending in its prediction conv), as an SSD IR's DetectionOutput inputs
        trace back to them."""
        return {"reg": [(f"reg_convs.{i}", m) for i, m in enumerate(self.reg_convs)],
                "cls": [(f"cls_convs.{i}", m) for i, m in enumerate(self.cls_convs)]}
