"""The core's generic layers: config inheritance, optimizers and LR policies, the hook order, mixed
precision, distributed failure, the head contract, and export without deprecated tracing."""

import math
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO, run_tool, template_path
from ote_detection.apis.task import Task
from ote_detection.apis.train import build_train_dataset
from ote_detection.config import load_config, merge_dict
from ote_detection.engine import distributed as dist_utils
from ote_detection.engine.hooks import HookBase, LRSchedulerHook
from ote_detection.engine.optim import build_lr_scheduler, build_optimizer
from ote_detection.engine.trainer import Trainer, amp_dtype, build_train_loader
from ote_detection.utils.errors import OteError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_merge_dict_has_mmcv_semantics():
    base = {"a": {"x": 1, "y": {"p": 1}}, "b": [1, 2], "c": 3}
    assert merge_dict(base, {"a": {"y": {"q": 2}}, "b": [9]}) == {"a": {"x": 1, "y": {"p": 1, "q": 2}}, "b": [9],
                                                                   "c": 3}
    assert merge_dict(base, {"a": {"_delete_": True, "z": 0}}) == {"a": {"z": 0}, "b": [1, 2], "c": 3}


def test_base_inheritance_delete_and_dead_keys(tmp_path, caplog):
    base = load_config(os.path.join(REPO, "model_templates", "face-detection", "_base_", "ssd_face_detection.py"))
    child = tmp_path / "model.py"
    child.write_text(f"_base_ = {os.path.join(REPO, 'model_templates', 'face-detection', '_base_', 'ssd_face_detection.py')!r}\n"
                     "input_size = (320, 192)\n"
                     "lr_config = dict(_delete_=True, policy='cosine')\n"
                     "optimizer = dict(type='AdamW', lr=0.001, weight_decay=0.05, _delete_=True)\n"
                     "workflow = [('train', 1)]\n")
    with caplog.at_level("WARNING"):
        cfg = load_config(str(child))
    assert cfg.lr_config == {"policy": "cosine"} and cfg.optimizer == {"type": "AdamW", "lr": 0.001, "weight_decay": 0.05}
    assert cfg.model == base.model and cfg.input_size == (320, 192)
    assert "ignored key(s) workflow" in caplog.text
    # the four SSD templates: one base, a few lines each, one input size
    for name, size in (("0200", 256), ("0202", 384), ("0204", 448), ("0207", 448)):
        path = os.path.join(REPO, "model_templates", "face-detection", f"face-detection-{name}", "model.py")
        assert len(open(path).read().splitlines()) < 25
        assert Task(template_path(f"face-detection-{name}")).input_size == (size, size)


def test_instantiated_work_dir_is_self_contained(tmp_path):
    work = tmp_path / "wd"
    r = run_tool([os.path.join(REPO, "tools", "instantiate_template.py"), template_path("face-detection-0204"),
                  str(work), "--do-not-load-snapshot"])
    assert r.returncode == 0, r.stderr
    moved = tmp_path / "elsewhere"
    os.rename(work, moved)  # nothing points back into the repository
    assert (moved / "_base_" / "ssd_face_detection.py").is_file()
    cfg = load_config(str(moved / "model.py"))
    assert cfg.input_size == 448 and cfg.data.samples_per_gpu == 32


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


def _fail_on_rank_1():
    if torch.distributed.get_rank() == 1:
        raise OteError("worker 1 found a bad file")
    torch.distributed.barrier()  # rank 0 would wait here for ever without the failure handling


def test_a_failing_worker_ends_the_distributed_job():
    with pytest.raises(OteError, match="^worker 1 found a bad file$"):
        dist_utils.launch(_fail_on_rank_1, 2, use_cuda=False)


def test_head_contract_ssd(synthetic_data):
    task = Task(template_path())
    det = task.build_detector()
    img = torch.rand(2, 3, 96, 128)
    outs = det(img)
    boxes, scores = det.bbox_head.decode(outs, (96, 128))
    assert boxes.shape[:2] == scores.shape[:2] and boxes.shape[-1] == 4 and scores.shape[-1] == 1
    assert boxes[..., [0, 2]].max() <= 128 and boxes[..., [1, 3]].max() <= 96
    preds = det.predict(img)
    assert len(preds) == 2 and all(p.boxes.shape[1] == 4 and p.scores.shape == p.labels.shape == p.boxes.shape[:1]
                                   and p.to_rows().shape[1] == 6 for p in preds)
    losses = det(img, [torch.tensor([[10.0, 10, 40, 50]]), torch.zeros(0, 4)], [torch.tensor([0]), torch.zeros(0).long()])
    assert set(losses) == {"loss_cls", "loss_bbox"} and all(torch.isfinite(v) for v in losses.values())


def test_setup_py_reads_the_project_metadata():
    r = subprocess.run([sys.executable, "setup.py", "--name"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == "ote-face", r.stderr
