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

On SIGTERM (any process) the loop stops at the next iteration boundary: ``hook.on_stop()`` (every
process; the checkpoint hook saves), then ``TrainingStopped`` ends the run (``after_train`` still runs).
A run resumed within an epoch starts that epoch at ``trainer.epoch_iter`` (``before_epoch`` runs again).

``after_epoch`` runs in registration order, so the default order is: LR schedule, checkpoint
(written before validation, so a failing validation loses no training), validation, logging
(tensorboard and the per-epoch log line see the validation metrics of the checkpoint's epoch; the
checkpoint hook rewrites ``latest.pth``'s metrics after validation).

``state_dict()`` / ``load_state_dict()`` of each hook are stored in checkpoints under
``hooks[<hook.name>]`` and restored on ``--resume`` / ``--resume-from`` (compression keeps its state there).
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

    def on_stop(self):
        """The run stops at this iteration boundary (a stop signal, on any process; called on every
        process): ``CheckpointHook`` saves here."""

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
            for _ in range(self.trainer.start_iter_global):
                self.scheduler.step()

    def after_iter(self):
        self.scheduler.step()


class CheckpointHook(HookBase):
    """Writes ``epoch_N.pth`` and ``latest.pth`` after each epoch (before validation), and ``latest.pth``
    every ``interval_iters`` iterations within an epoch and when the run stops on a signal (``on_stop``).
    ``meta_fn()`` gives the static meta (template, input size, the run's identity, plugin meta); each
    checkpoint adds ``epoch`` (epochs finished), ``epoch_iter`` (iterations of the next epoch done, 0 at an
    epoch's end), ``iter`` and ``metrics``, the hooks' state under ``hooks`` and the loop's state
    (``Trainer.state_dict``: random states of every process, sampler, scaler) under ``trainer``.

    Every process gathers the loop's state (a collective); only global rank 0 writes, each file atomically
    (``save_fn``: written whole beside the old one, then renamed over it), so a kill during a save leaves
    the previous checkpoint whole. ``last_saved``: the path last written."""

    def __init__(self, out_dir, meta_fn, save_fn, interval_iters=None):
        self.out_dir = out_dir
        self.meta_fn = meta_fn
        self.save_fn = save_fn
        self.interval_iters = int(interval_iters or 0)
        self.last_saved = None
        self._loop_state = None  # of the last checkpoint

    def before_epoch(self):
        self._loop_state = None

    def after_iter(self):
        t = self.trainer
        if self.interval_iters and t.epoch_iter % self.interval_iters == 0 and t.epoch_iter < t.iters_per_epoch:
            self._write(t.epoch_iter)

    def on_stop(self):
        if self._loop_state is None or self._loop_state["epoch_iter"] != self.trainer.epoch_iter:
            self._write(self.trainer.epoch_iter)  # (else after_iter wrote this very boundary)

    def after_epoch(self):
        self._write(None)

    def _write(self, epoch_iter):
        """Gather the loop's state (every process), then save: ``epoch_iter`` None after an epoch (epoch_N.pth
        and latest.pth), else within it (latest.pth)."""
        self._loop_state = self.trainer.state_dict()
        self._loop_state["epoch_iter"] = 0 if epoch_iter is None else epoch_iter
        self.save(within_epoch=epoch_iter is not None)

    def save(self, within_epoch=False):
        """Write the checkpoint(s) of the last gathered state (main process only; EvalHook calls it again
        after validation, with the metrics)."""
        if not dist_utils.is_main():
            return
        t = self.trainer
        stats = t.storage.get("epoch", {}) if not within_epoch else {}
        done = t.epoch + (0 if within_epoch else 1)  # epochs finished
        epoch_iter = self._loop_state["epoch_iter"] if within_epoch else 0
        meta = dict(self.meta_fn(), epoch=done, epoch_iter=epoch_iter, iter=done * t.iters_per_epoch + epoch_iter,
                    metrics={k: float(v) for k, v in stats.items()})
        hooks = {h.name: h.state_dict() for h in t.hooks if h.state_dict()}
        names = ["latest.pth"] if within_epoch else [f"epoch_{done}.pth", "latest.pth"]
        for name in names:
            self.last_saved = os.path.join(self.out_dir, name)
            self.save_fn(self.last_saved, t.model, t.optimizer, meta, {"hooks": hooks, "trainer": self._loop_state})


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
