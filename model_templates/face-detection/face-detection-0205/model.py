# face-detection-0205: FCOS (anchor-free) face detector, MobileNetV2 (width 1.0) backbone + 5-level FPN,
# 416x416 input. OTE's values (docs/templates.md); everything else comes from the bases.
_base_ = [
    '../_base_/models/fcos_mobilenetv2_fpn.py', '../_base_/datasets/wider_face.py',
    '../_base_/schedules/sgd_step_40_55_65.py', '../_base_/default_runtime.py',
]

input_size = 416

data = dict(workers_per_gpu=4, train=dict(dataset=dict(min_size=10)))

log_config = dict(interval=100)
