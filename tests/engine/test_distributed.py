"""engine/distributed.py: a failing worker ends the whole job (two gloo processes on the CPU)."""

import pytest
import torch

from ote_detection.engine import distributed as dist_utils
from ote_detection.utils.errors import OteError


def _fail_on_rank_1():
    if torch.distributed.get_rank() == 1:
        raise OteError("worker 1 found a bad file")
    torch.distributed.barrier()  # rank 0 would wait here for ever without the failure handling


@pytest.mark.slow
def test_a_failing_worker_ends_the_distributed_job():
    with pytest.raises(OteError, match="^worker 1 found a bad file$"):
        dist_utils.launch(_fail_on_rank_1, 2, use_cuda=False)


def _native_threads():
    """Threads of this process that Python did not start (gloo's workers and transport loop, among others)."""
    import os
    import threading
    return len(os.listdir("/proc/self/task")) - len(threading.enumerate())


def _train_step_in_a_cycle_then_note_threads(out_dir):
    import atexit
    import os
    from torch.distributed import all_gather
    rank, at_start = torch.distributed.get_rank(), _native_threads()
    net = dist_utils.wrap_ddp(torch.nn.Linear(4, 2), "cpu")
    holder = {"net": net}
    holder["self"] = holder  # a reference cycle (the trainer's hooks hold the trainer) keeps the DDP model alive
    net(torch.ones(2, 4)).sum().backward()
    gathered = [torch.zeros(3) for _ in range(2)]
    all_gather(gathered, torch.ones(3))  # the last collective, on tensors Python then drops
    del gathered, net, holder

    def note():  # at interpreter exit, after launch's cleanup
        with open(os.path.join(out_dir, f"rank{rank}.txt"), "w", encoding="utf-8") as f:
            f.write(f"{at_start} {_native_threads()}")
    atexit.register(note)


@pytest.mark.slow
@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self/task"), reason="counts threads in /proc (Linux)")
def test_processes_leave_the_group_before_interpreter_exit(tmp_path):
    """Each process ends its process group while the interpreter is whole: gloo's worker threads are joined
    before the interpreter shuts down (a worker left running that releases the last collective's tensors at
    exit aborts the process with "terminate called without an active exception"), although DDP was built
    after the group and is kept alive by a reference cycle."""
    dist_utils.launch(_train_step_in_a_cycle_then_note_threads, 2, use_cuda=False, args=(str(tmp_path),))
    for rank in (0, 1):
        at_start, at_exit = map(int, (tmp_path / f"rank{rank}.txt").read_text().split())
        assert at_exit <= at_start - 2, (rank, at_start, at_exit)  # gloo's 2 worker threads (its default) ended


@pytest.mark.slow
@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self"), reason="finds the processes in /proc (Linux)")
def test_a_training_process_killed_by_a_signal_is_one_line(work_dir_0200, synthetic_data, tmp_path):
    """train.py --gpu-num 2 (spawned gloo processes, data-loading workers), kill -9 of process 1 in epoch 2: the
    job stops with one line naming the process and the signal; no traceback of the survivor's collective, no
    'leaked semaphore' warnings (issue 24). compress.py's case: tests/compression/test_compression.py."""
    import sys
    from conftest import assert_one_line_for_the_killed_process, kill_rank_1_after_epoch_1
    ann, root = synthetic_data
    out = tmp_path / "out"
    code, err = kill_rank_1_after_epoch_1(
        [sys.executable, str(work_dir_0200 / "train.py"), "--train-ann-files", ann, "--train-data-roots", root,
         "--save-checkpoints-to", str(out), "--batch-size", "4", "--input-size", "96", "--workers", "1",
         "--epochs", "4", "--gpu-num", "2"], out)
    assert_one_line_for_the_killed_process(code, err)
