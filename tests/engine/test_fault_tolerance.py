"""Fault tolerance of training (issue 23): --resume continues the same run from the newest complete checkpoint
(weights, optimizer, schedule, epoch, iteration, sampler position, random state), SIGTERM saves at the next
iteration boundary, torchrun's own restart after a kill -9 continues, two torchrun agents train one job, and
checkpoints are atomic. The multi-process tests are slow (real processes, gloo on the CPU, 96 px, 12 images)."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, child_processes, run_here
from ote_detection.artefacts.checkpoint import (find_resume_checkpoint, load_checkpoint_file, resume_position,
                                             run_identity, save_checkpoint)
from ote_detection.utils.errors import OteError

TINY = ["--batch-size", "4", "--input-size", "96", "--workers", "0"]


def _env():
    return dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(work, data, out, *extra):
    ann, root = data
    return [os.path.join(work, "train.py"), "--train-ann-files", ann, "--train-data-roots", root,
            "--save-checkpoints-to", str(out), *TINY, *extra]


def _meta(path):
    """The meta of a checkpoint another process may be replacing (atomic renames: whole or absent)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)["meta"]
    except (OSError, RuntimeError, EOFError, KeyError):
        return None


def _wait_for(proc, path, done, timeout=180):
    """Wait until the checkpoint ``path`` has ``done(meta)``; fails if ``proc`` ends first."""
    end = time.time() + timeout
    while time.time() < end:
        meta = _meta(path) if os.path.exists(path) else None
        if meta is not None and done(meta):
            return meta
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before {path} reached the point:\n"
                        f"{proc.stderr.read()[-3000:] if proc.stderr else ''}")
        time.sleep(0.05)
    pytest.fail(f"{path}: not reached in {timeout} s")


def _plain(text):
    """The log without tqdm's progress bars."""
    return "\n".join(line for line in re.split(r"[\r\n]", text) if "it/s" not in line and "s/it" not in line)


def _same_weights(a, b):
    sa, sb = load_checkpoint_file(str(a))["state_dict"], load_checkpoint_file(str(b))["state_dict"]
    assert sa.keys() == sb.keys()
    return max((sa[k].double() - sb[k].double()).abs().max().item() for k in sa if sa[k].numel())


# --- fast: the same-run decision and atomic saves -------------------------------------------------------------


def _tiny_checkpoint(path, run, epoch, epoch_iter=0):
    model = torch.nn.Linear(2, 1)
    save_checkpoint(str(path), model, meta=dict(template="t", epoch=epoch, epoch_iter=epoch_iter, run=run),
                    extra={"trainer": {"epoch_iter": epoch_iter, "batch_size": 4, "world_size": 2}})


def test_run_identity_records_template_config_data_and_seed(tmp_path):
    ann = tmp_path / "a.json"
    ann.write_text('{"images": []}')
    cfg = {"input_size": [96, 96], "optimizer": {"lr": 0.01}}
    base = run_identity("face-detection-0200", cfg, [str(ann)], 0)
    assert base == run_identity("face-detection-0200", dict(cfg), [str(ann)], 0)  # deterministic
    assert run_identity("face-detection-0204", cfg, [str(ann)], 0)["template"] != base["template"]
    assert run_identity("face-detection-0200", {**cfg, "input_size": [128, 128]}, [str(ann)], 0)["config"] != \
        base["config"]
    assert run_identity("face-detection-0200", cfg, [str(ann)], 1)["seed"] != base["seed"]
    ann.write_text('{"images": [1]}')  # the same path, other content: another run
    assert run_identity("face-detection-0200", cfg, [str(ann)], 0)["data"] != base["data"]


def test_newest_complete_checkpoint_of_the_same_run(tmp_path, caplog):
    run = {"template": "t", "config": "c", "data": "d", "seed": 0}
    assert find_resume_checkpoint(str(tmp_path), run) == (None, None, None)  # empty: start
    _tiny_checkpoint(tmp_path / "epoch_1.pth", run, 1)
    _tiny_checkpoint(tmp_path / "epoch_2.pth", run, 2)
    _tiny_checkpoint(tmp_path / "latest.pth", run, 2, epoch_iter=3)  # within epoch 3
    path, ckpt, meta = find_resume_checkpoint(str(tmp_path), run)
    assert os.path.basename(path) == "latest.pth" and (meta.epoch, meta.epoch_iter) == (2, 3)
    assert resume_position(ckpt, 4, 2) == (2, 3)
    assert resume_position(ckpt, 4, 1) == (2, 6)  # half the processes: twice the iterations for the same samples
    # a latest.pth damaged outside our writer (a copy cut short): the newest epoch that loads, the file kept
    (tmp_path / "latest.pth").write_bytes((tmp_path / "latest.pth").read_bytes()[:200])
    path, _, meta = find_resume_checkpoint(str(tmp_path), run)
    assert os.path.basename(path) == "epoch_2.pth" and meta.epoch == 2
    assert (tmp_path / "latest.pth.damaged").exists() and "latest.pth" in caplog.text
    # another run's checkpoints (here: another seed) are refused in one line naming what differs
    with pytest.raises(OteError, match=r"holds the checkpoints of another run \(epoch_2.pth: its --seed differ"):
        find_resume_checkpoint(str(tmp_path), dict(run, seed=1))
    with pytest.raises(OteError, match="training annotation files"):
        find_resume_checkpoint(str(tmp_path), dict(run, data="other"))
    # a checkpoint that records no run (older ote-face): one line pointing at --resume-from
    save_checkpoint(str(tmp_path / "epoch_3.pth"), torch.nn.Linear(2, 1), meta=dict(template="t", epoch=3))
    with pytest.raises(OteError, match="records no training run .* --resume-from"):
        find_resume_checkpoint(str(tmp_path), run)


def test_a_save_that_dies_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    """A save interrupted half-way (here: the writer fails after half the bytes, as a kill would leave it)
    leaves latest.pth as it was: the checkpoint is written beside it and renamed over it only when whole."""
    run = {"template": "t", "config": "c", "data": "d", "seed": 0}
    _tiny_checkpoint(tmp_path / "latest.pth", run, 1)
    before = (tmp_path / "latest.pth").read_bytes()
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        with open(f, "r+b") as fh:
            fh.truncate(os.path.getsize(f) // 2)
        raise KeyboardInterrupt  # not an error our code handles: the process ends here
    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        _tiny_checkpoint(tmp_path / "latest.pth", run, 2)
    monkeypatch.setattr(torch, "save", real_save)
    assert (tmp_path / "latest.pth").read_bytes() == before
    path, _, meta = find_resume_checkpoint(str(tmp_path), run)
    assert os.path.basename(path) == "latest.pth" and meta.epoch == 1


def test_resume_refuses_another_runs_folder_in_one_line(work_dir_0200, synthetic_data, tmp_path):
    out = tmp_path / "out"
    r = run_here(_args(work_dir_0200, synthetic_data, out, "--epochs", "1", "--resume"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "--resume: no checkpoint of this run" in r.stderr
    # the same folder, another seed: another run
    r = run_here(_args(work_dir_0200, synthetic_data, out, "--epochs", "2", "--resume", "--seed", "3"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "another run" in last and "--seed" in last, r.stderr[-2000:]
    r = run_here(_args(work_dir_0200, synthetic_data, out, "--epochs", "2", "--resume", "--resume-from",
                       str(out / "latest.pth")))
    assert r.returncode == 2 and "not both" in r.stderr


# --- slow: real processes --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_mid_epoch_saves_and_the_next_start_continues_there(work_dir_0200, synthetic_data, tmp_path):
    """SIGTERM within epoch 1 of 2: the run saves at the next iteration boundary and exits 143 with one line;
    the same command (--resume) continues at that iteration, through epoch 2, and ends with the weights of an
    uninterrupted run (workers 0: the sampler's order and the augmentation's random draws are restored too)."""
    extra = ["--epochs", "2", "--checkpoint-interval-iters", "2", "--resume"]
    straight = subprocess.run([sys.executable, *_args(work_dir_0200, synthetic_data, tmp_path / "a", *extra)],
                              env=_env(), capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-3000:]

    out = tmp_path / "b"
    cmd = [sys.executable, *_args(work_dir_0200, synthetic_data, out, *extra)]
    proc = subprocess.Popen(cmd, env=_env(), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    _wait_for(proc, str(out / "latest.pth"), lambda m: m["epoch"] == 0 and m.get("epoch_iter", 0) >= 2)
    proc.send_signal(signal.SIGTERM)
    err = _plain(proc.communicate(timeout=120)[1])
    assert proc.returncode == 143, err[-3000:]
    last = err.strip().splitlines()[-1]
    m = re.fullmatch(r"stopped: SIGTERM in epoch 1, after iteration (\d+) of (\d+); saved (.*latest\.pth): the same "
                     r"command with --resume continues from there", last)
    assert m, err[-3000:]
    at = int(m.group(1))
    meta = load_checkpoint_file(m.group(3))["meta"]
    assert (meta["epoch"], meta["epoch_iter"]) == (0, at) and 2 < at <= int(m.group(2))
    assert [n for n in os.listdir(out) if n != ".ote.lock"] == ["latest.pth"]  # nothing half-written left

    again = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    log = _plain(again.stderr)
    assert f"--resume: resuming from {out / 'latest.pth'} (in epoch 1, after iteration {at})" in log, log[-3000:]
    assert f"epochs 1-2 of 2 (resumed in epoch 1, after iteration {at})" in log, log[-3000:]
    assert load_checkpoint_file(str(out / "latest.pth"))["meta"]["epoch"] == 2
    assert _same_weights(out / "latest.pth", tmp_path / "a" / "latest.pth") < 1e-5


@pytest.mark.slow
def test_sigterm_to_the_whole_process_group_with_loader_workers(work_dir_0200, synthetic_data, tmp_path):
    """Slurm sends SIGTERM to every process of the job, data-loading workers included (--workers 1): they
    ignore it, and the training process still saves at the next iteration boundary and exits 143."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, *_args(work_dir_0200, synthetic_data, out, "--epochs", "3",
                                                    "--workers", "1")],
                            env=_env(), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    _wait_for(proc, str(out / "epoch_1.pth"), lambda m: m["epoch"] == 1)
    os.killpg(proc.pid, signal.SIGTERM)
    err = _plain(proc.communicate(timeout=120)[1])
    assert proc.returncode == 143, err[-3000:]
    m = re.search(r"stopped: SIGTERM (in epoch (\d+), after iteration (\d+) of \d+|after epoch (\d+)); saved", err)
    assert m and "Traceback" not in err and "killed by signal" not in err, err[-3000:]
    meta = load_checkpoint_file(str(out / "latest.pth"))["meta"]
    if m.group(2):
        assert (meta["epoch"] + 1, meta["epoch_iter"]) == (int(m.group(2)), int(m.group(3)))
    else:
        assert meta["epoch"] == int(m.group(4))


def _worker_pids(agent_pid):
    """{global rank: pid} of the processes a torchrun agent started."""
    return {int(env["RANK"]): pid for pid, _, env in child_processes(agent_pid) if "RANK" in env}


def _torchrun(*args):
    return [sys.executable, "-m", "torch.distributed.run", *args]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="finds the workers in /proc (Linux)")
def test_torchrun_restart_after_kill_9_resumes_and_finishes(work_dir_0200, synthetic_data, tmp_path):
    """torchrun --max-restarts 1, two processes; kill -9 of rank 1 in epoch 2: torchrun restarts both with the
    same arguments (no --resume given), they continue from the newest checkpoint of the run and finish all 3
    epochs; the log says where it resumed, and the plan line (world size) is printed once per start."""
    out = tmp_path / "out"
    port = _free_port()
    cmd = _torchrun("--nnodes", "1", "--nproc-per-node", "2", "--max-restarts", "1", "--rdzv-backend", "c10d",
                    "--rdzv-endpoint", f"127.0.0.1:{port}", "--monitor-interval", "0.5",
                    *_args(work_dir_0200, synthetic_data, out, "--epochs", "3", "--checkpoint-interval-iters", "1"))
    agent = subprocess.Popen(cmd, env=_env(), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        _wait_for(agent, str(out / "latest.pth"), lambda m: m["epoch"] >= 1 and m.get("epoch_iter", 0) >= 1)
        workers = _worker_pids(agent.pid)
        assert sorted(workers) == [0, 1], workers
        os.kill(workers[1], signal.SIGKILL)
        err = _plain(agent.communicate(timeout=240)[1])
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode == 0, err[-4000:]
    meta = load_checkpoint_file(str(out / "latest.pth"))["meta"]
    assert meta["epoch"] == 3 and meta["run"]["template"] == "face-detection-0200"
    m = re.search(r"torchrun restart 1: resuming from (\S+) \((in epoch \d+, after iteration \d+|after epoch \d+)\)",
                  err)
    assert m, err[-4000:]
    assert err.count("2 process(es) on CPU (gloo)") == 2, err[-4000:]  # the first start and the restart, rank 0
    assert err.count("training data (") == 2, err[-4000:]  # the data line: once per start, not per rank
    assert sorted(n for n in os.listdir(out) if n.endswith(".pth")) == ["epoch_1.pth", "epoch_2.pth", "epoch_3.pth",
                                                                      "latest.pth"]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="finds the workers in /proc (Linux)")
def test_two_torchrun_agents_as_two_nodes_train_one_job(work_dir_0200, synthetic_data, tmp_path):
    """Two torchrun agents on 127.0.0.1 as two nodes (--nnodes 2 --node-rank 0|1 --master-addr, one process
    each, --max-restarts 1) train one job to the end, also after a kill -9 of node 1's worker: both agents
    restart, the job resumes from node 0's newest checkpoint, and there is one set of checkpoints (node 0's:
    global rank 0; node 1 gets its own folder, as on another machine, and writes nothing). The log states
    2 processes on 2 nodes, once per start."""
    port = _free_port()
    outs = [tmp_path / "node0", tmp_path / "node1"]
    agents = []
    for node in (0, 1):
        cmd = _torchrun("--nnodes", "2", "--node-rank", str(node), "--nproc-per-node", "1", "--master-addr",
                        "127.0.0.1", "--master-port", str(port), "--max-restarts", "1", "--monitor-interval", "0.5",
                        *_args(work_dir_0200, synthetic_data, outs[node], "--epochs", "3",
                               "--checkpoint-interval-iters", "1", "--resume"))
        agents.append(subprocess.Popen(cmd, env=_env(), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True))
    try:
        _wait_for(agents[0], str(outs[0] / "latest.pth"), lambda m: m["epoch"] >= 1)
        workers = _worker_pids(agents[1].pid)
        assert list(workers) == [1], workers
        os.kill(workers[1], signal.SIGKILL)
        errs = [_plain(a.communicate(timeout=300)[1]) for a in agents]
    finally:
        for a in agents:
            if a.poll() is None:
                a.kill()
    assert [a.returncode for a in agents] == [0, 0], "\n---\n".join(e[-3000:] for e in errs)
    assert sorted(n for n in os.listdir(outs[0]) if n.endswith(".pth")) == ["epoch_1.pth", "epoch_2.pth",
                                                                          "epoch_3.pth", "latest.pth"]
    assert not os.path.exists(outs[1]) or not [n for n in os.listdir(outs[1]) if n.endswith(".pth")]
    assert re.search(r"torchrun restart 1: resuming from \S+node0/latest\.pth", errs[0]), errs[0][-3000:]
    both = errs[0] + errs[1]
    assert both.count("2 process(es) on 2 nodes (1 per node) on CPU (gloo)") == 2, both[-3000:]
    assert both.count("training data (") == 2, both[-3000:]
    assert load_checkpoint_file(str(outs[0] / "latest.pth"))["meta"]["epoch"] == 3


def test_amp_decision_by_its_inputs(monkeypatch):
    """--amp on an AVX2-only CPU runs fp32 and the plan line says so and why (this machine's CPU features are
    replaced: the decision is a function of them); with AMX or AVX512-BF16 bf16; on CUDA bf16 or fp16."""
    from ote_detection.apis.train import _precision_text
    from ote_detection.engine import trainer
    dtype, reason = trainer.choose_amp("cpu", cpu_amx=False, cpu_avx512_bf16=False)
    assert dtype is None and "neither AMX nor AVX512-BF16" in reason and "fp32" in reason
    assert trainer.choose_amp("cpu", cpu_avx512_bf16=True) == (torch.bfloat16, "bf16 autocast (AVX512-BF16)")
    assert trainer.choose_amp("cpu", cpu_amx=True, cpu_avx512_bf16=True)[1] == "bf16 autocast (AMX)"
    assert trainer.choose_amp("cuda", cuda_bf16=True)[0] == torch.bfloat16
    assert trainer.choose_amp("cuda", cuda_bf16=False)[0] == torch.float16
    assert _precision_text(False, False) == ""
    monkeypatch.setattr(trainer, "cpu_bf16_support", lambda: (False, False))  # an AVX2-only CPU
    assert _precision_text(True, False) == f"; --amp: {reason}"
    assert trainer.amp_dtype("cpu") is None
    monkeypatch.setattr(trainer, "cpu_bf16_support", lambda: (False, True))
    assert _precision_text(True, False) == ", mixed precision (bf16 autocast (AVX512-BF16))"


def test_sampler_state_continues_the_order_within_and_after_an_epoch():
    """The batch sampler's state restores the order of the epoch being continued (within it: the batches done
    are skipped) and, taken at an epoch's end, the next epoch's order."""
    from ote_detection.engine.trainer import NoSingletonBatchSampler

    def sampler():
        return NoSingletonBatchSampler(torch.utils.data.RandomSampler(range(10), generator=torch.Generator()
                                                                      .manual_seed(5)), 3)
    straight = sampler()
    epoch1, epoch2 = list(straight), list(straight)
    within = sampler()
    first = iter(within)
    next(first)
    state = within.state_dict()  # after one batch of epoch 1
    resumed = sampler()
    resumed.load_state_dict(state)
    resumed.skip = 1
    assert list(resumed) == epoch1[1:] and list(resumed) == epoch2
    ended = sampler()
    list(ended)
    resumed = sampler()
    resumed.load_state_dict(ended.state_dict(epoch_done=True))
    assert list(resumed) == epoch2
