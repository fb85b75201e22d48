"""Filter pruning (OTE's ``filter_pruning``) with torch-pruning.

NNCF 3.x has no structured pruning, so this uses torch-pruning: its ``DependencyGraph`` (inside
``tp.pruner.MetaPruner``) finds the groups of coupled channels (a convolution's filters, the BatchNorm
after it, the next layers' input channels, residual additions), ``tp.importance.FPGMImportance`` ranks
them by distance to the geometric median (OTE's ``weight_importance: geometric_median``), and the pruner
removes the lowest-ranked channels physically: the result is a smaller ordinary ``nn.Module``.

The pruned share follows OTE's ``exponential`` schedule from ``pruning_init`` to ``pruning_target``
over ``pruning_steps`` epochs (NNCF's ``exponential_ratio_scheduler``); each epoch start prunes the
channels still needed to reach that epoch's share of the original filters of every group.

Layers kept whole: OTE's ignored scopes (SSD: the head's depthwise convolutions, which tie their
channels to the backbone's output features; FCOS/ATSS: the FPN outputs and the head's towers) and, as
NNCF's default ``prune_last=False`` did, the head's declared ``prediction_layers()`` (class, box and
centerness predictors: their output channels are the predictions).

Ours: the schedule, the mapping of the ignored scopes, the per-step ratio and the shape bookkeeping
(``conv_shapes`` / ``resize_to_shapes``) that rebuilds a pruned network from a checkpoint.
"""

import logging
import re
import warnings

import torch
import torch.nn as nn

from ..engine import distributed as dist_utils
from ..engine.hooks import HookBase

log = logging.getLogger(__name__)

_LAYERS = (nn.Conv2d, nn.BatchNorm2d, nn.GroupNorm, nn.Linear)
_SCOPE_PART = re.compile(r"^(?P<cls>[A-Za-z0-9_]+)\[(?P<name>[^\]]+)\]$")


def pruning_schedule(algorithm):
    """(initial, target, steps) of OTE's filter_pruning dict."""
    params = algorithm.get("params") or {}
    init = float(params.get("pruning_init", algorithm.get("pruning_init", 0.0)))
    target = float(params.get("pruning_target", params.get("pruning_flops_target", 0.5)))
    steps = int(params.get("pruning_steps", params.get("num_init_steps", 100)))
    if params.get("schedule", "exponential") not in ("exponential", "exponential_with_bias", "baseline"):
        raise ValueError(f"filter_pruning schedule '{params.get('schedule')}' is not supported")
    return init, target, steps


def pruning_ratio(schedule, epoch):
    """The share of filters pruned at ``epoch`` (0-based) under ``schedule`` = (init, target, steps)."""
    from nncf.torch.function_hook.pruning.scheduler_fns import exponential_ratio_scheduler
    init, target, steps = schedule
    if target <= init:
        return target
    return float(min(exponential_ratio_scheduler(int(epoch), initial_ratio=init, target_ratio=target,
                                                 target_epoch=max(1, steps)), target))


def scope_to_module_name(scope):
    """NNCF 2.x scope string -> our module name, e.g. ``SingleStageDetector/SSDHead[bbox_head]/
    ModuleList[cls_convs]/Sequential[0]/NNCFConv2d[0]`` -> ``bbox_head.cls_convs.0.0``."""
    names = []
    for part in scope.split("/")[1:]:
        m = _SCOPE_PART.match(part)
        if not m:
            raise ValueError(f"cannot read scope part '{part}' of '{scope}'")
        names.append(m.group("name"))
    return ".".join(names)


def prediction_convs(model):
    """The convolutions whose outputs are the predictions, as the head declares them
    (``prediction_layers()``): their output channels must stay."""
    return list(model.bbox_head.prediction_layers())


def ignored_layers(model, scopes):
    """Modules whose output channels stay: the ignored scopes (mapped to our names) and prediction convs."""
    modules = dict(model.named_modules())
    layers = []
    for scope in scopes or []:
        name = scope_to_module_name(scope)
        if name not in modules:
            raise ValueError(f"ignored scope '{scope}' (module '{name}') is not in the model")
        layers.append(modules[name])
    for conv in prediction_convs(model):
        if conv not in layers:
            layers.append(conv)
    return layers


def prune_filters(model, example_input, step_ratio, scopes):
    """Remove ``step_ratio`` of the channels of every prunable group of ``model`` (in place), ranking
    them with FPGM. Returns the number of parameters removed."""
    import torch_pruning as tp
    if step_ratio <= 0:
        return 0
    before = sum(p.numel() for p in model.parameters())
    was_training = model.training
    model.eval()
    # parameters held outside layers (the SSD head's loss weights, FCOS/ATSS's per-level scales) are left alone
    extra = [p for m in model.modules() if not isinstance(m, _LAYERS) for p in m.parameters(recurse=False)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch-pruning warns about the loss weights (not in the graph)
        pruner = tp.pruner.MetaPruner(
            model, example_input, importance=tp.importance.FPGMImportance(), pruning_ratio=float(step_ratio),
            ignored_layers=ignored_layers(model, scopes) + extra, iterative_steps=1)
        pruner.step()
    model.train(was_training)
    return before - sum(p.numel() for p in model.parameters())


def conv_shapes(model):
    """{module name: [in, out, groups]} of every Conv2d, [features] of every BatchNorm2d and [channels, groups]
    of every GroupNorm (FCOS/ATSS towers)."""
    shapes = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            shapes[name] = [int(m.in_channels), int(m.out_channels), int(m.groups)]
        elif isinstance(m, nn.BatchNorm2d):
            shapes[name] = [int(m.num_features)]
        elif isinstance(m, nn.GroupNorm):
            shapes[name] = [int(m.num_channels), int(m.num_groups)]
    return shapes


@torch.no_grad()
def resize_to_shapes(model, shapes):
    """Give the Conv2d / BatchNorm2d / GroupNorm layers of a freshly built ``model`` the pruned ``shapes`` (values to
    be loaded from the checkpoint's state_dict afterwards)."""
    modules = dict(model.named_modules())
    for name, shape in shapes.items():
        m = modules.get(name)
        if isinstance(m, nn.Conv2d):
            cin, cout, groups = shape
            if (m.in_channels, m.out_channels, m.groups) == (cin, cout, groups):
                continue
            m.in_channels, m.out_channels, m.groups = cin, cout, groups
            m.weight = nn.Parameter(m.weight.new_empty((cout, cin // groups) + tuple(m.kernel_size)))
            if m.bias is not None:
                m.bias = nn.Parameter(m.bias.new_empty(cout))
        elif isinstance(m, nn.BatchNorm2d):
            (n,) = shape
            if m.num_features == n:
                continue
            m.num_features = n
            if m.weight is not None:
                m.weight = nn.Parameter(m.weight.new_empty(n))
                m.bias = nn.Parameter(m.bias.new_empty(n))
            if m.running_mean is not None:
                m.running_mean = m.running_mean.new_zeros(n)
                m.running_var = m.running_var.new_ones(n)
        elif isinstance(m, nn.GroupNorm):
            n, groups = shape
            if (m.num_channels, m.num_groups) == (n, groups):
                continue
            m.num_channels, m.num_groups = n, groups
            if m.weight is not None:
                m.weight = nn.Parameter(m.weight.new_empty(n))
                m.bias = nn.Parameter(m.bias.new_empty(n))
        elif m is None:
            raise ValueError(f"pruned layer '{name}' is not in the model")
    return model


class PruningHook(HookBase):
    """Prunes to the scheduled share at each epoch start; the optimizer then gets the new parameters
    (momentum of the pruned tensors restarts), and a DDP wrapper is rebuilt."""

    def __init__(self, plugin):
        self.plugin = plugin

    def before_epoch(self):
        t = self.trainer
        if self.plugin.state.get("quantized"):
            return  # structure frozen once quantized
        target = pruning_ratio(self.plugin.pruning_schedule, t.epoch)
        done = float(self.plugin.state.get("pruning_ratio", 0.0))
        if target <= done + 1e-6:
            return
        step = 1.0 - (1.0 - target) / (1.0 - done)
        removed = prune_filters(t.model, self.plugin.example_input(t.device), step, self.plugin.ignored_scopes)
        self.plugin.state["pruning_ratio"] = target
        refresh_trainer(t)
        self.plugin.update_meta()
        log.info("filter pruning: %.0f%% of the filters pruned from epoch %d (%d parameters removed, %d left)",
                 100 * target, t.epoch + 1, removed, sum(p.numel() for p in t.model.parameters()))

    def after_epoch(self):
        self.trainer.storage["epoch"]["pruning_ratio"] = float(self.plugin.state.get("pruning_ratio", 0.0))


def refresh_trainer(trainer):
    """After the model's parameters were replaced: point the optimizer at them (dropping state of the old
    tensors) and rebuild the DDP wrapper, if any."""
    model = trainer.model
    memory_format = getattr(trainer, "memory_format", None)
    if memory_format is not None:
        model.to(memory_format=memory_format)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = trainer.optimizer
    opt.state.clear()
    groups = opt.param_groups
    groups[0]["params"] = params
    del groups[1:]
    net = getattr(trainer, "net", model)
    if net is not model and isinstance(net, torch.nn.parallel.DistributedDataParallel):
        trainer.net = dist_utils.wrap_ddp(model, trainer.device, replaces=net)
