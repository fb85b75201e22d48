"""Adaptive Training Sample Selection (Zhang et al., "Bridging the Gap Between Anchor-based and
Anchor-free Detection via Adaptive Training Sample Selection", CVPR 2020)."""

import torch
from torchvision.ops import box_iou

from ...registry import ASSIGNERS


@ASSIGNERS.register()
class ATSSAssigner:
    """mmdetection's ATSSAssigner for one image, vectorised over anchors and ground truths.

    ``assign(anchors, num_level_anchors, gt_boxes)`` returns a long tensor over anchors:
    0 = background, k > 0 = matched to ground truth ``k - 1``. The steps:

    1. compute the IoU between every anchor (of all pyramid levels) and every ground truth;
    2. compute the distance between every anchor centre and every ground-truth centre;
    3. on each pyramid level, for each ground truth, take the ``topk`` anchors whose centres are
       closest to the ground-truth centre (all of the level's anchors if it has fewer), so each
       ground truth gets about ``topk * L`` candidates;
    4. take the IoU of these candidates and, per ground truth, their mean and (unbiased) standard
       deviation; mean + std is that ground truth's IoU threshold;
    5. candidates whose IoU is >= the threshold become positive;
    6. a positive candidate must have its centre inside the ground truth (every side more than
       0.01 px away), else it is dropped;
    7. an anchor that is positive for several ground truths goes to the one with the highest IoU
       (the first one on ties); all other anchors are background.

    ``ignore_iof_thr`` (ignored ground truth) is not supported: our datasets carry no ignore boxes.
    """

    def __init__(self, topk, iou_calculator=None, ignore_iof_thr=-1):
        if iou_calculator is not None and dict(iou_calculator).get("type", "BboxOverlaps2D") != "BboxOverlaps2D":
            raise ValueError("ATSSAssigner: only the BboxOverlaps2D IoU calculator is supported")
        if ignore_iof_thr > 0:
            raise ValueError("ATSSAssigner: ignore_iof_thr (ignored ground truth) is not supported")
        self.topk = int(topk)

    def assign(self, anchors, num_level_anchors, gt_boxes):
        num_anchors, num_gt = anchors.shape[0], gt_boxes.shape[0]
        assigned = anchors.new_zeros(num_anchors, dtype=torch.long)
        if num_gt == 0 or num_anchors == 0:
            return assigned
        # 1. IoU [A, G]
        overlaps = box_iou(anchors, gt_boxes)
        # 2. centre distances [A, G]
        anchor_ctr = (anchors[:, :2] + anchors[:, 2:]) / 2.0
        gt_ctr = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2.0
        distances = (anchor_ctr[:, None, :] - gt_ctr[None, :, :]).pow(2).sum(-1).sqrt()  # exact: ties matter
        # 3. per level, the topk closest anchors of every ground truth: candidate indices [K, G]
        candidates = []
        start = 0
        for count in num_level_anchors:  # levels, not boxes
            k = min(self.topk, count)
            idx = distances[start:start + count].topk(k, dim=0, largest=False).indices
            candidates.append(idx + start)
            start += count
        candidates = torch.cat(candidates, dim=0)
        gt_ids = torch.arange(num_gt, device=anchors.device)
        # 4. adaptive IoU threshold per ground truth
        cand_iou = overlaps[candidates, gt_ids[None]]
        threshold = cand_iou.mean(dim=0) + cand_iou.std(dim=0)
        # 5. IoU above the threshold
        is_pos = cand_iou >= threshold[None]
        # 6. centre inside the ground truth
        ctr = anchor_ctr[candidates]  # [K, G, 2]
        sides = torch.stack([ctr[..., 0] - gt_boxes[:, 0], ctr[..., 1] - gt_boxes[:, 1],
                             gt_boxes[:, 2] - ctr[..., 0], gt_boxes[:, 3] - ctr[..., 1]], dim=-1)
        is_pos &= sides.min(dim=-1).values > 0.01
        # 7. several ground truths for one anchor: the highest IoU wins
        masked = torch.full_like(overlaps, -1.0)
        pos_anchor = candidates[is_pos]
        pos_gt = gt_ids[None].expand_as(candidates)[is_pos]
        masked[pos_anchor, pos_gt] = overlaps[pos_anchor, pos_gt]
        best_iou, best_gt = masked.max(dim=1)
        matched = best_iou > -1.0
        assigned[matched] = best_gt[matched] + 1
        return assigned
