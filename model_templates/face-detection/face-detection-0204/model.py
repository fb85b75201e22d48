# face-detection-0204: SSD, MobileNetV2 (width 1.0) backbone, 448x448 input.
# OTE's values (docs/templates.md); everything else is the shared SSD base.
_base_ = '../_base_/ssd_face_detection.py'

input_size = 448

model = dict(
    bbox_head=dict(
        anchor_generator=dict(
            widths=([14.0373, 37.4827, 21.952, 51.8187],
                    [213.5467, 115.584, 192.3413, 76.3093, 112.896]),
            heights=([22.4, 59.136, 38.08, 94.3787],
                     [339.7333, 243.264, 185.92, 156.9493, 108.416]))))

data = dict(samples_per_gpu=32, workers_per_gpu=4)
