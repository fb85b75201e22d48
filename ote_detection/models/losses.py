"""Losses: SSD (softmax cross-entropy with hard negative mining, smooth L1); FCOS / ATSS (focal, IoU,
GIoU, centerness BCE: mmdetection's loss configs over torchvision.ops)."""

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss


def hard_negative_mined_ce(cls_logits, labels, positive, negative, neg_pos_ratio):
    """Per-image SSD classification loss sums: all positives plus the ``neg_pos_ratio * P`` hardest negatives.

    cls_logits [B, A, C+1], labels [B, A], positive/negative [B, A] bool. Returns [B] sums.
    """
    ce = F.cross_entropy(cls_logits.flatten(0, 1), labels.flatten(), reduction="none").view(labels.shape)
    pos_sum = (ce * positive).sum(dim=1)
    num_neg = torch.minimum(positive.sum(dim=1) * neg_pos_ratio, negative.sum(dim=1))
    neg_ce = ce.masked_fill(~negative, float("-inf")).sort(dim=1, descending=True).values
    rank = torch.arange(ce.shape[1], device=ce.device)[None]
    take = rank < num_neg[:, None]
    neg_sum = torch.where(take, neg_ce, torch.zeros_like(neg_ce)).sum(dim=1)
    return pos_sum + neg_sum


def smooth_l1_sum(pred, target, weight, beta=1.0):
    """Per-image sums of elementwise smooth L1, weighted: pred/target [B, A, 4], weight [B, A]."""
    loss = F.smooth_l1_loss(pred, target, reduction="none", beta=beta) if beta > 0 else (pred - target).abs()
    return (loss.sum(dim=-1) * weight).sum(dim=1)


# -- FCOS / ATSS losses: mmdetection's loss configs over torchvision.ops ------------------------------
# Each takes per-element inputs, an optional per-element weight and an ``avg_factor`` (the sum is divided
# by it), and multiplies by ``loss_weight``, as mmdetection's weighted losses with reduction 'mean'.

def _reduce(loss, weight, avg_factor, loss_weight):
    if weight is not None:
        loss = loss * weight
    return loss_weight * loss.sum() / avg_factor


def aligned_box_iou(pred, target, eps=1e-6):
    """IoU of box ``i`` of ``pred`` with box ``i`` of ``target`` ([N, 4] each, x1 y1 x2 y2), clamped to >= eps."""
    lt = torch.max(pred[:, :2], target[:, :2])
    rb = torch.min(pred[:, 2:], target[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    area_p = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    area_t = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    union = (area_p + area_t - inter).clamp(min=eps)
    return (inter / union).clamp(min=eps)


class FocalLoss:
    """Sigmoid focal loss (``torchvision.ops.sigmoid_focal_loss``) over one-hot targets; label ``C`` is
    background (all-zero target)."""

    def __init__(self, use_sigmoid=True, gamma=2.0, alpha=0.25, reduction="mean", loss_weight=1.0):
        if not use_sigmoid:
            raise ValueError("FocalLoss: only use_sigmoid=True is supported")
        self.gamma, self.alpha, self.loss_weight = float(gamma), float(alpha), float(loss_weight)

    def __call__(self, logits, labels, weight=None, avg_factor=1.0):
        """logits [N, C], labels [N] in [0, C], weight [N] or None."""
        num_classes = logits.shape[-1]
        target = F.one_hot(labels, num_classes + 1)[:, :num_classes].to(logits.dtype)
        loss = sigmoid_focal_loss(logits, target, alpha=self.alpha, gamma=self.gamma, reduction="none")
        return _reduce(loss, None if weight is None else weight[:, None], avg_factor, self.loss_weight)


class IoULoss:
    """``-log(IoU)`` (mmdetection's default) or ``1 - IoU`` with ``linear=True``; IoU clamped to >= eps."""

    def __init__(self, linear=False, eps=1e-6, reduction="mean", loss_weight=1.0):
        self.linear, self.eps, self.loss_weight = linear, float(eps), float(loss_weight)

    def __call__(self, pred, target, weight=None, avg_factor=1.0):
        iou = aligned_box_iou(pred, target, self.eps)
        return _reduce(1 - iou if self.linear else -iou.log(), weight, avg_factor, self.loss_weight)


class GIoULoss:
    """``1 - GIoU`` (``torchvision.ops.generalized_box_iou_loss``)."""

    def __init__(self, eps=1e-7, reduction="mean", loss_weight=1.0):
        self.eps, self.loss_weight = float(eps), float(loss_weight)

    def __call__(self, pred, target, weight=None, avg_factor=1.0):
        loss = generalized_box_iou_loss(pred, target, reduction="none", eps=self.eps)
        return _reduce(loss, weight, avg_factor, self.loss_weight)


class CrossEntropyLoss:
    """Binary cross-entropy on logits (``use_sigmoid=True``, the centerness branch)."""

    def __init__(self, use_sigmoid=True, reduction="mean", loss_weight=1.0):
        if not use_sigmoid:
            raise ValueError("CrossEntropyLoss: only use_sigmoid=True is supported here")
        self.loss_weight = float(loss_weight)

    def __call__(self, logits, target, weight=None, avg_factor=1.0):
        loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return _reduce(loss, weight, avg_factor, self.loss_weight)


_LOSSES = {cls.__name__: cls for cls in (FocalLoss, IoULoss, GIoULoss, CrossEntropyLoss)}


def build_loss(cfg):
    """A loss object from an mmdetection loss config (``dict(type='FocalLoss', ...)``)."""
    cfg = dict(cfg)
    kind = cfg.pop("type", None)
    if kind not in _LOSSES:
        raise ValueError(f"unknown loss type '{kind}' (known: {', '.join(sorted(_LOSSES))})")
    return _LOSSES[kind](**cfg)


def reduce_mean(value, device):
    """``value`` (a Python float) averaged over the processes of a distributed run (mmdetection averages the
    positive counts that normalise its losses); ``value`` itself otherwise."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return float(value)
    t = torch.tensor(float(value), device=device)
    torch.distributed.all_reduce(t)
    return float(t) / torch.distributed.get_world_size()
