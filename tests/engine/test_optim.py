"""engine/optim.py: the optimizers and the mmcv learning-rate policies (step, cosine, fixed, linear warm-up)."""

import math

import pytest
import torch

from ote_detection.engine.optim import build_lr_scheduler, build_optimizer
from ote_detection.utils.errors import OteError


def _lr_curve(lr_config, iters_per_epoch=3, epochs=6):
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, dict(type="SGD", lr=0.1, momentum=0.9))
    sched = build_lr_scheduler(opt, lr_config, iters_per_epoch, epochs)
    lrs = []
    for _ in range(iters_per_epoch * epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_lr_policies_match_mmcv_closed_forms():
    warm = dict(warmup="linear", warmup_iters=4, warmup_ratio=0.25)
    lrs = _lr_curve(dict(policy="step", step=[2, 4], **warm))
    for i, lr in enumerate(lrs):
        epoch = i // 3
        expected = 0.1 * 0.1 ** sum(epoch >= s for s in (2, 4))
        if i < 4:
            expected *= 1 - (1 - i / 4) * (1 - 0.25)
        assert lr == pytest.approx(expected, rel=1e-6), (i, lr, expected)
    lrs = _lr_curve(dict(policy="cosine", **warm))
    for i, lr in enumerate(lrs):
        expected = 0.1 * (1 + math.cos(math.pi * i / 18)) / 2 * ((1 - (1 - i / 4) * 0.75) if i < 4 else 1)
        assert lr == pytest.approx(expected, rel=1e-5, abs=1e-9), (i, lr, expected)
    assert _lr_curve(dict(policy="fixed")) == [0.1] * 18
    for kind in ("Adam", "AdamW"):
        assert type(build_optimizer(torch.nn.Linear(2, 2), dict(type=kind, lr=1e-3))).__name__ == kind
    with pytest.raises(OteError, match="optimizer 'RMSprop' is not supported"):
        build_optimizer(torch.nn.Linear(2, 2), dict(type="RMSprop", lr=1e-3))
    with pytest.raises(OteError, match="policy 'poly' is not supported"):
        _lr_curve(dict(policy="poly"))
