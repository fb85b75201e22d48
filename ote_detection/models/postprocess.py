"""Post-processing shared by every head: score threshold, per-class top-k, class-aware NMS."""

import torch
from torchvision.ops import batched_nms


def multiclass_nms(boxes, scores, test_cfg):
    """One image: boxes [A, 4] (x1, y1, x2, y2), scores [A, C] (per-class probabilities, no background).

    ``test_cfg`` keys (mmdetection's names): ``score_thr`` (keep scores above it), ``nms_pre_classwise``
    (keep the best k per class before NMS; <= 0: all), ``nms.iou_threshold``, ``max_per_img`` (<= 0: all).
    Returns (boxes [N, 4], scores [N], labels [N]) best score first, the fields of ``heads.base.Detections``.
    """
    cfg = test_cfg or {}
    score_thr = float(cfg.get("score_thr", 0.0))
    pre = int(cfg.get("nms_pre_classwise", -1) or -1)
    parts_s, parts_b, parts_l = [], [], []
    for c in range(scores.shape[1]):  # classes, not boxes: one iteration for faces
        s = scores[:, c]
        keep = s > score_thr
        s, b = s[keep], boxes[keep]
        if 0 < pre < s.numel():
            s, idx = s.topk(pre)
            b = b[idx]
        parts_s.append(s)
        parts_b.append(b)
        parts_l.append(torch.full_like(s, c, dtype=torch.long))
    s, b, labels = torch.cat(parts_s), torch.cat(parts_b), torch.cat(parts_l)
    keep = batched_nms(b.float(), s.float(), labels, float((cfg.get("nms") or {}).get("iou_threshold", 0.45)))
    max_per_img = int(cfg.get("max_per_img", -1) or -1)
    if max_per_img > 0:
        keep = keep[:max_per_img]
    return b[keep], s[keep], labels[keep]
