"""Magnitude sparsity with NNCF 3.x (OTE's ``magnitude_sparsity``).

``nncf.prune(model, PruneMode.UNSTRUCTURED_MAGNITUDE_GLOBAL, ratio, examples_inputs)`` puts a binary
mask on every convolution weight; the threshold is global over the weights normalised by their L2 norm,
as NNCF 2.x's default ``normed_abs`` importance with a global level. The level follows OTE's
``multistep`` schedule (``multistep_sparsity_levels`` switched at the epochs ``multistep_steps``) through
NNCF's ``multi_step_ratio_scheduler``; ``nncf...magnitude.algo.update_pruning_ratio`` recomputes the
masks at each epoch start (NNCF 2.x's ``epoch_step``). Ours: the mapping of the config and the hook.
"""

import logging

import torch

from ..engine import distributed as dist_utils
from ..engine.hooks import HookBase
from .env import import_nncf

log = logging.getLogger(__name__)


def sparsity_schedule(algorithm):
    """{epoch: level} of OTE's magnitude_sparsity dict (NNCF's multi-step form, with epoch 0)."""
    params = algorithm.get("params") or {}
    schedule = params.get("schedule", "multistep")
    if schedule != "multistep":
        levels = [float(params.get("sparsity_target", params.get("sparsity_init", 0.5)))]
        steps = []
    else:
        levels = [float(v) for v in params.get("multistep_sparsity_levels", [0.1, 0.5])]
        steps = [int(v) for v in params.get("multistep_steps", [90])]
    if len(levels) != len(steps) + 1:
        raise ValueError("multistep_sparsity_levels needs one more entry than multistep_steps")
    return dict(zip([0] + steps, levels))


def sparsity_level(schedule, epoch):
    from nncf.torch.function_hook.pruning.scheduler_fns import multi_step_ratio_scheduler
    return float(multi_step_ratio_scheduler(int(epoch), steps=schedule))


def apply_sparsity(model, example_input, level):
    nncf = import_nncf()
    model = nncf.prune(model, nncf.PruneMode.UNSTRUCTURED_MAGNITUDE_GLOBAL, ratio=float(level),
                       examples_inputs=example_input)
    sort_hooks(model)
    return model


def sort_hooks(model):
    """Put the NNCF hooks of ``model`` in the order of their names. NNCF 3.4's ``nncf.prune`` inserts its
    masks in an order that follows Python's string hashing, which differs from process to process
    (PYTHONHASHSEED); DDP pairs buffers across processes by position (its broadcast at construction and
    before every forward), so under compress.py --gpu-num 2 each rank got masks of other layers. Hooks of
    one operation keep their order (they run in it)."""
    from nncf.torch.function_hook.wrapper import get_hook_storage
    storage = get_hook_storage(model)
    for hooks in (storage.pre_hooks, storage.post_hooks):
        items = sorted(hooks.items())
        hooks.clear()
        hooks.update(items)


@torch.no_grad()
def set_sparsity_level(model, level):
    nncf = import_nncf()
    from nncf.torch.function_hook.pruning.magnitude.algo import update_pruning_ratio
    # NNCF 3.4 flattens the weights with .view(-1), which fails on channels_last tensors (the trainer's
    # CPU layout): switch to the contiguous layout for the update (same Parameter objects) and back
    channels_last = any(p.dim() == 4 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last)
                        for p in model.parameters())
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    update_pruning_ratio(model, nncf.PruneMode.UNSTRUCTURED_MAGNITUDE_GLOBAL, float(level))
    if channels_last:
        model.to(memory_format=torch.channels_last)


def sparsity_stats(model):
    """{'sparsity_level': share of zero mask entries over all masked weights, 'masked_tensors': n}."""
    from nncf.torch.function_hook.pruning.magnitude.algo import get_pruned_modules
    masks = get_pruned_modules(model)
    total = sum(m.binary_mask.numel() for m in masks.values())
    zeros = sum(int((~m.binary_mask.bool()).sum()) for m in masks.values())
    return {"sparsity_level": zeros / max(total, 1), "masked_tensors": len(masks)}


class SparsityHook(HookBase):
    """Sets the scheduled sparsity level at the start of every epoch."""

    def __init__(self, plugin):
        self.plugin = plugin

    def before_epoch(self):
        level = sparsity_level(self.plugin.sparsity_schedule, self.trainer.epoch)
        if level != self.plugin.state.get("sparsity_level"):
            set_sparsity_level(self.trainer.model, level)
            self.plugin.state["sparsity_level"] = level
            log.info("sparsity: level %.2f from epoch %d", level, self.trainer.epoch + 1)
        self.plugin.update_meta()

    def after_epoch(self):
        stats = sparsity_stats(self.trainer.model)
        self.trainer.storage["epoch"]["sparsity_level"] = stats["sparsity_level"]
        if dist_utils.is_main():  # the level reached (the epoch's log line is written before this hook runs)
            log.info("sparsity: %.1f%% of the weights of %d masked tensors are zero after epoch %d (scheduled "
                     "level %.2f)", 100 * stats["sparsity_level"], stats["masked_tensors"], self.trainer.epoch + 1,
                     float(self.plugin.state.get("sparsity_level", 0.0)))
