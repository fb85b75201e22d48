"""mmdetection's MaxIoUAssigner (the SSD templates)."""

import torch
from torchvision.ops import box_iou

from ...registry import ASSIGNERS


@ASSIGNERS.register()
class MaxIoUAssigner:
    """mmdetection's MaxIoUAssigner for one image, vectorised over anchors and boxes.

    Returns a long tensor over anchors: 0 = background, k > 0 = matched to ground truth ``k - 1``,
    -1 = ignored. An anchor is negative when its best IoU is in [0, neg_iou_thr), positive when it is
    >= pos_iou_thr; then every ground truth whose best IoU is >= min_pos_iou also takes its best anchor
    (all anchors that tie it when ``gt_max_assign_all``).
    """

    def __init__(self, pos_iou_thr, neg_iou_thr, min_pos_iou=0.0, gt_max_assign_all=True,
                 ignore_iof_thr=-1, ignore_wrt_candidates=True, match_low_quality=True):
        self.pos_iou_thr = pos_iou_thr
        self.neg_iou_thr = neg_iou_thr
        self.min_pos_iou = min_pos_iou
        self.gt_max_assign_all = gt_max_assign_all
        self.match_low_quality = match_low_quality

    def assign(self, anchors, gt_boxes):
        num_anchors = anchors.shape[0]
        if gt_boxes.numel() == 0:
            return anchors.new_zeros(num_anchors, dtype=torch.long)
        overlaps = box_iou(gt_boxes, anchors)  # [G, A]
        max_overlaps, argmax = overlaps.max(dim=0)
        assigned = anchors.new_full((num_anchors,), -1, dtype=torch.long)
        assigned[(max_overlaps >= 0) & (max_overlaps < self.neg_iou_thr)] = 0
        positive = max_overlaps >= self.pos_iou_thr
        assigned[positive] = argmax[positive] + 1
        if self.match_low_quality:
            gt_max, gt_argmax = overlaps.max(dim=1)
            gt_ids = torch.arange(1, gt_boxes.shape[0] + 1, device=anchors.device)
            ok = gt_max >= self.min_pos_iou
            if self.gt_max_assign_all:
                ties = (overlaps == gt_max[:, None]) & ok[:, None]
                anchor_has_tie = ties.any(dim=0)
                # the last ground truth that ties an anchor wins, as in the sequential original
                last = (ties * gt_ids[:, None]).max(dim=0).values
                assigned[anchor_has_tie] = last[anchor_has_tie]
            else:
                # sequential semantics: a later ground truth overrides an earlier one on the same anchor
                order = torch.nonzero(ok).flatten()
                winner = anchors.new_zeros(num_anchors, dtype=torch.long)
                winner.scatter_reduce_(0, gt_argmax[order], gt_ids[order], reduce="amax")
                taken = winner > 0
                assigned[taken] = winner[taken]
        return assigned
