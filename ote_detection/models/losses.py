"""Losses of the SSD head: softmax cross-entropy with hard negative mining, smooth L1."""

import torch
import torch.nn.functional as F


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
