# face-detection-0205: FCOS (anchor-free) face detector, MobileNetV2 (width 1.0)
# backbone + 5-level FPN, 416x416 input.
# Every value below is the one of OTE's model template of the same name
# (openvinotoolkit/training_extensions, OTEDetection v2.9.1); docs/templates.md says
# which commit and file each one was read from. ote-face's config loader exec()s this
# file and uses its top-level names; the data paths are placeholders that the work-dir
# scripts replace with the command-line annotation files and image roots.

input_size = 416
width_mult = 1.0

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
        in_channels=[int(width_mult * 32), int(width_mult * 96), int(width_mult * 320)],
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

# ---- data -------------------------------------------------------------------
dataset_type = 'CocoDataset'
data_root = 'data/WIDERFace/'
# Pixels are only scaled to [0, 1] (BGR -> RGB first); no mean subtraction.
img_norm_cfg = dict(mean=[0, 0, 0], std=[255, 255, 255], to_rgb=True)

train_pipeline = [
    dict(type='LoadImageFromFile', to_float32=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PhotoMetricDistortion',
         brightness_delta=32,
         contrast_range=(0.5, 1.5),
         saturation_range=(0.5, 1.5),
         hue_delta=18),
    dict(type='MinIoURandomCrop',
         min_ious=(0.1, 0.3, 0.5, 0.7, 0.9),
         min_crop_size=0.1),
    dict(type='Resize', img_scale=(input_size, input_size), keep_ratio=False),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='RandomFlip', flip_ratio=0.5),
    dict(type='DefaultFormatBundle'),
    dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels']),
]

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiScaleFlipAug',
         img_scale=(input_size, input_size),
         flip=False,
         transforms=[
             dict(type='Resize', keep_ratio=False),
             dict(type='Normalize', **img_norm_cfg),
             dict(type='ImageToTensor', keys=['img']),
             dict(type='Collect', keys=['img']),
         ]),
]

data = dict(
    samples_per_gpu=32,
    workers_per_gpu=4,
    train=dict(
        type='RepeatDataset',
        times=2,
        dataset=dict(
            type=dataset_type,
            classes=('face',),
            ann_file=data_root + '/train.json',
            min_size=10,
            img_prefix=data_root,
            pipeline=train_pipeline)),
    val=dict(
        type=dataset_type,
        classes=('face',),
        ann_file=data_root + '/val.json',
        img_prefix=data_root,
        test_mode=True,
        pipeline=test_pipeline),
    test=dict(
        type=dataset_type,
        classes=('face',),
        ann_file=data_root + '/val.json',
        img_prefix=data_root,
        test_mode=True,
        pipeline=test_pipeline))

# ---- optimisation schedule (epochs) -------------------------------------------
optimizer = dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=0.0005)
optimizer_config = dict()
lr_config = dict(
    policy='step',
    warmup='linear',
    warmup_iters=1200,
    warmup_ratio=1.0 / 3,
    step=[40, 55, 65])

# ---- runtime ------------------------------------------------------------------
log_config = dict(
    interval=100,
    hooks=[
        dict(type='TextLoggerHook'),
        dict(type='TensorboardLoggerHook'),
    ])
