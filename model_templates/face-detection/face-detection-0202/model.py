# face-detection-0202: SSD, MobileNetV2 (width 1.0) backbone, 384x384 input.
# OTE's values (docs/templates.md); everything else comes from the bases.
_base_ = [
    '../_base_/models/ssd_mobilenetv2.py', '../_base_/datasets/wider_face.py',
    '../_base_/schedules/sgd_step_40_55_65.py', '../_base_/default_runtime.py',
]

input_size = 384

model = dict(
    bbox_head=dict(
        anchor_generator=dict(
            widths=([9.4 * 1.28, 25.1 * 1.28, 14.7 * 1.28, 34.7 * 1.28],
                    [143.0 * 1.28, 77.4 * 1.28, 128.8 * 1.28, 51.1 * 1.28, 75.6 * 1.28]),
            heights=([15.0 * 1.28, 39.6 * 1.28, 25.5 * 1.28, 63.2 * 1.28],
                     [227.5 * 1.28, 162.9 * 1.28, 124.5 * 1.28, 105.1 * 1.28, 72.6 * 1.28]))))
