"""The training loop: epochs of SGD with the template's schedule, validation and atomic checkpoints.

The same loop runs in one process (CPU or one GPU) and in each DDP process; compression
fine-tuning reuses it with a wrapped model.
"""

import logging
import math
import os
import random
import time

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from ..data.coco import collate_train
from ..utils.errors import OteError
from . import distributed as dist_utils
from .checkpoint import save_checkpoint
from .lr_schedule import StepLrSchedule

log = logging.getLogger(__name__)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _worker_init(worker_id):
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


class Trainer:
    """Trains ``model`` (a SingleStageDetector) on ``dataset``.

    ``validate(model) -> dict`` is called on the main process after each epoch; ``checkpoint_meta``
    is stored in every checkpoint; ``start_epoch`` and ``optimizer_state`` come from ``--resume-from``.
    """

    def __init__(self, model, dataset, *, optimizer_cfg, lr_config, total_epochs, batch_size, workers,
                 out_dir, validate=None, checkpoint_meta=None, start_epoch=0, optimizer_state=None,
                 tensorboard_dir=None, grad_clip=None, device="cpu", log_interval=10, seed=0, progress=True):
        self.device = device
        self.model = model.to(device)
        self.dataset = dataset
        self.total_epochs = total_epochs
        self.start_epoch = start_epoch
        self.out_dir = out_dir
        self.validate = validate
        self.meta = dict(checkpoint_meta or {})
        self.grad_clip = grad_clip
        self.log_interval = log_interval
        self.progress = progress and dist_utils.is_main()
        opt_cfg = dict(optimizer_cfg)
        opt_type = opt_cfg.pop("type", "SGD")
        if opt_type != "SGD":
            raise OteError(f"model.py: optimizer '{opt_type}' is not supported (only SGD)")
        self.optimizer = torch.optim.SGD([p for p in self.model.parameters() if p.requires_grad], **opt_cfg)
        if optimizer_state:
            self.optimizer.load_state_dict(optimizer_state)
        lr_cfg = dict(lr_config)
        self.schedule = StepLrSchedule(opt_cfg["lr"], **lr_cfg)
        self.world = dist_utils.world_size()
        if self.world > 1:
            self.sampler = DistributedSampler(dataset, shuffle=True, seed=seed)
        else:
            generator = torch.Generator().manual_seed(seed)
            self.sampler = RandomSampler(dataset, generator=generator)
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self.sampler, num_workers=workers,
                                 collate_fn=collate_train, worker_init_fn=_worker_init,
                                 persistent_workers=workers > 0, pin_memory=device != "cpu")
        self.iters_per_epoch = len(self.loader)
        self.writer = None
        if tensorboard_dir and dist_utils.is_main():
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(tensorboard_dir)
        self.history = []

    def _ddp_model(self):
        if self.world > 1:
            ids = [torch.cuda.current_device()] if self.device != "cpu" else None
            return DistributedDataParallel(self.model, device_ids=ids)
        return self.model

    def run(self):
        if self.start_epoch >= self.total_epochs:
            log.info("nothing to train: the checkpoint is at epoch %d and --epochs is %d", self.start_epoch,
                     self.total_epochs)
            return self.history
        net = self._ddp_model()
        for epoch in range(self.start_epoch, self.total_epochs):
            stats = self._train_epoch(net, epoch)
            record = {"epoch": epoch + 1, **stats}
            if dist_utils.is_main():
                meta = dict(self.meta, epoch=epoch + 1, iter=(epoch + 1) * self.iters_per_epoch)
                if self.validate is not None:
                    record.update(self.validate(self.model))
                    self.model.train()
                meta["metrics"] = {k: float(v) for k, v in record.items() if k != "epoch"}
                save_checkpoint(os.path.join(self.out_dir, f"epoch_{epoch + 1}.pth"), self.model, self.optimizer, meta)
                save_checkpoint(os.path.join(self.out_dir, "latest.pth"), self.model, self.optimizer, meta)
                if self.writer:
                    for key, value in record.items():
                        if key != "epoch":
                            self.writer.add_scalar(f"epoch/{key}", value, epoch + 1)
                    self.writer.flush()
                log.info("epoch %d/%d: %s", epoch + 1, self.total_epochs,
                         ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "epoch"))
            self.history.append(record)
            dist_utils.barrier()
        if self.writer:
            self.writer.close()
        return self.history

    def _train_epoch(self, net, epoch):
        net.train()
        if isinstance(self.sampler, DistributedSampler):
            self.sampler.set_epoch(epoch)
        sums = {}
        count = 0
        start = time.time()
        bar = tqdm(self.loader, desc=f"epoch {epoch + 1}/{self.total_epochs}", disable=not self.progress, leave=False)
        for i, (imgs, boxes, labels) in enumerate(bar):
            global_iter = epoch * self.iters_per_epoch + i
            lr = self.schedule.lr(epoch, global_iter)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            imgs = imgs.to(self.device, non_blocking=True)
            boxes = [b.to(self.device) for b in boxes]
            labels = [lb.to(self.device) for lb in labels]
            losses = net(imgs, boxes, labels)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise OteError(f"training diverged: loss is {loss.item()} at epoch {epoch + 1}, iteration {i + 1} "
                               f"(try a lower --base-learning-rate)")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), **self.grad_clip)
            self.optimizer.step()
            values = {k: v.item() for k, v in losses.items()}
            values["loss"] = loss.item()
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{lr:.2g}")
            if self.writer and global_iter % self.log_interval == 0:
                for k, v in values.items():
                    self.writer.add_scalar(f"train/{k}", v, global_iter)
                self.writer.add_scalar("train/lr", lr, global_iter)
        stats = {k: dist_utils.all_reduce_mean(v / max(count, 1)) for k, v in sums.items()}
        stats["lr"] = lr if count else self.schedule.lr(epoch, epoch * self.iters_per_epoch)
        stats["epoch_time_s"] = time.time() - start
        if not math.isfinite(stats.get("loss", 0.0)):
            raise OteError(f"training diverged at epoch {epoch + 1}")
        return stats
