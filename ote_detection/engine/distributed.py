"""torch.distributed set-up: one process per device (NCCL on GPUs, gloo on CPU), spawned or from torchrun."""

import contextlib
import datetime
import gc
import logging
import os
import signal
import socket
import tempfile
import threading
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..utils.errors import OteError, TrainingStopped


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_rank():
    """This process's global rank as its launcher set it (0 outside torchrun), before the group exists."""
    return int(os.environ.get("RANK", "0")) if launched_by_torchrun() else 0


def restart_count():
    """How often torchrun restarted this job's workers (``TORCHELASTIC_RESTART_COUNT``; 0 outside torchrun)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) if launched_by_torchrun() else 0


def job_shape(processes):
    """(world size, nodes, processes per node) of this job: torchrun's WORLD_SIZE, GROUP_WORLD_SIZE (its
    agents: one per node) and LOCAL_WORLD_SIZE; else ``processes`` on this one machine."""
    if not launched_by_torchrun():
        return processes, 1, processes
    world = int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world) or world)
    nodes = int(os.environ.get("GROUP_WORLD_SIZE", 0) or max(1, world // max(local, 1)))
    return world, nodes, local


def quiet_other_ranks():
    """Under torchrun every process runs the whole tool: the processes other than global rank 0 log errors
    only, so that each line of the job is printed once (spawned processes: ``_spawned``)."""
    if env_rank() != 0:
        logging.getLogger().setLevel(logging.ERROR)


def launched_by_torchrun():
    """True in a process started by torchrun (also with one process: ``--nproc_per_node=1`` runs the
    process-group and DDP path on one device) or by another launcher that sets RANK and WORLD_SIZE > 1."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return False
    return int(os.environ["WORLD_SIZE"]) > 1 or "TORCHELASTIC_RUN_ID" in os.environ


def collective_timeout():
    """How long a collective waits for the other processes before the job fails (default 10 minutes;
    OTE_DIST_TIMEOUT_S overrides): a dead or stuck peer ends the job instead of hanging it."""
    return datetime.timedelta(seconds=float(os.environ.get("OTE_DIST_TIMEOUT_S", 600)))


def init_process(rank, world_size, use_cuda, init_method=None):
    """Join the process group. torch._dynamo is imported first: imported after the process group exists
    (DistributedDataParallel's constructor imports it), it keeps a reference to the group, which then
    outlives ``destroy_process_group`` with its worker threads (see ``cleanup``)."""
    import torch._dynamo  # noqa: F401
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local_rank)
    if init_method:
        dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size,
                                timeout=collective_timeout())
    else:  # torchrun's environment
        dist.init_process_group(backend, store=_attempt_store(), rank=rank, world_size=world_size,
                                timeout=collective_timeout())


def _attempt_store():
    """torchrun's store (MASTER_ADDR:MASTER_PORT, ``env://``), under a prefix of its own for each start of
    the workers where torchrun shares one store across restarts (TORCHELASTIC_USE_AGENT_STORE=True: the
    default of c10d and static rendezvous). There, in torch 2.14, the process group's keys (gloo's and
    NCCL's addresses) are not isolated between restarts: the workers of a restart read the addresses of the
    dead ones and fail to connect (pytorch/pytorch#135712; seen here as "Gloo connectFullMesh failed ...
    Connection refused"). TORCHELASTIC_RESTART_COUNT names the attempt: every agent counts its restarts,
    and a failure anywhere fails the workers everywhere. A machine that joins later (a replacement, a
    scale-up with --nnodes MIN:MAX) counts from 0: for those, TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 gives
    every rendezvous round a new store, and no prefix is used (docs/distributed.md)."""
    store, _, _ = next(dist.rendezvous("env://", timeout=collective_timeout()))
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != str(True):
        return store
    return dist.PrefixStore(f"ote_detection/attempt_{restart_count()}", store)


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def rank():
    return dist.get_rank() if dist.is_initialized() else 0


def world_size():
    return dist.get_world_size() if dist.is_initialized() else 1


def _device():
    return "cuda" if dist.get_backend() == "nccl" else "cpu"


def all_gather_object(obj):
    """[the object of each rank] (a collective); [obj] without a process group."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src=0):
    """``src``'s ``obj`` on every rank (a collective; pickled: tensors included); ``obj`` without a group."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def any_rank(flag):
    """True on every rank when ``flag`` is true on any (a collective); ``flag`` without a process group."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier():
    if dist.is_initialized():
        dist.barrier()


def all_reduce_mean(value):
    if not dist.is_initialized():
        return value
    t = torch.tensor([float(value)], device=_device())
    dist.all_reduce(t)
    return t.item() / dist.get_world_size()


def _match_param_strides(size, stride):
    """A gradient hook for a parameter of ``size`` and ``stride``: a gradient of the same element order whose
    strides differ only on dimensions of size 1 comes back as a view with the parameter's strides (no copy;
    the same elements at the same addresses); any other gradient is left as it is."""
    def hook(grad):
        if grad.layout != torch.strided or grad.shape != size or grad.stride() == stride:
            return None
        if any(n != 1 and a != b for n, a, b in zip(size, grad.stride(), stride)):
            return None  # another element order: AccumulateGrad copies it into the parameter's layout
        return grad.as_strided(size, stride, grad.storage_offset())
    return hook


def check_same_entries(model):
    """OteError unless every process holds ``model``'s parameters and buffers under the same names in the
    same order: DDP pairs them across processes by position (the broadcast from rank 0 at construction and
    of the buffers before every forward, the gradient buckets), and checks only their shapes."""
    if not dist.is_initialized() or dist.get_world_size() < 2:
        return
    names = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]
    every = [None] * dist.get_world_size()
    dist.all_gather_object(every, names)
    for rank, other in enumerate(every):
        if other != every[0]:
            at = next((i for i, (a, b) in enumerate(zip(every[0], other)) if a != b), min(len(other), len(every[0])))
            mine, theirs = (every[0] + ["(none)"])[at], (other + ["(none)"])[at]
            raise OteError(f"DDP: the processes hold the model's entries in different orders (entry {at}: {mine} on "
                           f"rank 0, {theirs} on rank {rank}); their weights would be mixed up")


def wrap_ddp(model, device, replaces=None):
    """``model`` in ``DistributedDataParallel`` (the one place that does it; ``replaces``: the wrapper this
    one takes over from, e.g. after pruning replaced parameters, whose hooks are removed).

    DDP copies each gradient into a bucket view with its parameter's strides and warns ("Grad strides do not
    match bucket view strides") where the gradient's strides differ. On a tensor with a dimension of size 1
    the stride of that dimension is arbitrary: a 1x1 convolution weight [O, I, 1, 1] is both contiguous and
    channels_last, and ``Module.to(memory_format=torch.channels_last)`` gives it strides (I, 1, I, I), which a
    channels_last convolution's weight gradient has, while a gradient computed elementwise (through NNCF's
    sparsity masks) comes out as (I, 1, 1, 1); depthwise weights [C, 1, k, k] and the scales [1, C, 1, 1] of
    NNCF's per-channel activation quantizers likewise (pytorch/pytorch#47163, #157862). Same bytes, same
    element order. Each parameter with a dimension of size 1 therefore gets a gradient hook that gives such a
    gradient the parameter's strides as a view, so that every gradient matches its bucket view (values
    unchanged, nothing copied)."""
    from torch.nn.parallel import DistributedDataParallel
    if replaces is not None:
        for handle in getattr(replaces, "_ote_stride_hooks", ()):
            handle.remove()
    check_same_entries(model)
    device = torch.device(device)
    ids = [device.index] if device.type == "cuda" else None
    net = DistributedDataParallel(model, device_ids=ids)
    net._ote_stride_hooks = [p.register_hook(_match_param_strides(p.shape, p.stride()))
                             for p in model.parameters() if p.requires_grad and 1 in p.shape]
    return net


def cleanup(ok=True):
    """Leave the process group while the interpreter is still whole. ``ok``: this process finished its work
    and met the others at a barrier (False: it is failing; the launcher stops the others).

    The objects that hold the group (DistributedDataParallel's reducer, kept by the trainer's reference
    cycles) are collected first, so that ``destroy_process_group`` drops its last reference and gloo's
    destructor joins its worker threads here. Left running, a worker that releases the last collective's
    tensors while the interpreter shuts down takes the GIL from a dying interpreter: ``pthread_exit`` unwinds
    through a ``noexcept`` destructor and the process aborts with "terminate called without an active
    exception" (reported in about 1 of 8 two-process compress.py runs on a loaded machine)."""
    if not dist.is_initialized():
        return
    if ok:
        gc.collect()
    dist.destroy_process_group()


def _spawned(rank, fn, world_size, use_cuda, init_method, args, error_dir):
    # spawned processes start with no logging set up: the main rank reports like a single process; the
    # others only errors (their warnings repeat the main rank's, once per process)
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.ERROR, format="%(message)s")
    if not use_cuda and "OMP_NUM_THREADS" not in os.environ:  # share the cores, not one thread per core each
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    ok = False
    try:
        init_process(rank, world_size, use_cuda, init_method)
        fn(*args)
        barrier()  # every rank done with its collectives before any leaves the group
        ok = True
    except BaseException as exc:
        # the first process to fail is the cause; the others then fail in collectives ("connection closed
        # by peer"). Each records its error with the time, so that launch() reports the first one.
        path = os.path.join(error_dir, f"{time.time():.6f}-{rank}.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"{type(exc).__name__}\n{exc}")
        raise
    finally:
        cleanup(ok)


def launch(fn, num_processes, use_cuda, args=()):
    """Run ``fn(*args)`` in ``num_processes`` DDP processes on this machine (or in this one if 1).

    When a process raises, the others are ended, and the job fails here with the error of the process that
    failed first (an OteError, e.g. ``TrainingStopped``, stays one line for the CLI); a process ended by a
    signal (kill -9, the kernel's out-of-memory killer) is one line naming its rank and the signal (the
    others then fail in their collectives: not the cause). Collectives time out after
    ``collective_timeout()``, so a peer that died without raising cannot hang the job. A SIGTERM to this
    process is passed on to the training processes (they save at their next iteration boundary and stop)."""
    if launched_by_torchrun():
        init_process(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), use_cuda)
        ok = False
        try:
            result = fn(*args)
            barrier()
            ok = True
            return result
        except OteError as exc:
            exc.quiet = exc.quiet or not is_main()  # rank 0 says it once for the job
            raise
        except RuntimeError as exc:
            lost = _peer_lost(exc)
            if lost is None:
                raise
            raise OteError(f"process {os.environ['RANK']} of {os.environ['WORLD_SIZE']}: another process of the "
                           f"job is gone ({lost}); torchrun restarts the job if --max-restarts allows") from None
        finally:
            cleanup(ok)
    if num_processes <= 1:
        return fn(*args)
    init_method = f"tcp://127.0.0.1:{free_port()}"
    _quiet_resource_tracker()
    with tempfile.TemporaryDirectory(prefix="ote-dist-errors-") as error_dir:
        context = mp.start_processes(_spawned, args=(fn, num_processes, use_cuda, init_method, args, error_dir),
                                     nprocs=num_processes, join=False, start_method="spawn")
        with _passing_on(signal.SIGTERM, context.processes):
            failed = _join_until_failure(context.processes)
        if failed:
            raise _job_error(context.processes, error_dir)
    return None


def _join_until_failure(processes, settle_s=2.0):
    """Wait for ``processes``; True when one fails. Then the failure is read before anything else is ended:
    the others get ``settle_s`` to fail in their own collectives (a process killed by a signal and the peers
    it leaves behind end within moments of each other), then the ones left are killed (they cannot go on
    without the failed one; torch's own join would send SIGTERM, which training defers to its next
    iteration boundary, then SIGKILL after 30 s, and a signal of ours would blur which process was killed)."""
    from multiprocessing.connection import wait
    pending = {p.sentinel: p for p in processes}
    while pending:
        for sentinel in wait(list(pending)):
            process = pending.pop(sentinel)
            process.join()
            if process.exitcode != 0:
                end = time.time() + settle_s
                while any(p.is_alive() for p in processes) and time.time() < end:
                    time.sleep(0.05)
                for p in processes:
                    if p.is_alive():
                        p._ote_killed = True  # ended by us: not a cause
                        p.kill()
                    p.join()
                return True
    return False


_TRACKER_WARNING = "ignore::UserWarning:multiprocessing.resource_tracker"


def _quiet_resource_tracker():
    """The training processes' semaphores (their data loaders' queues) are registered with this process's
    resource tracker; one killed (kill -9, out of memory) cannot release its own, and the tracker, which
    removes them, then warns 'There appear to be N leaked semaphore objects' when the job ends: after the
    one line that names the killed process, noise. The tracker takes its warning filters from
    ``sys.warnoptions`` when it starts (``multiprocessing.resource_tracker.ensure_running``), so the filter
    is added before the first process is spawned; it hides nothing else (normal runs leak nothing)."""
    import sys
    from multiprocessing import resource_tracker
    if _TRACKER_WARNING not in sys.warnoptions and getattr(resource_tracker._resource_tracker, "_pid", None) is None:
        sys.warnoptions.append(_TRACKER_WARNING)


_PEER_LOST = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "Connection refused")


def _peer_lost(exc):
    """The words of a collective's error that says a peer process is gone (gloo's socket errors), else None."""
    text = str(exc)
    return next((words for words in _PEER_LOST if words in text), None)


@contextlib.contextmanager
def _passing_on(signum, processes):
    """While in the block, ``signum`` sent to this process is sent to each live process of ``processes``."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def pass_on(sig, frame):
        for process in processes:
            if process.is_alive():
                with contextlib.suppress(OSError):
                    os.kill(process.pid, sig)
    previous = signal.signal(signum, pass_on)
    try:
        yield
    finally:
        signal.signal(signum, previous)


def _job_error(processes, error_dir):
    """The one error that says why a spawned job failed (``_join_until_failure`` has ended them all): a process
    ended by a signal other than SIGTERM before the others were ended, else the first error a process
    recorded, else an exit code."""
    n = len(processes)
    for rank, process in enumerate(processes):
        code = process.exitcode
        if code is not None and code < 0 and -code != signal.SIGTERM and not getattr(process, "_ote_killed", False):
            return OteError(f"training process {rank} of {n} was killed by signal {-code} "
                            f"({_signal_name(-code)}); the job stopped")
    reports = sorted(os.listdir(error_dir))
    if reports:
        rank = reports[0].rsplit("-", 1)[1].split(".")[0]
        with open(os.path.join(error_dir, reports[0]), encoding="utf-8") as f:
            kind, _, message = f.read().partition("\n")
        if kind == "TrainingStopped":
            return TrainingStopped(message)
        if kind == "OteError":
            return OteError(message)
        return RuntimeError(f"training process {rank} failed: {kind}: {message}")
    for rank, process in enumerate(processes):
        code = process.exitcode
        if code:
            how = f"was ended by signal {-code} ({_signal_name(-code)})" if code < 0 else f"exited with code {code}"
            return OteError(f"training process {rank} of {n} {how}; the job stopped")
    return RuntimeError("the training processes failed")


def _signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown signal"
