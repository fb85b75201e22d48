"""engine/trainer.py and engine/hooks.py: the hook order, a resumed schedule, the mixed-precision step."""

import math

import pytest
import torch

from conftest import template_path
from ote_detection.apis.task import Task
from ote_detection.apis.train import build_train_dataset
from ote_detection.engine.hooks import HookBase, LRSchedulerHook
from ote_detection.engine.optim import build_lr_scheduler, build_optimizer
from ote_detection.engine.trainer import Trainer, amp_dtype, build_train_loader

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Recorder(HookBase):
    def __init__(self):
        self.calls = []

    def before_train(self):
        self.calls.append("before_train")

    def before_epoch(self):
        self.calls.append(f"before_epoch{self.trainer.epoch}")

    def before_iter(self):
        self.calls.append(f"before_iter{self.trainer.iter}")

    def after_loss(self, losses):
        losses["extra"] = 0.0 * losses["loss_cls"]
        self.calls.append("after_loss")

    def after_iter(self):
        assert "extra" in self.trainer.storage["losses"]
        self.calls.append("after_iter")

    def after_epoch(self):
        self.calls.append(f"after_epoch{self.trainer.epoch}")

    def after_train(self):
        self.calls.append("after_train")


def _tiny_trainer(synthetic_data, amp=False, epochs=2, start_epoch=0):
    ann, root = synthetic_data
    task = Task(template_path())
    task.set_input_size((64, 64))
    loader = build_train_loader(build_train_dataset(task.cfg, ann, root, task.classes), batch_size=12, workers=0)
    model = task.build_detector()
    opt = build_optimizer(model, task.cfg.optimizer)
    trainer = Trainer(model, loader, opt, max_epochs=epochs, start_epoch=start_epoch, amp=amp)
    return trainer, build_lr_scheduler(opt, task.cfg.lr_config, trainer.iters_per_epoch, epochs)


def test_hooks_run_in_the_documented_order(synthetic_data):
    trainer, sched = _tiny_trainer(synthetic_data)
    rec = Recorder()
    trainer.register_hooks([LRSchedulerHook(sched), rec])
    history = trainer.train()
    assert trainer.iters_per_epoch == 2 and len(history) == 2
    assert rec.calls == ["before_train",
                         "before_epoch0", "before_iter0", "after_loss", "after_iter", "before_iter1", "after_loss",
                         "after_iter", "after_epoch0",
                         "before_epoch1", "before_iter2", "after_loss", "after_iter", "before_iter3", "after_loss",
                         "after_iter", "after_epoch1", "after_train"]
    assert "extra" in history[0] and history[1]["lr"] > history[0]["lr"]  # warm-up, stepped per iteration


def test_resumed_schedule_continues_where_it_stopped(synthetic_data):
    full, sched = _tiny_trainer(synthetic_data, epochs=3)
    full.register_hooks([LRSchedulerHook(sched)])
    lrs = [r["lr"] for r in full.train()]
    resumed, sched = _tiny_trainer(synthetic_data, epochs=3, start_epoch=2)
    resumed.register_hooks([LRSchedulerHook(sched)])
    assert resumed.train()[0]["lr"] == pytest.approx(lrs[2])


def test_amp_step_is_bf16_with_fp32_losses(synthetic_data):
    """bf16 autocast (forced: on a CPU without AMX/AVX512-BF16, --amp itself stays fp32 and says so)."""
    assert amp_dtype("cpu") in (None, torch.bfloat16)
    trainer, _ = _tiny_trainer(synthetic_data, amp=torch.bfloat16, epochs=1)
    seen = {}
    backbone_conv = trainer.model.backbone.features[0]

    def hook(module, inputs, output):
        seen["dtype"] = output.dtype
    backbone_conv.register_forward_hook(hook)
    history = trainer.train()
    assert seen["dtype"] == torch.bfloat16 and trainer.channels_last
    assert math.isfinite(history[0]["loss"])
