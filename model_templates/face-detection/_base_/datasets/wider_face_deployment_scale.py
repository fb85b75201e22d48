# Training data as wider_face.py, with the deployment-scale crop instead of SSD's MinIoURandomCrop + Resize:
# each frame is cropped and rescaled so that its faces come out at the size the deployed network sees them
# (the frame letterboxed or stretched into the input size), times a zoom drawn log-uniformly from
# scale_range (ote_detection/data/scale_crop.py; SCRFD's random crops with a scale range, relative to the
# deployment scale). For fine-tuning at the camera's size (train.py --input-size 960x); the photometric
# part (PhotoMetricDistortion), the flip and the normalisation stay OTE's. Measured against OTE's pipeline
# in docs/finetune.md (benchmarks/bench_finetune.py).
# Use it by naming this file instead of wider_face.py in the _base_ list of the work dir's model.py.
_base_ = ['wider_face.py']

train_pipeline = [
    dict(type='LoadImageFromFile', to_float32=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PhotoMetricDistortion',
         brightness_delta=32,
         contrast_range=(0.5, 1.5),
         saturation_range=(0.5, 1.5),
         hue_delta=18),
    # the input size and letterboxing come from the run (input_size, train.py --input-size)
    dict(type='DeploymentScaleCrop', scale_range=(0.8, 1.25)),
    dict(type='Normalize'),
    dict(type='RandomFlip', flip_ratio=0.5),
    dict(type='DefaultFormatBundle'),
    dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels']),
]

data = dict(train=dict(dataset=dict(pipeline=train_pipeline)))
