"""The training loop: epochs over a DataLoader, with hooks (``engine/hooks.py``) for everything else.

The same loop runs in one process (CPU or one GPU) and in each DDP process. Checkpoints, validation,
tensorboard, the LR schedule and compression schedules are hooks; the loop itself only runs the
forward (under autocast with ``amp``), the backward and the optimizer step.
"""

import logging
import math
import random
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler
from tqdm import tqdm

from ..data.coco import collate_train
from ..models.layers import depthwise_convs_in_fp32
from ..utils.errors import OteError
from . import distributed as dist_utils

log = logging.getLogger(__name__)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _worker_init(worker_id):
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


class NoSingletonBatchSampler(Sampler):
    """Batches of ``batch_size`` indices of ``sampler`` (the last one shorter), where a trailing batch of ONE
    index gets a second one (the epoch's first index; itself when the epoch has one): train-mode BatchNorm
    cannot normalise one value per channel, which a single image with a 1x1 coarsest feature map gives
    (mmdetection's GroupSampler pads its epochs to whole batches for the same reason). ``len`` =
    ceil(len(sampler) / batch_size); under DDP each process's share is batched on its own."""

    def __init__(self, sampler, batch_size):
        self.sampler, self.batch_size = sampler, int(batch_size)

    def __iter__(self):
        indices = list(self.sampler)
        for start in range(0, len(indices), self.batch_size):
            batch = indices[start:start + self.batch_size]
            if len(batch) == 1 and self.batch_size > 1:
                batch.append(indices[0] if len(indices) > 1 and start > 0 else batch[0])
            yield batch

    def __len__(self):
        return math.ceil(len(self.sampler) / self.batch_size)


def build_train_loader(dataset, batch_size, workers, seed=0, pin_memory=False):
    """The training DataLoader: shuffled (a DistributedSampler under DDP, seeded), batches
    (``NoSingletonBatchSampler``: no trailing batch of one) of ``collate_train``: (imgs [B, 3, H, W],
    list of boxes [G, 4], list of labels [G])."""
    if dist_utils.world_size() > 1:
        sampler = DistributedSampler(dataset, shuffle=True, seed=seed)
    else:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    return DataLoader(dataset, batch_sampler=NoSingletonBatchSampler(sampler, batch_size), num_workers=workers,
                      collate_fn=collate_train, worker_init_fn=_worker_init, persistent_workers=workers > 0,
                      pin_memory=pin_memory)


def check_batch_statistics(input_size, stride, batch_size):
    """OteError when train-mode BatchNorm would get one value per channel: a batch of one image whose
    coarsest feature map (``input_size`` (w, h) / the model's largest ``stride``) is 1x1."""
    w, h = input_size
    cells = max(1, math.ceil(w / stride)) * max(1, math.ceil(h / stride))
    if int(batch_size) * cells < 2:
        raise OteError(f"--batch-size {batch_size} at input {w}x{h}: the coarsest feature map (stride {stride}) is "
                       f"1x1, and BatchNorm cannot train on one value per channel; give --batch-size 2 or more, or "
                       f"an input side over {stride} px")


def amp_dtype(device):
    """The autocast dtype for ``--amp`` on ``device``: bf16 on CPUs with AMX or AVX512-BF16 and on CUDA
    GPUs that support it, fp16 (with a GradScaler) on older GPUs; None where mixed precision does not pay."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    cpu = getattr(torch, "cpu", None)
    has_bf16 = any(getattr(cpu, name, lambda: False)() for name in
                   ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
    return torch.bfloat16 if has_bf16 else None


class Trainer:
    """Runs ``model`` (a detector: ``forward(img, gt_bboxes, gt_labels) -> dict of losses``) over ``loader``.

    Attributes the hooks read: ``model`` (unwrapped), ``net`` (DDP-wrapped or ``model``), ``optimizer``,
    ``loader``, ``epoch``, ``iter`` (global, 0-based), ``start_epoch``, ``max_epochs``,
    ``iters_per_epoch``, ``storage`` (see ``engine/hooks.py``), ``device``, ``history`` (per-epoch
    records of the main process).

    Timing: ``storage["time"]`` holds the iteration's wall-clock seconds (set before ``after_iter``):
    ``data`` (waiting for the loader's next batch: from the end of the previous iteration's hooks to the
    batch's arrival), ``forward`` (forward and losses), ``backward``, ``optimizer`` (clipping and the step)
    and ``iter`` (from the end of the previous iteration's hooks to the end of the step). On CUDA the kernels
    run asynchronously, so the split between forward, backward and optimizer is only indicative (the
    ``.item()`` at the end synchronises each iteration); ``data`` and ``iter`` are exact. The epoch record adds ``data_time_s`` and ``iter_time_s`` (means per iteration) and
    ``data_wait`` (the share of the epoch's iteration time spent waiting for data, 0..1).
    """

    def __init__(self, model, loader, optimizer, *, max_epochs, start_epoch=0, device="cpu", amp=False,
                 channels_last=None, fp32_depthwise=None, grad_clip=None, progress=True):
        self.device = torch.device(device)
        self.channels_last = (self.device.type == "cpu" or amp) if channels_last is None else channels_last
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self.memory_format)
        self.loader = loader
        self.optimizer = optimizer
        self.max_epochs = int(max_epochs)
        self.start_epoch = int(start_epoch)
        self.epoch = self.start_epoch
        self.iters_per_epoch = len(loader)
        self.iter = self.start_epoch * self.iters_per_epoch
        self.grad_clip = grad_clip
        # amp: True picks the device's dtype (amp_dtype); a torch dtype forces it
        self.autocast_dtype = amp if isinstance(amp, torch.dtype) else (amp_dtype(self.device) if amp else None)
        if amp and self.autocast_dtype is None:
            log.warning("--amp: this CPU has no bf16 support (AMX or AVX512-BF16); training runs in fp32")
        self.scaler = torch.amp.GradScaler("cuda") if self.autocast_dtype == torch.float16 else None
        # bf16 autocast on the CPU: the depthwise convolutions' backward runs in fp32, their forward stays
        # bf16 (oneDNN's bf16 depthwise backward is slower than fp32's: models/layers.Fp32DepthwiseConv2d);
        # fp32_depthwise None: only there, True / False: force
        if fp32_depthwise is None:
            fp32_depthwise = self.device.type == "cpu" and self.autocast_dtype == torch.bfloat16
        if fp32_depthwise and self.autocast_dtype is not None:
            depthwise_convs_in_fp32(self.model)
        self.progress = progress and dist_utils.is_main()
        self.hooks = []
        self.storage = {}
        self.history = []
        if torch.distributed.is_initialized():  # DDP also with one process (torchrun --nproc_per_node=1)
            self.net = dist_utils.wrap_ddp(self.model, self.device)
        else:
            self.net = self.model

    def register_hooks(self, hooks):
        for hook in hooks:
            if hook is not None:
                hook.trainer = self
                self.hooks.append(hook)

    def hook(self, kind):
        """The first registered hook of class ``kind`` (or None)."""
        return next((h for h in self.hooks if isinstance(h, kind)), None)

    def _call(self, name, *args):
        for hook in self.hooks:
            getattr(hook, name)(*args)

    def train(self):
        if self.start_epoch >= self.max_epochs:
            log.info("nothing to train: the checkpoint is at epoch %d and --epochs is %d", self.start_epoch,
                     self.max_epochs)
            return self.history
        try:
            self._call("before_train")
            for self.epoch in range(self.start_epoch, self.max_epochs):
                self._call("before_epoch")
                self.storage["epoch"] = self._train_epoch()
                self._call("after_epoch")
                if dist_utils.is_main():
                    self.history.append(dict(epoch=self.epoch + 1, **self.storage["epoch"]))
                dist_utils.barrier()
        finally:
            self._call("after_train")
        return self.history

    def _train_epoch(self):
        self.net.train()
        sampler = getattr(getattr(self.loader, "batch_sampler", None), "sampler", None) or self.loader.sampler
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(self.epoch)
        sums, count, start = {}, 0, time.time()
        data_s = iter_s = 0.0
        bar = tqdm(self.loader, desc=f"epoch {self.epoch + 1}/{self.max_epochs}", disable=not self.progress,
                   leave=False)
        mark = time.perf_counter()  # the end of the previous iteration
        for i, batch in enumerate(bar):
            arrived = time.perf_counter()
            self.iter = self.epoch * self.iters_per_epoch + i
            self._call("before_iter")
            lr = self.optimizer.param_groups[0]["lr"]
            values = self.run_step(batch)
            times = self.storage["time"]
            times["data"], times["iter"] = arrived - mark, time.perf_counter() - mark
            data_s, iter_s = data_s + times["data"], iter_s + times["iter"]
            self.storage["losses"], self.storage["lr"] = values, lr
            self._call("after_iter")
            mark = time.perf_counter()
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{lr:.2g}")
        stats = {k: dist_utils.all_reduce_mean(v / max(count, 1)) for k, v in sums.items()}
        stats["lr"] = self.optimizer.param_groups[0]["lr"]
        stats["epoch_time_s"] = time.time() - start
        stats["data_time_s"] = dist_utils.all_reduce_mean(data_s / max(count, 1))
        stats["iter_time_s"] = dist_utils.all_reduce_mean(iter_s / max(count, 1))
        stats["data_wait"] = stats["data_time_s"] / max(stats["iter_time_s"], 1e-12)
        if not math.isfinite(stats.get("loss", 0.0)):
            raise OteError(f"training diverged at epoch {self.epoch + 1} (try a lower --base-learning-rate)")
        return stats

    def run_step(self, batch):
        """One iteration: forward (autocast with ``amp``; losses in fp32), hooks' extra loss terms,
        backward, gradient clipping, optimizer step. Returns the float losses, ``loss`` = their sum."""
        start = time.perf_counter()
        imgs, boxes, labels = batch
        imgs = imgs.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        boxes = [b.to(self.device) for b in boxes]
        labels = [lb.to(self.device) for lb in labels]
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            losses = self.net(imgs, boxes, labels)
        self._call("after_loss", losses)
        loss = sum(v.float() for v in losses.values())
        if not torch.isfinite(loss):
            raise OteError(f"training diverged: loss is {loss.item()} at epoch {self.epoch + 1}, iteration "
                           f"{self.iter - self.epoch * self.iters_per_epoch + 1} (try a lower --base-learning-rate)")
        self.optimizer.zero_grad(set_to_none=True)
        backward = time.perf_counter()
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        step = time.perf_counter()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), **self.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        values = {k: v.item() for k, v in losses.items()}
        values["loss"] = loss.item()
        end = time.perf_counter()
        self.storage["time"] = dict(forward=backward - start, backward=step - backward, optimizer=end - step)
        return values
