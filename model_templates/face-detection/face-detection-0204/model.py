# face-detection-0204: SSD, MobileNetV2 (width 1.0) backbone, 448x448 input.
# OTE's values (docs/templates.md); everything else comes from the bases.
_base_ = [
    '../_base_/models/ssd_mobilenetv2.py', '../_base_/datasets/wider_face.py',
    '../_base_/schedules/sgd_step_40_55_65.py', '../_base_/default_runtime.py',
]

input_size = 448

model = dict(
    bbox_head=dict(
        anchor_generator=dict(
            widths=([14.0373, 37.4827, 21.952, 51.8187],
                    [213.5467, 115.584, 192.3413, 76.3093, 112.896]),
            heights=([22.4, 59.136, 38.08, 94.3787],
                     [339.7333, 243.264, 185.92, 156.9493, 108.416]))))

data = dict(workers_per_gpu=4)
