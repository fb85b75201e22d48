# face-detection-0200: SSD, MobileNetV2 (width 1.0) backbone, 256x256 input.
# OTE's values (docs/templates.md); everything else comes from the bases.
_base_ = [
    '../_base_/models/ssd_mobilenetv2.py', '../_base_/datasets/wider_face.py',
    '../_base_/schedules/sgd_step_40_55_65.py', '../_base_/default_runtime.py',
]

input_size = 256

model = dict(
    bbox_head=dict(
        anchor_generator=dict(
            widths=([8.0213, 21.4187, 12.544, 29.6107],
                    [122.0267, 66.048, 109.9093, 43.6053, 64.512]),
            heights=([12.8, 33.792, 21.76, 53.9307],
                     [194.1333, 139.008, 106.24, 89.6853, 61.952]))))
