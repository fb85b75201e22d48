# face-detection-0206: ATSS face detector, ResNet-152 backbone + RSSH-FPN neck, 640x640 input.
# OTE's values (docs/templates.md); everything else comes from the bases.
_base_ = [
    '../_base_/models/atss_resnet152_rssh_fpn.py', '../_base_/datasets/wider_face.py',
    '../_base_/schedules/sgd_step_40_55_65.py', '../_base_/default_runtime.py',
]

input_size = 640

# ImageNet mean/std normalisation (after BGR -> RGB), unlike the other templates.
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)

data = dict(workers_per_gpu=3, train=dict(dataset=dict(min_size=0)))

# Gradients are clipped to a global L2 norm of 35.
optimizer_config = dict(grad_clip=dict(max_norm=35, norm_type=2))
