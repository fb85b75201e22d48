# Training data: face boxes in COCO JSON (--train-ann-files / --train-data-roots give the files; WIDER FACE
# is converted by tools/wider_to_coco.py), with OTE's SSD-style augmentation.
# The Resize step gets its size from the template's top-level `input_size`, and the Normalize step its
# values from the top-level `img_norm_cfg` (eval and export read the same two), so neither is written here.

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
    dict(type='Resize', keep_ratio=False),
    dict(type='Normalize'),
    dict(type='RandomFlip', flip_ratio=0.5),
    dict(type='DefaultFormatBundle'),
    dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels']),
]

data = dict(
    workers_per_gpu=2,
    train=dict(
        type='RepeatDataset',
        times=2,
        dataset=dict(
            type='CocoDataset',
            # faces narrower or shorter than this (original pixels) are not training targets
            min_size=17,
            pipeline=train_pipeline)))
