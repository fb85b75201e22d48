"""torch.distributed set-up: one process per device (NCCL on GPUs, gloo on CPU), spawned or from torchrun."""

import datetime
import logging
import os
import socket
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..utils.errors import OteError


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local_rank)
    if init_method:
        dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size,
                                timeout=collective_timeout())
    else:  # torchrun's environment
        dist.init_process_group(backend, timeout=collective_timeout())


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def world_size():
    return dist.get_world_size() if dist.is_initialized() else 1


def barrier():
    if dist.is_initialized():
        dist.barrier()


def all_reduce_mean(value):
    if not dist.is_initialized():
        return value
    t = torch.tensor([float(value)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
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


def cleanup():
    if dist.is_initialized():
        dist.destroy_process_group()


def _spawned(rank, fn, world_size, use_cuda, init_method, args, error_dir):
    # spawned processes start with no logging set up: the main rank reports like a single process; the
    # others only errors (their warnings repeat the main rank's, once per process)
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.ERROR, format="%(message)s")
    if not use_cuda and "OMP_NUM_THREADS" not in os.environ:  # share the cores, not one thread per core each
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    try:
        init_process(rank, world_size, use_cuda, init_method)
        fn(*args)
    except BaseException as exc:
        # the first process to fail is the cause; the others then fail in collectives ("connection closed
        # by peer"). Each records its error with the time, so that launch() reports the first one.
        path = os.path.join(error_dir, f"{time.time():.6f}-{rank}.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"{type(exc).__name__}\n{exc}")
        raise
    finally:
        cleanup()


def launch(fn, num_processes, use_cuda, args=()):
    """Run ``fn(*args)`` in ``num_processes`` DDP processes on this machine (or in this one if 1).

    When a process raises, ``torch.multiprocessing.spawn`` ends the others, and the job fails here with
    the error of the process that failed first (an OteError stays one line for the CLI); collectives
    time out after ``collective_timeout()``, so a peer that died without raising cannot hang the job."""
    if launched_by_torchrun():
        init_process(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), use_cuda)
        try:
            return fn(*args)
        finally:
            cleanup()
    if num_processes <= 1:
        return fn(*args)
    init_method = f"tcp://127.0.0.1:{free_port()}"
    with tempfile.TemporaryDirectory(prefix="ote-dist-errors-") as error_dir:
        try:
            mp.spawn(_spawned, args=(fn, num_processes, use_cuda, init_method, args, error_dir),
                     nprocs=num_processes, join=True)
        except Exception as exc:
            reports = sorted(os.listdir(error_dir))
            if not reports:
                raise
            rank = reports[0].rsplit("-", 1)[1].split(".")[0]
            with open(os.path.join(error_dir, reports[0]), encoding="utf-8") as f:
                kind, _, message = f.read().partition("\n")
            if kind == "OteError":
                raise OteError(message) from exc
            raise RuntimeError(f"training process {rank} failed: {kind}: {message}") from exc
    return None
