# ATSS face detector: ResNet-152 (pytorchcv 'b' variant) backbone + RSSH-FPN neck (FPN whose 5 outputs each
# pass a small context module) (OTE's face-detection-0206).
# Every value is the one of OTE's model template (openvinotoolkit/training_extensions, OTEDetection v2.9.1);
# docs/templates.md says which commit and file each one was read from.

model = dict(
    type='ATSS',
    backbone=dict(
        type='resnet152b',
        out_indices=(1, 2, 3, 4),
        frozen_stages=-1,
        norm_eval=False,
        pretrained=True),
    neck=dict(
        type='RSSH_FPN',
        in_channels=[256, 512, 1024, 2048],  # OTE: int(width_mult * c) with width_mult = 1.0
        out_channels=256,
        start_level=0,
        add_extra_convs=True,
        # False: the extra level is computed from the last FPN output (P5),
        # not from the raw backbone feature.
        extra_convs_on_inputs=False,
        num_outs=5,
        relu_before_extra_convs=True),
    bbox_head=dict(
        type='ATSSHead',
        num_classes=1,
        in_channels=256,
        stacked_convs=4,
        feat_channels=128,
        # One square anchor per location: side = 8 * stride.
        anchor_generator=dict(
            type='AnchorGenerator',
            ratios=[1.0],
            octave_base_scale=8,
            scales_per_octave=1,
            strides=[4, 8, 16, 32, 64]),
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder',
            target_means=[0.0, 0.0, 0.0, 0.0],
            target_stds=[0.1, 0.1, 0.2, 0.2]),
        loss_cls=dict(
            type='FocalLoss',
            use_sigmoid=True,
            gamma=2.0,
            alpha=0.25,
            loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
        loss_centerness=dict(
            type='CrossEntropyLoss',
            use_sigmoid=True,
            loss_weight=1.0)),
    train_cfg=dict(
        assigner=dict(type='ATSSAssigner', topk=9),
        allowed_border=-1,
        pos_weight=-1),
    test_cfg=dict(
        nms=dict(type='nms', iou_threshold=0.5),
        min_bbox_size=0,
        score_thr=0.02,
        max_per_img=750))
