"""The training loop: epochs over a DataLoader, with hooks (``engine/hooks.py``) for everything else.

The same loop runs in one process (CPU or one GPU) and in each DDP process. Checkpoints, validation,
tensorboard, the LR schedule and compression schedules are hooks; the loop itself only runs the
forward (under autocast with ``amp``), the backward and the optimizer step.
"""

import logging
import math
import random
import signal
import threading
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler
from tqdm import tqdm

from ..data.coco import collate_train
from ..models.layers import depthwise_convs_in_fp32
from ..utils.errors import OteError, TrainingStopped
from . import distributed as dist_utils

log = logging.getLogger(__name__)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _worker_init(worker_id):
    """A data-loading worker: its Python and NumPy generators seeded from torch's per-worker seed, and
    SIGTERM ignored: Slurm sends it to every process of the job, and the training process, which stops at
    the next iteration boundary (``StopSignal``), still needs its loader; the workers end with it."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class NoSingletonBatchSampler(Sampler):
    """Batches of ``batch_size`` indices of ``sampler`` (the last one shorter), where a trailing batch of ONE
    index gets a second one (the epoch's first index; itself when the epoch has one): train-mode BatchNorm
    cannot normalise one value per channel, which a single image with a 1x1 coarsest feature map gives
    (mmdetection's GroupSampler pads its epochs to whole batches for the same reason). ``len`` =
    ceil(len(sampler) / batch_size); under DDP each process's share is batched on its own."""

    def __init__(self, sampler, batch_size):
        self.sampler, self.batch_size = sampler, int(batch_size)
        self.skip = 0  # batches the next pass leaves out (a run resumed within an epoch)
        self.epoch_generator_state = None

    def __iter__(self):
        generator = getattr(self.sampler, "generator", None)  # RandomSampler's: its state draws the order
        if generator is not None:
            self.epoch_generator_state = generator.get_state().clone()
        indices = list(self.sampler)
        skip, self.skip = self.skip, 0
        for start in range(skip * self.batch_size, len(indices), self.batch_size):
            batch = indices[start:start + self.batch_size]
            if len(batch) == 1 and self.batch_size > 1:
                batch.append(indices[0] if len(indices) > 1 and start > 0 else batch[0])
            yield batch

    def __len__(self):
        return math.ceil(len(self.sampler) / self.batch_size)

    def state_dict(self, epoch_done=False):
        """Where the order of the epoch to continue comes from: the sampler's generator state at the start of
        the current epoch (its order is drawn again, and the batches done are skipped), or with
        ``epoch_done`` its state now (the next epoch's order is drawn from it). A DistributedSampler's
        order is its seed and epoch: nothing to keep."""
        generator = getattr(self.sampler, "generator", None)
        if generator is None:
            return {}
        state = generator.get_state() if epoch_done or self.epoch_generator_state is None \
            else self.epoch_generator_state
        return {"generator": state}

    def load_state_dict(self, state):
        """Restore ``state_dict()``: the next pass draws the same order as the epoch it was taken in."""
        generator = getattr(self.sampler, "generator", None)
        if generator is not None and (state or {}).get("generator") is not None:
            generator.set_state(state["generator"])


def build_train_loader(dataset, batch_size, workers, seed=0, pin_memory=False):
    """The training DataLoader: shuffled (a DistributedSampler under DDP, seeded), batches
    (``NoSingletonBatchSampler``: no trailing batch of one) of ``collate_train``: (imgs [B, 3, H, W],
    list of boxes [G, 4], list of labels [G])."""
    if dist_utils.world_size() > 1:
        sampler = DistributedSampler(dataset, shuffle=True, seed=seed)
    else:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    return DataLoader(dataset, batch_sampler=NoSingletonBatchSampler(sampler, batch_size), num_workers=workers,
                      collate_fn=collate_train, worker_init_fn=_worker_init, persistent_workers=workers > 0,
                      pin_memory=pin_memory)


def check_batch_statistics(input_size, stride, batch_size):
    """OteError when train-mode BatchNorm would get one value per channel: a batch of one image whose
    coarsest feature map (``input_size`` (w, h) / the model's largest ``stride``) is 1x1."""
    w, h = input_size
    cells = max(1, math.ceil(w / stride)) * max(1, math.ceil(h / stride))
    if int(batch_size) * cells < 2:
        raise OteError(f"--batch-size {batch_size} at input {w}x{h}: the coarsest feature map (stride {stride}) is "
                       f"1x1, and BatchNorm cannot train on one value per channel; give --batch-size 2 or more, or "
                       f"an input side over {stride} px")


def cpu_bf16_support():
    """(has AMX, has AVX512-BF16) of this CPU, as torch's oneDNN sees them."""
    cpu = getattr(torch, "cpu", None)
    return tuple(bool(getattr(cpu, name, lambda: False)()) for name in
                 ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))


def choose_amp(device_type, cuda_bf16=False, cpu_amx=False, cpu_avx512_bf16=False):
    """The decision behind ``--amp``, from its inputs alone: ``(autocast dtype or None, reason)``.

    CUDA: bf16 where the GPU supports it (Ampere and later), else fp16 (with a GradScaler). CPU: bf16 where
    oneDNN has bf16 kernels (AMX or AVX512-BF16); without them bf16 is emulated and slower than fp32
    (stack notes: the 2.2x of bf16 autocast was measured on AMX), so the run stays fp32 and ``reason``
    says why, in the words of the log line."""
    if device_type == "cuda":
        return (torch.bfloat16, "bf16 autocast") if cuda_bf16 else (torch.float16, "fp16 autocast with a "
                                                                                  "gradient scaler")
    if cpu_amx or cpu_avx512_bf16:
        return torch.bfloat16, "bf16 autocast (" + ("AMX" if cpu_amx else "AVX512-BF16") + ")"
    return None, ("this CPU has neither AMX nor AVX512-BF16, so bf16 would be emulated and slower than fp32: "
                  "training runs in fp32")


def amp_dtype(device):
    """The autocast dtype for ``--amp`` on ``device`` (``choose_amp`` with this machine's features): bf16 on
    CPUs with AMX or AVX512-BF16 and on CUDA GPUs that support it, fp16 (with a GradScaler) on older GPUs;
    None where mixed precision does not pay."""
    return amp_plan(device)[0]


def amp_plan(device):
    """``choose_amp`` for ``device`` on this machine: (dtype or None, reason)."""
    device = torch.device(device)
    if device.type == "cuda":
        return choose_amp("cuda", cuda_bf16=torch.cuda.is_bf16_supported())
    amx, avx512_bf16 = cpu_bf16_support()
    return choose_amp("cpu", cpu_amx=amx, cpu_avx512_bf16=avx512_bf16)


def rng_state():
    """This process's random state (Python, NumPy, torch, and the current CUDA device's), as tensors and
    plain values (checkpoints load with ``weights_only``)."""
    version, keys, gauss = random.getstate()
    kind, mt, pos, has_gauss, cached = np.random.get_state()
    state = {"python": {"version": version, "state": torch.tensor(keys, dtype=torch.int64), "gauss": gauss},
             "numpy": {"kind": kind, "state": torch.from_numpy(mt.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state):
    """Restore ``rng_state()``."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["state"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class StopSignal:
    """SIGTERM (what Slurm, Kubernetes and torchrun's agent send before they end a process) noted, not
    obeyed at once: the trainer stops at the next iteration boundary, after a checkpoint. A second SIGTERM
    takes the handler that was there before (by default: end now). Installed only in the main thread."""

    def __init__(self, signals=(signal.SIGTERM,)):
        self.signals = signals
        self.received = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._note)
        return self

    def _note(self, signum, frame):
        self.received = signal.Signals(signum).name
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


class Trainer:
    """Runs ``model`` (a detector: ``forward(img, gt_bboxes, gt_labels) -> dict of losses``) over ``loader``.

    Attributes the hooks read: ``model`` (unwrapped), ``net`` (DDP-wrapped or ``model``), ``optimizer``,
    ``loader``, ``epoch``, ``iter`` (global, 0-based), ``start_epoch``, ``max_epochs``,
    ``iters_per_epoch``, ``storage`` (see ``engine/hooks.py``), ``device``, ``history`` (per-epoch
    records of the main process).

    Timing: ``storage["time"]`` holds the iteration's wall-clock seconds (set before ``after_iter``):
    ``data`` (waiting for the loader's next batch: from the end of the previous iteration's hooks to the
    batch's arrival), ``forward`` (forward and losses), ``backward``, ``optimizer`` (clipping and the step)
    and ``iter`` (from the end of the previous iteration's hooks to the end of the step). On CUDA the kernels
    run asynchronously, so the split between forward, backward and optimizer is only indicative (the
    ``.item()`` at the end synchronises each iteration); ``data`` and ``iter`` are exact. The epoch record adds ``data_time_s`` and ``iter_time_s`` (means per iteration) and
    ``data_wait`` (the share of the epoch's iteration time spent waiting for data, 0..1).
    """

    def __init__(self, model, loader, optimizer, *, max_epochs, start_epoch=0, start_iter=0, device="cpu", amp=False,
                 channels_last=None, fp32_depthwise=None, grad_clip=None, progress=True):
        self.device = torch.device(device)
        self.channels_last = (self.device.type == "cpu" or amp) if channels_last is None else channels_last
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self.memory_format)
        self.loader = loader
        self.optimizer = optimizer
        self.max_epochs = int(max_epochs)
        self.start_epoch = int(start_epoch)
        self.epoch = self.start_epoch
        self.iters_per_epoch = len(loader)
        # a run resumed within an epoch: ``start_iter`` iterations of ``start_epoch`` are done
        self.start_iter = min(max(int(start_iter), 0), self.iters_per_epoch)
        self.iter = self.start_epoch * self.iters_per_epoch + self.start_iter
        self.epoch_iter = self.start_iter  # iterations of the current epoch done
        self.grad_clip = grad_clip
        # amp: True picks the device's dtype (amp_dtype; apis/train says in its plan line when it is fp32); a
        # torch dtype forces it
        self.autocast_dtype = amp if isinstance(amp, torch.dtype) else (amp_dtype(self.device) if amp else None)
        self.scaler = torch.amp.GradScaler("cuda") if self.autocast_dtype == torch.float16 else None
        # bf16 autocast on the CPU: the depthwise convolutions' backward runs in fp32, their forward stays
        # bf16 (oneDNN's bf16 depthwise backward is slower than fp32's: models/layers.Fp32DepthwiseConv2d);
        # fp32_depthwise None: only there, True / False: force
        if fp32_depthwise is None:
            fp32_depthwise = self.device.type == "cpu" and self.autocast_dtype == torch.bfloat16
        if fp32_depthwise and self.autocast_dtype is not None:
            depthwise_convs_in_fp32(self.model)
        self.progress = progress and dist_utils.is_main()
        self.hooks = []
        self.storage = {}
        self.history = []
        self.stop = StopSignal()
        self._resume = None  # load_state()'s per-process state, applied when the first epoch starts
        self._sums, self._count, self._data_s, self._iter_s = {}, 0, 0.0, 0.0  # the current epoch's, so far
        if torch.distributed.is_initialized():  # DDP also with one process (torchrun --nproc_per_node=1)
            self.net = dist_utils.wrap_ddp(self.model, self.device)
        else:
            self.net = self.model

    def register_hooks(self, hooks):
        for hook in hooks:
            if hook is not None:
                hook.trainer = self
                self.hooks.append(hook)

    def hook(self, kind):
        """The first registered hook of class ``kind`` (or None)."""
        return next((h for h in self.hooks if isinstance(h, kind)), None)

    def _call(self, name, *args):
        for hook in self.hooks:
            getattr(hook, name)(*args)

    @property
    def start_iter_global(self):
        """Iterations done before this run started (0-based index of its first iteration)."""
        return self.start_epoch * self.iters_per_epoch + self.start_iter

    @property
    def batch_sampler(self):
        return getattr(self.loader, "batch_sampler", None)

    def state_dict(self):
        """The loop's state at the current iteration boundary, for a checkpoint (``trainer`` key): the
        iterations done in the current epoch, the world size and batch, and per process (a list indexed
        by rank, gathered: a collective, every process calls it) its random state and its epoch's sums
        so far; the sampler's epoch state and the gradient scaler's. Returned on every process."""
        mine = {"rng": rng_state(), "sums": dict(self._sums), "count": self._count, "data_s": self._data_s,
                "iter_s": self._iter_s}
        every = dist_utils.all_gather_object(mine)
        sampler = self.batch_sampler
        state = {"epoch_iter": self.epoch_iter, "iters_per_epoch": self.iters_per_epoch,
                 "world_size": dist_utils.world_size(), "batch_size": getattr(sampler, "batch_size", None),
                 "ranks": every, "sampler": sampler.state_dict(epoch_done=self.epoch_iter >= self.iters_per_epoch)
                 if hasattr(sampler, "state_dict") else {}}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state(self, state):
        """Continue from ``state_dict()`` of a checkpoint (the trainer was built with its ``start_epoch`` and
        ``start_iter``): this process's random state and epoch sums, when the world size is the same; the
        sampler's order of the epoch; the gradient scaler. Applied when the run starts."""
        if not state:
            return
        rank = dist_utils.rank()
        ranks = state.get("ranks") or []
        same_world = state.get("world_size") == dist_utils.world_size() and rank < len(ranks)
        if not same_world and dist_utils.is_main():
            log.info("the checkpoint was written by %s process(es), this run has %d: the position in the epoch "
                     "is carried over in samples, the random states start from the seed", state.get("world_size"),
                     dist_utils.world_size())
        self._resume = {"mine": ranks[rank] if same_world else None, "sampler": state.get("sampler")}
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def train(self):
        if self.start_epoch >= self.max_epochs:
            log.info("nothing to train: the checkpoint is at epoch %d and --epochs is %d", self.start_epoch,
                     self.max_epochs)
            return self.history
        try:
            with self.stop:
                self._call("before_train")
                for self.epoch in range(self.start_epoch, self.max_epochs):
                    self._call("before_epoch")
                    self.storage["epoch"] = self._train_epoch()
                    self._call("after_epoch")
                    if dist_utils.is_main():
                        self.history.append(dict(epoch=self.epoch + 1, **self.storage["epoch"]))
                    dist_utils.barrier()
                    if self.epoch + 1 < self.max_epochs and self._stop_requested():
                        self._stopped(self.iters_per_epoch, saved=True)
        finally:
            self._call("after_train")
            self._end_loader_workers()
        return self.history

    def _end_loader_workers(self):
        """End the loader's persistent worker processes now, through the loader's own shutdown (each worker is
        told to stop and exits). Left to the end of the interpreter, multiprocessing would end them with
        SIGTERM, which they ignore (``_worker_init``), and wait for them for ever; a stopped or failed run
        keeps the loader alive in its traceback until then."""
        iterator = getattr(self.loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
            self.loader._iterator = None

    def _stop_requested(self):
        """Whether any process received a stop signal (a collective under DDP: every process asks at the
        same iteration boundary, so all stop at the same one)."""
        return dist_utils.any_rank(self.stop.received is not None)

    def _stopped(self, done, saved=False):
        """Stop at this iteration boundary (``done`` iterations of the epoch): the hooks save
        (``on_stop``), then ``TrainingStopped`` ends the run on every process."""
        self.epoch_iter = done
        if not saved:
            self._call("on_stop")
        at = (f"after epoch {self.epoch + 1}" if done >= self.iters_per_epoch else
              f"in epoch {self.epoch + 1}, after iteration {done} of {self.iters_per_epoch}")
        raise TrainingStopped(f"{self.stop.received or 'a stop signal to another process'} {at}",
                              epoch=self.epoch, epoch_iter=done)

    def _train_epoch(self):
        self.net.train()
        sampler = getattr(self.batch_sampler, "sampler", None) or self.loader.sampler
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(self.epoch)
        first = self.start_iter if self.epoch == self.start_epoch else 0
        resume, self._resume = self._resume, None
        if resume and resume.get("sampler") and hasattr(self.batch_sampler, "load_state_dict"):
            self.batch_sampler.load_state_dict(resume["sampler"])
        if first and hasattr(self.batch_sampler, "skip"):
            self.batch_sampler.skip = first  # the batches done are not loaded again
        mine = (resume or {}).get("mine") or {}
        self._sums, self._count = dict(mine.get("sums") or {}), int(mine.get("count") or 0)
        self._data_s, self._iter_s = float(mine.get("data_s") or 0.0), float(mine.get("iter_s") or 0.0)
        start = time.time()
        self.epoch_iter = first
        bar = tqdm(total=self.iters_per_epoch, initial=first, desc=f"epoch {self.epoch + 1}/{self.max_epochs}",
                   disable=not self.progress, leave=False)
        batches = iter(self.loader) if first < self.iters_per_epoch else iter(())
        if mine.get("rng"):  # after the loader's iterator took its seed: the next batch draws what it drew
            set_rng_state(mine["rng"])
        mark = time.perf_counter()  # the end of the previous iteration
        for i, batch in enumerate(batches, start=first):
            arrived = time.perf_counter()
            self.iter = self.epoch * self.iters_per_epoch + i
            self._call("before_iter")
            lr = self.optimizer.param_groups[0]["lr"]
            values = self.run_step(batch)
            times = self.storage["time"]
            times["data"], times["iter"] = arrived - mark, time.perf_counter() - mark
            self._data_s, self._iter_s = self._data_s + times["data"], self._iter_s + times["iter"]
            self.storage["losses"], self.storage["lr"] = values, lr
            for k, v in values.items():
                self._sums[k] = self._sums.get(k, 0.0) + v
            self._count += 1
            self.epoch_iter = i + 1
            self._call("after_iter")
            bar.update(1)
            bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{lr:.2g}")
            if self._stop_requested():
                bar.close()
                self._stopped(i + 1)
            mark = time.perf_counter()
        bar.close()
        count = max(self._count, 1)
        stats = {k: dist_utils.all_reduce_mean(v / count) for k, v in self._sums.items()}
        stats["lr"] = self.optimizer.param_groups[0]["lr"]
        stats["epoch_time_s"] = time.time() - start
        stats["data_time_s"] = dist_utils.all_reduce_mean(self._data_s / count)
        stats["iter_time_s"] = dist_utils.all_reduce_mean(self._iter_s / count)
        stats["data_wait"] = stats["data_time_s"] / max(stats["iter_time_s"], 1e-12)
        if not math.isfinite(stats.get("loss", 0.0)):
            raise OteError(f"training diverged at epoch {self.epoch + 1} (try a lower --base-learning-rate)")
        return stats

    def run_step(self, batch):
        """One iteration: forward (autocast with ``amp``; losses in fp32), hooks' extra loss terms,
        backward, gradient clipping, optimizer step. Returns the float losses, ``loss`` = their sum."""
        start = time.perf_counter()
        imgs, boxes, labels = batch
        imgs = imgs.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        boxes = [b.to(self.device) for b in boxes]
        labels = [lb.to(self.device) for lb in labels]
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            losses = self.net(imgs, boxes, labels)
        self._call("after_loss", losses)
        loss = sum(v.float() for v in losses.values())
        if not torch.isfinite(loss):
            raise OteError(f"training diverged: loss is {loss.item()} at epoch {self.epoch + 1}, iteration "
                           f"{self.iter - self.epoch * self.iters_per_epoch + 1} (try a lower --base-learning-rate)")
        self.optimizer.zero_grad(set_to_none=True)
        backward = time.perf_counter()
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        step = time.perf_counter()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), **self.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        values = {k: v.item() for k, v in losses.items()}
        values["loss"] = loss.item()
        end = time.perf_counter()
        self.storage["time"] = dict(forward=backward - start, backward=step - backward, optimizer=end - step)
        return values
