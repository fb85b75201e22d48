"""Training hooks, in the manner of detectron2's ``HookBase``.

A ``Trainer`` runs a list of hooks; each hook is registered with ``trainer.register_hooks`` and gets
``self.trainer``. For a run from ``trainer.start_epoch`` to ``trainer.max_epochs`` the calls are::

    hook.before_train()                      # every hook, in registration order
    for epoch in range(start_epoch, max_epochs):
        hook.before_epoch()                  # trainer.epoch is the 0-based epoch
        for each batch:
            hook.before_iter()               # trainer.iter is the 0-based global iteration
            losses = model(batch)            # trainer.run_step(): forward (autocast if amp) ...
            hook.after_loss(losses)          # ... a hook may add loss terms (dict, in place) ...
            backward, clip, optimizer.step() # ... then the sum is back-propagated
            hook.after_iter()                # trainer.storage["losses"]: the iteration's float losses;
                                             # trainer.storage["time"]: its seconds (data, forward, ...)
        hook.after_epoch()                   # trainer.storage["epoch"]: the epoch's mean losses (all
                                             # processes), "lr", "epoch_time_s", "data_time_s",
                                             # "iter_time_s", "data_wait"; hooks add metrics
    hook.after_train()                       # also when an exception ends the run

``after_epoch`` runs in registration order, so the default order is: LR schedule, checkpoint
(written before validation, so a failing validation loses no training), validation, logging
(tensorboard and the per-epoch log line see the validation metrics of the checkpoint's epoch; the
checkpoint hook rewrites ``latest.pth``'s metrics after validation).

``state_dict()`` / ``load_state_dict()`` of each hook are stored in checkpoints under
``hooks[<hook.name>]`` and restored on ``--resume-from`` (compression keeps its state there).
"""

import logging
import os
import warnings

from . import distributed as dist_utils

log = logging.getLogger("ote_detection.engine.trainer")


class HookBase:
    """Base class; every method is optional."""

    trainer = None

    @property
    def name(self):
        return type(self).__name__

    def before_train(self):
        pass

    def after_train(self):
        pass

    def before_epoch(self):
        pass

    def after_epoch(self):
        pass

    def before_iter(self):
        pass

    def after_loss(self, losses):
        """``losses``: the dict of loss tensors of this iteration; add terms to it in place."""

    def after_iter(self):
        pass

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class LRSchedulerHook(HookBase):
    """Steps a per-iteration ``torch.optim.lr_scheduler`` after each iteration; on a resumed run it is
    first moved to the run's start iteration, so the rate continues where the checkpoint left it."""

    def __init__(self, scheduler):
        self.scheduler = scheduler

    def before_train(self):
        with warnings.catch_warnings():  # stepping without optimizer steps is the point here
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(self.trainer.start_epoch * self.trainer.iters_per_epoch):
                self.scheduler.step()

    def after_iter(self):
        self.scheduler.step()


class CheckpointHook(HookBase):
    """Writes ``epoch_N.pth`` and ``latest.pth`` (atomically, main process only) after each epoch,
    before validation. ``meta_fn()`` gives the static meta (template, input size, plugin meta); each
    checkpoint adds ``epoch``, ``iter`` and ``metrics``, and the hooks' state under ``hooks``."""

    def __init__(self, out_dir, meta_fn, save_fn):
        self.out_dir = out_dir
        self.meta_fn = meta_fn
        self.save_fn = save_fn

    def after_epoch(self):
        self.save()

    def save(self):
        if not dist_utils.is_main():
            return
        t = self.trainer
        stats = t.storage.get("epoch", {})
        meta = dict(self.meta_fn(), epoch=t.epoch + 1, iter=(t.epoch + 1) * t.iters_per_epoch,
                    metrics={k: float(v) for k, v in stats.items()})
        hooks = {h.name: h.state_dict() for h in t.hooks if h.state_dict()}
        for name in (f"epoch_{t.epoch + 1}.pth", "latest.pth"):
            self.save_fn(os.path.join(self.out_dir, name), t.model, t.optimizer, meta, {"hooks": hooks})


class EvalHook(HookBase):
    """Validates the unwrapped model after each epoch on the main process (``validate(model) -> dict``),
    adds the metrics to ``storage["epoch"]`` and rewrites the epoch's checkpoints with them."""

    def __init__(self, validate):
        self.validate = validate

    def after_epoch(self):
        if not dist_utils.is_main():
            return
        t = self.trainer
        metrics = self.validate(t.model)
        t.model.train()
        t.storage["epoch"].update(metrics)
        checkpoint = t.hook(CheckpointHook)
        if checkpoint is not None:
            checkpoint.save()


class LoggerHook(HookBase):
    """The per-epoch log line (main process) and tensorboard scalars: ``train/*`` every ``interval``
    iterations (losses, lr, and ``train/data_time`` / ``train/iter_time``: seconds spent waiting for the
    loader / for the whole iteration), ``epoch/*`` (losses, lr, timing, validation metrics) after each
    epoch.

    TensorBoard logs are a by-product: a full or read-only disk under ``tensorboard_dir`` stops them with
    one warning, and training goes on (the event writer's background thread would print a traceback:
    its failure is taken over here)."""

    def __init__(self, tensorboard_dir=None, interval=10):
        self.tensorboard_dir = tensorboard_dir
        self.interval = max(1, int(interval))
        self.writer = None
        self._thread_hook = None

    def before_train(self):
        if self.tensorboard_dir and dist_utils.is_main():
            import threading

            from torch.utils.tensorboard import SummaryWriter
            previous = threading.excepthook

            def quiet_writer_thread(args):  # tensorboard's _AsyncWriterThread: its error reaches us on the next call
                if type(args.thread).__module__.startswith("tensorboard.") and issubclass(args.exc_type, OSError):
                    return
                previous(args)

            self._thread_hook = (threading, previous)
            threading.excepthook = quiet_writer_thread
            self._tensorboard(lambda: setattr(self, "writer", SummaryWriter(self.tensorboard_dir)))

    def _tensorboard(self, write):
        """Run a tensorboard call; a failed write disables tensorboard with one warning."""
        try:
            write()
        except OSError as exc:
            log.warning("tensorboard: %s: %s; tensorboard logging stopped, training goes on", self.tensorboard_dir,
                        exc.strerror or exc)
            writer, self.writer = self.writer, None
            if writer is not None:
                try:
                    writer.close()
                except OSError:
                    pass

    def after_iter(self):
        t = self.trainer
        if self.writer and t.iter % self.interval == 0:
            def write():
                for k, v in t.storage["losses"].items():
                    self.writer.add_scalar(f"train/{k}", v, t.iter)
                self.writer.add_scalar("train/lr", t.storage["lr"], t.iter)
                times = t.storage.get("time") or {}
                for k in ("data", "iter"):
                    if k in times:
                        self.writer.add_scalar(f"train/{k}_time", times[k], t.iter)
            self._tensorboard(write)

    def after_epoch(self):
        if not dist_utils.is_main():
            return
        t = self.trainer
        record = t.storage["epoch"]
        if self.writer:
            def write():
                for k, v in record.items():
                    self.writer.add_scalar(f"epoch/{k}", v, t.epoch + 1)
                self.writer.flush()
            self._tensorboard(write)
        log.info(
            "epoch %d/%d: %s", t.epoch + 1, t.max_epochs, ", ".join(f"{k} {v:.4g}" for k, v in record.items()))

    def after_train(self):
        if self.writer:
            self._tensorboard(self.writer.close)
            self.writer = None
        if self._thread_hook is not None:
            threading, previous = self._thread_hook
            threading.excepthook = previous
            self._thread_hook = None
