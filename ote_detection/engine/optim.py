"""Optimizer and learning-rate policy from the config's ``optimizer`` and ``lr_config`` (mmcv's names),
built from ``torch.optim`` and ``torch.optim.lr_scheduler``.

* ``optimizer = dict(type='SGD' | 'Adam' | 'AdamW', lr=..., **torch_kwargs)``
* ``lr_config = dict(policy='step', step=[epochs], gamma=0.1 | policy='cosine', min_lr=0 |
  policy='fixed', warmup='linear' | None, warmup_iters=N, warmup_ratio=r)``

The schedule is stepped once per iteration; ``step`` milestones are in epochs as in mmcv. The linear
warm-up multiplies the policy's rate by ``1 - (1 - i / warmup_iters) * (1 - warmup_ratio)``, which is
``torch.optim.lr_scheduler.LinearLR`` chained with the policy.
"""

import torch
from torch.optim import lr_scheduler

from ..utils.errors import OteError

OPTIMIZERS = {"SGD": torch.optim.SGD, "Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}
POLICIES = ("step", "cosine", "fixed")


def build_optimizer(model, optimizer_cfg):
    cfg = dict(optimizer_cfg)
    kind = cfg.pop("type", "SGD")
    if kind not in OPTIMIZERS:
        raise OteError(f"model.py: optimizer '{kind}' is not supported (one of {', '.join(OPTIMIZERS)})")
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return OPTIMIZERS[kind](params, **cfg)
    except TypeError as exc:
        raise OteError(f"model.py: bad optimizer arguments for {kind}: {exc}") from exc


def check_lr_config(lr_config):
    cfg = dict(lr_config)
    policy = cfg.get("policy", "step")
    if policy not in POLICIES:
        raise OteError(f"model.py: lr_config policy '{policy}' is not supported (one of {', '.join(POLICIES)})")
    if cfg.get("warmup") not in (None, "linear"):
        raise OteError(f"model.py: lr_config warmup '{cfg['warmup']}' is not supported (only 'linear')")
    return cfg


def build_lr_scheduler(optimizer, lr_config, iters_per_epoch, max_epochs):
    """A per-iteration ``torch.optim.lr_scheduler`` for the whole run (iteration 0 = epoch 0)."""
    cfg = check_lr_config(lr_config)
    policy = cfg.get("policy", "step")
    if policy == "step":
        steps = cfg.get("step", [])
        steps = [steps] if isinstance(steps, int) else list(steps)
        main = lr_scheduler.MultiStepLR(optimizer, [int(s) * iters_per_epoch for s in steps],
                                        gamma=float(cfg.get("gamma", 0.1)))
    elif policy == "cosine":
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, max_epochs * iters_per_epoch),
                                              eta_min=float(cfg.get("min_lr", 0.0)))
    else:
        main = lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    warmup_iters = int(cfg.get("warmup_iters", 0) or 0)
    if cfg.get("warmup") == "linear" and warmup_iters > 0:
        warm = lr_scheduler.LinearLR(optimizer, start_factor=float(cfg.get("warmup_ratio", 1.0)), end_factor=1.0,
                                     total_iters=warmup_iters)
        return lr_scheduler.ChainedScheduler([main, warm], optimizer=optimizer)
    return main


def set_base_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr
        group["initial_lr"] = lr
