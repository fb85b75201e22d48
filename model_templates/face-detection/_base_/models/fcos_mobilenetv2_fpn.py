# FCOS (anchor-free) face detector: MobileNetV2 (width 1.0) backbone + 5-level FPN (OTE's face-detection-0205).
# Every value is the one of OTE's model template (openvinotoolkit/training_extensions, OTEDetection v2.9.1);
# docs/templates.md says which commit and file each one was read from.

model = dict(
    type='FCOS',
    backbone=dict(
        type='mobilenetv2_w1',
        out_indices=(3, 4, 5),
        frozen_stages=-1,
        norm_eval=False,
        pretrained=True),
    neck=dict(
        type='FPN',
        in_channels=[32, 96, 320],  # OTE: int(width_mult * c) with width_mult = 1.0
        out_channels=48,
        start_level=0,
        add_extra_convs=True,
        # False: the two extra levels are computed from the last FPN output (P5),
        # not from the raw backbone feature.
        extra_convs_on_inputs=False,
        num_outs=5,
        relu_before_extra_convs=True),
    bbox_head=dict(
        type='FCOSHead',
        num_classes=1,
        in_channels=48,
        stacked_convs=4,
        feat_channels=32,
        strides=(8, 16, 32, 64, 128),
        loss_cls=dict(
            type='FocalLoss',
            use_sigmoid=True,
            gamma=2.0,
            alpha=0.25,
            loss_weight=1.0),
        loss_bbox=dict(type='IoULoss', loss_weight=1.0),
        loss_centerness=dict(
            type='CrossEntropyLoss',
            use_sigmoid=True,
            loss_weight=1.0)),
    # OTE's file also has the SSD templates' train_cfg here (MaxIoUAssigner, smoothl1_beta, ...):
    # the FCOS head reads none of it (it assigns targets by regression ranges), so it is left out
    # (docs/templates.md lists the values).
    test_cfg=dict(
        nms=dict(type='nms', iou_threshold=0.45),
        min_bbox_size=0,
        score_thr=0.02,
        max_per_img=200))
