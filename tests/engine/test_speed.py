"""Training-speed instrumentation (data-wait timing), the GPU check's CPU behaviour, and the training
path without OpenVINO and NNCF (as on the GPU machine)."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import AIRPORT_ANN, AIRPORT_ROOT, REPO, need_shared, template_path


class SlowLoader:
    """The real training loader, each batch delivered ``delay`` seconds late (a starving loader)."""

    def __init__(self, loader, delay):
        self.loader, self.delay = loader, delay
        self.sampler = loader.sampler  # the trainer sets the epoch of a DistributedSampler

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            time.sleep(self.delay)
            yield batch


def test_trainer_logs_the_time_spent_waiting_for_data(synthetic_data, tmp_path, one_torch_thread):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ote_detection.apis.task import Task
    from ote_detection.apis.train import build_train_dataset
    from ote_detection.engine.hooks import HookBase, LoggerHook
    from ote_detection.engine.optim import build_optimizer
    from ote_detection.engine.trainer import Trainer, build_train_loader

    ann, root = synthetic_data
    task = Task(template_path())
    task.set_input_size((64, 64))
    loader = build_train_loader(build_train_dataset(task.cfg, ann, root, task.classes), batch_size=4, workers=0)
    seen = []

    class Probe(HookBase):
        def after_iter(self):
            seen.append(dict(self.trainer.storage["time"]))

    records = {}
    for delay in (0.0, 0.3):
        model = task.build_detector()
        trainer = Trainer(model, SlowLoader(loader, delay), build_optimizer(model, task.cfg.optimizer),
                          max_epochs=1, progress=False)
        tb = tmp_path / f"tb{delay}"
        trainer.register_hooks([Probe(), LoggerHook(str(tb), interval=1)])
        records[delay] = trainer.train()[0]
    assert len(seen) == 2 * len(loader)
    for t in seen:
        assert set(t) == {"data", "forward", "backward", "optimizer", "iter"}
        assert 0 <= t["data"] < t["iter"]
        assert t["forward"] + t["backward"] + t["optimizer"] <= t["iter"]
    slow, fast = records[0.3], records[0.0]
    assert slow["data_time_s"] >= 0.3
    assert 0 < fast["data_wait"] < slow["data_wait"] < 1
    assert slow["data_wait"] == pytest.approx(slow["data_time_s"] / slow["iter_time_s"])
    events = EventAccumulator(str(tmp_path / "tb0.3")).Reload()
    data_times = [e.value for e in events.Scalars("train/data_time")]
    assert len(data_times) == len(loader) and min(data_times) >= 0.3
    assert [e.step for e in events.Scalars("epoch/data_wait")] == [1]


@pytest.mark.slow
def test_gpu_check_without_cuda_says_so_and_exits_0():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHON=sys.executable)
    r = subprocess.run(["bash", os.path.join(REPO, "benchmarks", "gpu_check.sh")], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["gpu_check: skipped, no CUDA device (torch.cuda.is_available() is false)"]
    assert r.stderr == ""


@pytest.mark.slow
def test_gpu_check_rows_run_on_the_cpu_dry_run():
    """Every row of the GPU check (steps, train.py under torchrun with one process, the 0206 snapshot's
    eval) on the CPU at 128x128: the script's own code paths work where no GPU is at hand."""
    need_shared("data", "airport")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "gpu_check.py"), "--cpu-dry-run",
                        "--templates", "0200", "--iters", "1"], env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = [line for line in r.stdout.splitlines() if line.startswith("| ") and "check" not in line]
    assert [row.split("|")[1].strip() for row in rows] == [
        "step 0200 fp32", f"step 0200 amp ({'bf16' if _cpu_bf16() else 'fp32'})",
        "train.py 0200 --gpu-num 0 (torchrun, gloo)", "train.py 0206 --gpu-num 0", "eval 0206 snapshot (cpu)"]
    assert all(row.split("|")[4].strip() == "ok" for row in rows)
    assert r.stdout.splitlines()[-1] == "gpu_check: all 5 checks ok"


def _cpu_bf16():
    from ote_detection.engine.trainer import amp_dtype
    return amp_dtype("cpu") is not None


# what the GPU machine's python3 lacks besides the wheels gpu_check.sh brings
BLOCKED = ("openvino", "nncf", "matplotlib", "torch_pruning", "torchao", "onnxscript")


@pytest.mark.slow
def test_training_and_torch_eval_run_without_openvino_and_nncf(work_dir_0200, tmp_path):
    """train.py and eval.py of a snapshot, in one process where importing OpenVINO, NNCF (and the other
    packages the GPU machine lacks) fails: neither path may import them."""
    need_shared("data", "airport")
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import runpy, sys
        for name in {BLOCKED!r}:
            sys.modules[name] = None  # "import openvino" now raises ImportError
        def cli(path, *args):
            sys.argv = [path, *args]
            try:
                runpy.run_path(path, run_name="__main__")
            except SystemExit as exc:
                assert not exc.code, (path, exc.code)
        wd = {str(work_dir_0200)!r}
        cli(wd + "/train.py", "--train-ann-files", {AIRPORT_ANN!r}, "--train-data-roots", {AIRPORT_ROOT!r},
            "--save-checkpoints-to", {str(out)!r}, "--epochs", "1", "--batch-size", "5", "--input-size", "128",
            "--workers", "0", "--gpu-num", "0")
        cli(wd + "/eval.py", "--load-weights", {str(out / "latest.pth")!r}, "--test-ann-files", {AIRPORT_ANN!r},
            "--test-data-roots", {AIRPORT_ROOT!r}, "--save-metrics-to", {str(tmp_path / "metrics.yaml")!r},
            "--cache-dir", "")
        loaded = sorted(m for m in {BLOCKED!r} if sys.modules.get(m) is not None)
        assert not loaded, loaded
        print("ok")
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", script], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert r.stdout.strip().endswith("ok")
    assert (tmp_path / "metrics.yaml").is_file()


def test_depthwise_convs_with_fp32_backward_keep_weights_and_numerics():
    """Under bf16 autocast the depthwise convolutions' forward is the same bf16 result and their gradients
    match autocast's own within bf16 rounding; outside autocast and in the state_dict nothing changes."""
    import torch

    from ote_detection.apis.task import Task
    from ote_detection.models.layers import Fp32DepthwiseConv2d, depthwise_convs_in_fp32

    task = Task(template_path())
    task.set_input_size((64, 64))
    torch.manual_seed(0)
    plain = task.build_detector().to(memory_format=torch.channels_last)
    changed = task.build_detector().to(memory_format=torch.channels_last)
    changed.load_state_dict(plain.state_dict())
    # MobileNetV2: one depthwise 3x3 per bottleneck (17); the SSD head: cls and reg of its 2 levels (4, with bias)
    assert depthwise_convs_in_fp32(changed) == 21
    assert list(changed.state_dict()) == list(plain.state_dict())
    assert sum(isinstance(m, Fp32DepthwiseConv2d) for m in changed.backbone.modules()) == 17
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    plain.eval(), changed.eval()
    with torch.no_grad():
        for a, b in zip(plain(x), changed(x)):
            for la, lb in zip(a, b):
                assert torch.equal(la, lb)  # fp32, no autocast: the same module
    plain.train(), changed.train()
    outs = {}
    for name, model in (("plain", plain), ("changed", changed)):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            levels = model(x)
        loss = sum(o.float().square().mean() for level in levels for o in level)
        loss.backward()
        dw = [m.weight.grad for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
        outs[name] = (loss.item(), dw)
    assert outs["changed"][0] == outs["plain"][0]  # the forward is autocast's bf16 forward
    for ga, gb in zip(outs["plain"][1], outs["changed"][1]):
        assert gb.dtype == torch.float32
        assert torch.allclose(ga, gb, rtol=0.05, atol=0.02 * ga.abs().max().item())
