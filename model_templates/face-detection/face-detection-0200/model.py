# face-detection-0200: SSD, MobileNetV2 (width 1.0) backbone, 256x256 input.
# OTE's values (docs/templates.md); everything else is the shared SSD base.
_base_ = '../_base_/ssd_face_detection.py'

input_size = 256

model = dict(
    bbox_head=dict(
        anchor_generator=dict(
            widths=([8.0213, 21.4187, 12.544, 29.6107],
                    [122.0267, 66.048, 109.9093, 43.6053, 64.512]),
            heights=([12.8, 33.792, 21.76, 53.9307],
                     [194.1333, 139.008, 106.24, 89.6853, 61.952]))))

data = dict(samples_per_gpu=65, workers_per_gpu=2)
