# SSD face detector: MobileNetV2 (width 1.0) backbone, no neck, two-level SSD head with clustered anchors
# (OTE's face-detection-0200/0202/0204/0207; 0207 swaps the backbone). The anchor sizes are in pixels of the
# network input, so each template sets its own `widths` / `heights` next to its `input_size`
# (tools/cluster_anchors.py rewrites them there).
# Every value is the one of OTE's model templates (openvinotoolkit/training_extensions, OTEDetection
# v2.9.1); docs/templates.md says which commit and file each one was read from.

model = dict(
    type='SingleStageDetector',
    backbone=dict(
        type='mobilenetv2_w1',
        out_indices=(4, 5),
        frozen_stages=-1,
        norm_eval=False,
        pretrained=True),
    neck=None,
    bbox_head=dict(
        type='SSDHead',
        num_classes=1,
        in_channels=(96, 320),
        # Two feature levels (stride 16 and 32), 4 anchors on the first level and 5 on the second.
        # face-detection-0200's anchors (clustered on WIDER FACE at 256x256) as the default, so that a
        # model.py that redefines `model` keeps working anchors; each SSD template sets its own
        anchor_generator=dict(
            type='SSDAnchorGeneratorClustered',
            strides=(16, 32),
            widths=([8.0213, 21.4187, 12.544, 29.6107],
                    [122.0267, 66.048, 109.9093, 43.6053, 64.512]),
            heights=([12.8, 33.792, 21.76, 53.9307],
                     [194.1333, 139.008, 106.24, 89.6853, 61.952])),
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder',
            target_means=(0.0, 0.0, 0.0, 0.0),
            target_stds=(0.1, 0.1, 0.2, 0.2)),
        depthwise_heads=True,
        depthwise_heads_activations='relu',
        loss_balancing=True),
    train_cfg=dict(
        assigner=dict(
            type='MaxIoUAssigner',
            pos_iou_thr=0.4,
            neg_iou_thr=0.4,
            min_pos_iou=0.0,
            ignore_iof_thr=-1,
            gt_max_assign_all=False),
        smoothl1_beta=1.0,
        neg_pos_ratio=3),
    test_cfg=dict(
        nms=dict(type='nms', iou_threshold=0.45),
        min_bbox_size=0,
        score_thr=0.02,
        max_per_img=200,
        nms_pre_classwise=200))
