"""``CompressionPlugin``: compression as a training plugin (see ``engine/plugin.py``), and the rebuild of a
compressed checkpoint's model.

Order of the algorithms (OTE merged the NNCF configs of all enabled parts into one compressed model;
with NNCF 3.x and torch-pruning they are applied one after the other):

1. filter pruning changes the network's shapes, so it comes first; with quantization it runs its whole
   schedule on the float model, and quantization starts at the epoch where the pruning target is reached
   (``pruning_steps``, at the latest the last epoch): fake-quantizers are then set up for the final
   shapes;
2. sparsity masks (``nncf.prune``) go in at the start and keep following their schedule;
3. quantization (``nncf.quantize``) comes last, on top of the masks, so that it calibrates the sparse
   weights; the exported IR then has FakeQuantize ops after the masked weights.

Checkpoint meta ``compression``: the parts, the merged settings, the schedule state, NNCF's own
serialised config (``nncf.torch.get_config``: which hooks sit where) and the pruned layer shapes;
``restore_compressed_model`` rebuilds the structure from it and loads the state_dict.
"""

import json
import logging

import torch

from ..engine.hooks import HookBase
from ..engine.plugin import TrainingPlugin
from ..artefacts.formats import CheckpointMeta
from ..utils.errors import OteError
from .config import ALGORITHM_OF_PART, apply_to_model_config
from .pruning import PruningHook, conv_shapes, prune_filters, pruning_schedule, refresh_trainer, resize_to_shapes
from .quantization import (collect_batches, collect_images, freeze_batchnorm, is_nncf_model, plain_images,
                           quantization_options, quantization_params, quantize_model)
from .sparsity import SparsityHook, apply_sparsity, set_sparsity_level, sparsity_level, sparsity_schedule

log = logging.getLogger(__name__)


def _plain(obj):
    """JSON round trip: enums -> their values, tuples -> lists (checkpoints load with weights_only)."""
    return json.loads(json.dumps(obj, default=lambda o: getattr(o, "value", str(o))))


def _set_option(options, key, value):
    if isinstance(options, dict):
        options[key] = value
    else:
        setattr(options, key, value)


def _get_option(options, key):
    return options.get(key) if isinstance(options, dict) else getattr(options, key, None)


class CompressionPlugin(TrainingPlugin):
    """Compression of the enabled parts of ``settings`` (``config.CompressionSettings``)."""

    def __init__(self, settings):
        self.settings = settings
        self.parts = list(settings.parts)
        algos = settings.algorithms
        self.quantization = algos.get("quantization")
        self.sparsity = algos.get("magnitude_sparsity")
        self.pruning = algos.get("filter_pruning")
        self.sparsity_schedule = sparsity_schedule(self.sparsity) if self.sparsity else None
        self.pruning_schedule = pruning_schedule(self.pruning) if self.pruning else None
        self.ignored_scopes = list((self.pruning or {}).get("ignored_scopes") or [])
        self.state = {}
        self._meta = {"compression": {}}
        self._model = None
        self._input_size = None
        self._keep_ratio = False
        self._init_loader = None
        self._img_norm_cfg = None
        self.quantization_options = quantization_options(self.quantization) if self.quantization else None

    # -- TrainingPlugin ----------------------------------------------------------------------------
    def configure(self, cfg, options):
        apply_to_model_config(cfg, self.settings)
        self._img_norm_cfg = dict(cfg.img_norm_cfg)
        if _get_option(options, "epochs") is None and self.settings.total_epochs:
            _set_option(options, "epochs", int(self.settings.total_epochs))

    def prepare_model(self, detector, ctx):
        self.bind(ctx)
        resume = ctx.resume_checkpoint
        compression = CheckpointMeta.of(resume, "the checkpoint resumed from").compression if resume else None
        if compression:
            model = restore_compressed_model(detector, resume)
            self.state = dict(compression.get("state") or {})
            model.to(ctx.device)
        else:
            model = detector
            if self.sparsity:
                level = sparsity_level(self.sparsity_schedule, 0)
                model = apply_sparsity(model, self.example_input(ctx.device), level)
                self.state["sparsity_level"] = level
            if self.quantization and self.quantization_start_epoch(None) == 0:
                model = self._quantize(model, ctx.device)
        self._model = model
        self.update_meta()
        return model

    def hooks(self):
        hooks = []
        if self.pruning:
            hooks.append(PruningHook(self))
        if self.sparsity:
            hooks.append(SparsityHook(self))
        if self.quantization:
            hooks.append(QuantizationHook(self))
        hooks.append(CompressionStateHook(self))
        return hooks

    def checkpoint_meta(self):
        # the same dict object every time: update_meta() changes it in place when the structure changes
        return self._meta

    def apply_final_levels(self, model, device="cpu"):
        """``model`` (from ``prepare_model``) brought at once, without any training, to the final levels of
        the schedules: filter pruning to ``pruning_target`` in one FPGM step (the share of each prunable
        group's original filters, as ``PruningHook`` reaches it over ``pruning_steps`` epochs), sparsity at the
        multi-step schedule's last level (``set_sparsity_level``, as ``SparsityHook``). The same functions the
        training hooks call; the checkpoint meta is updated (``checkpoint_meta``). Quantization has no level:
        for a training-free INT8 model use post-training quantization (``compress.py --ptq``)."""
        if self.quantization:
            raise OteError("compression without fine-tuning applies sparsity and pruning levels; for INT8 without "
                           "fine-tuning use post-training quantization (compress.py --nncf-quantization --ptq)")
        if self.pruning:
            target = float(self.pruning_schedule[1])
            done = float(self.state.get("pruning_ratio", 0.0))
            if target > done + 1e-6:
                prune_filters(model, self.example_input(device), 1.0 - (1.0 - target) / (1.0 - done),
                              self.ignored_scopes)
                self.state["pruning_ratio"] = target
        if self.sparsity:
            level = float(self.sparsity_schedule[max(self.sparsity_schedule)])
            set_sparsity_level(model, level)
            self.state["sparsity_level"] = level
        self._model = model
        self.update_meta()
        return model

    # -- helpers -----------------------------------------------------------------------------------
    def bind(self, ctx):
        """Take the run's input geometry (``ctx.input_size``, ``ctx.keep_ratio``: the training run's, as
        ``apis.task.Task.resolve_geometry`` decided it) and its calibration loader from ``ctx``."""
        self._input_size = tuple(ctx.input_size)
        self._keep_ratio = bool(ctx.keep_ratio)
        self._init_loader = ctx.init_loader

    def example_input(self, device="cpu"):
        width, height = self._input_size
        return torch.zeros(1, 3, height, width, device=device)

    def quantization_start_epoch(self, max_epochs):
        """0 without pruning; with pruning the epoch where its schedule reaches the target."""
        if not self.pruning:
            return 0
        start = int(self.pruning_schedule[2])
        return start if max_epochs is None else min(start, max(int(max_epochs) - 1, 0))

    def calibration_images(self, num_init, num_bn):
        """(range-initialisation images [1, 3, h, w], BatchNorm-adaptation batches [B, 3, h, w]) from the
        training images: with ``init_images`` "plain" (the default) the files at the run's geometry without
        augmentation (``plain_images``: letterboxed when the run is), with "augmented" the training
        loader's batches."""
        loader = self._init_loader()
        if self.quantization_options["init_images"] != "plain":  # "augmented": OTE's way (NNCF 2.x's loader)
            return collect_images(loader, num_init), (collect_batches(loader, num_bn) if num_bn else [])
        dataset = loader.dataset
        while hasattr(dataset, "times"):  # RepeatDataset
            dataset = dataset.dataset
        paths = [item[0] for item in dataset.items]
        geometry = (self._input_size, self._keep_ratio)
        init_images = plain_images(paths, *geometry, self._img_norm_cfg, num_init)
        bn_images = plain_images(paths, *geometry, self._img_norm_cfg, num_bn) if num_bn else []
        step = max(1, int(loader.batch_size or 1))
        return init_images, [torch.cat(bn_images[i:i + step]) for i in range(0, len(bn_images), step)]

    def _quantize(self, model, device):
        num_init, num_bn = quantization_params(self.quantization)
        init_images, bn_batches = self.calibration_images(num_init, num_bn)
        if 0 < len(init_images) < num_init:
            log.warning("quantization: the training set gives %d image(s) for range initialisation, fewer than "
                        "num_init_samples %d of %s: the ranges are set from these %d", len(init_images), num_init,
                        self.settings.path, len(init_images))
        if not init_images:
            raise OteError("quantization: the training set gave no image for range initialisation")
        model = quantize_model(model, init_images, bn_batches, device=device,
                               preset=self.quantization_options["preset"])
        self.state["quantized"] = True
        return model

    def update_meta(self, model=None):
        model = model if model is not None else self._model
        comp = self._meta["compression"]
        comp.clear()
        comp.update(_plain({
            "parts": self.parts,
            "algorithms": [ALGORITHM_OF_PART[p] for p in self.parts],
            "settings": self.settings.to_dict(),
            "state": self.state,
            "input_size": list(self._input_size) if self._input_size else None,
        }))
        if model is not None and is_nncf_model(model):
            from .env import import_nncf
            nncf = import_nncf()
            comp["nncf"] = _plain(nncf.torch.get_config(model))
        if model is not None and self.pruning:
            comp["shapes"] = conv_shapes(model)
        return comp


class QuantizationHook(HookBase):
    """Quantizes the (pruned) model at the start of the epoch given by ``quantization_start_epoch``; once
    quantized, keeps the BatchNorm layers in eval mode (``freeze_bn``, the default) at every iteration (the
    trainer puts the whole model in train mode at each epoch's start)."""

    def __init__(self, plugin):
        self.plugin = plugin

    def before_iter(self):
        if self.plugin.state.get("quantized") and self.plugin.quantization_options["freeze_bn"]:
            freeze_batchnorm(self.trainer.net)

    def before_epoch(self):
        t = self.trainer
        if self.plugin.state.get("quantized"):
            return
        if t.epoch < self.plugin.quantization_start_epoch(t.max_epochs):
            return
        log.info("quantization: from epoch %d, on the pruned network", t.epoch + 1)
        model = self.plugin._quantize(t.model, t.device)
        t.model = model
        self.plugin._model = model
        refresh_trainer(t)
        self.plugin.update_meta()


class CompressionStateHook(HookBase):
    """Keeps the plugin's model reference and schedule state in step with the trainer and in the
    checkpoint's ``hooks`` (so that ``--resume-from`` continues the schedule)."""

    def __init__(self, plugin):
        self.plugin = plugin

    @property
    def name(self):
        return "CompressionState"

    def before_epoch(self):
        self.plugin._model = self.trainer.model
        self.plugin.update_meta()
        check_ranks_in_step(self.trainer.model)

    def after_train(self):
        check_ranks_in_step(self.trainer.model)

    def state_dict(self):
        return _plain(self.plugin.state)

    def load_state_dict(self, state):
        self.plugin.state.update(state or {})


def _rank_fingerprints(model):
    """(keys, [world, entries, 3] float64: numel, sum, sum of squares per state entry on every rank)."""
    dist = torch.distributed
    keys, rows = [], []
    state = model.state_dict()
    for key in sorted(state):  # sorted: NNCF's hook entries need not be in the same order on every rank
        value = state[key]
        if not torch.is_tensor(value):
            continue
        v = value.detach().to("cpu", torch.float64)
        keys.append(key)
        rows.append(torch.stack([torch.tensor(float(v.numel()), dtype=torch.float64), v.sum(), (v * v).sum()]))
    mine = torch.stack(rows) if rows else torch.zeros(0, 3, dtype=torch.float64)
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([len(keys)]))
    names = [None] * dist.get_world_size()
    dist.all_gather_object(names, keys)
    if len({int(s) for s in sizes}) != 1 or any(n != keys for n in names):
        raise OteError(f"compression: the ranks hold different models ({[int(s) for s in sizes]} state entries)")
    gathered = [torch.zeros_like(mine) for _ in sizes]
    dist.all_gather(gathered, mine)
    return keys, torch.stack(gathered)


def _differing(keys, prints):
    same = torch.isclose(prints, prints[:1], rtol=1e-9, atol=1e-12).all(dim=2).all(dim=0)
    return [k for k, ok in zip(keys, same.tolist()) if not ok]


def check_ranks_in_step(model):
    """With several processes: make every state_dict entry of ``model`` (weights, quantizer scales, sparsity
    masks) the same on every rank and check it. Entries that differ (sparsity masks recomputed by each rank
    at a schedule step can differ where weight magnitudes tie at the threshold) are broadcast from rank 0,
    as DDP does with buffers before each forward; a difference left after that, or different structures
    (pruned shapes, NNCF hooks), is an OteError naming the entry. Compares per-entry (numel, sum, sum of
    squares) in float64 with ``all_gather``. Returns the number of ranks compared (1: nothing to do)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return 1
    keys, prints = _rank_fingerprints(model)
    if len({tuple(p[:, 0].tolist()) for p in prints}) != 1:
        raise OteError(f"compression: the ranks hold differently shaped models ({_differing(keys, prints)[0]})")
    differing = _differing(keys, prints)
    if differing:
        state = model.state_dict()
        for key in differing:
            dist.broadcast(state[key], 0)  # the tensors share storage with the model's
        log.info("compression: %d state entr(y/ies) differed across ranks (e.g. %s); rank 0's broadcast",
                 len(differing), differing[0])
        keys, prints = _rank_fingerprints(model)
        left = _differing(keys, prints)
        if left:
            raise OteError(f"compression: the ranks are out of step ({left[0]} differs)")
    log.info("compression: state identical on %d ranks (%d entries)", prints.shape[0], len(keys))
    return prints.shape[0]


def is_compressed_checkpoint(ckpt):
    return bool(CheckpointMeta.of(ckpt, "checkpoint").compression)


def restore_compressed_model(detector, ckpt):
    """``detector`` (freshly built, uncompressed) rebuilt with the compressed structure of ``ckpt`` (pruned
    layer shapes, NNCF hooks) and the checkpoint's weights loaded; returns the model to use."""
    comp = CheckpointMeta.of(ckpt, "checkpoint").compression or {}
    try:
        if comp.get("shapes"):
            resize_to_shapes(detector, comp["shapes"])
        model = detector
        if comp.get("nncf"):
            from .env import import_nncf
            nncf = import_nncf()
            model = nncf.torch.load_from_config(detector, comp["nncf"])
    except (ValueError, KeyError, TypeError) as exc:
        raise OteError(f"compressed checkpoint does not fit this model ({exc})") from exc
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in ckpt["state_dict"].items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        first = (wrong or missing or unexpected)[0]
        raise OteError(f"compressed checkpoint does not fit this model ({len(missing)} missing, {len(unexpected)} "
                       f"unexpected, {len(wrong)} wrong-shape key(s), e.g. {first})")
    model.load_state_dict(state)
    return model
