# OTE's schedule of all six face-detection templates: SGD, linear warm-up over 1200 iterations, the learning
# rate divided by 10 at epochs 40, 55 and 65. template.yaml's hyper_parameters.basic gives the base learning
# rate (it replaces `lr`), the batch size and the number of epochs.

optimizer = dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=0.0005)
optimizer_config = dict()  # dict(grad_clip=dict(max_norm=..., norm_type=2)) clips the gradients
lr_config = dict(
    policy='step',
    warmup='linear',
    warmup_iters=1200,
    warmup_ratio=1.0 / 3,
    step=[40, 55, 65])
