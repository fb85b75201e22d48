"""Training entry point behind the work dir's train.py (and compress.py, through a plugin)."""

import copy
import dataclasses
import logging
import os
from typing import Optional

import torch

from ..config import input_size_wh
from ..data.coco import CocoDataset, RepeatDataset, check_data_flags, load_coco_files
from ..data.formats import prepare_datasets
from ..data.transforms import with_input_size
from ..engine import distributed as dist_utils
from ..engine.checkpoint import (check_checkpoint_dir, load_backbone_weights, load_checkpoint_file, load_weights,
                                save_checkpoint)
from ..engine.hooks import CheckpointHook, EvalHook, LoggerHook, LRSchedulerHook
from ..engine.optim import build_lr_scheduler, build_optimizer, check_lr_config, set_base_lr
from ..engine.plugin import PluginContext
from ..inference.deploy import model_stride
from ..inference.predictor import TorchPredictor, detect_images
from ..engine.trainer import Trainer, build_train_loader, check_batch_statistics, seed_everything
from ..models.inference import InferenceModel
from ..utils.artefacts import CheckpointMeta
from ..utils.cli import check_batch_pixels
from ..utils.errors import OteError
from ..utils.fileio import OutputLock, check_writable_dir
from .task import Task

log = logging.getLogger(__name__)

MAX_PROCESSES_PER_CORE = 4  # CPU DDP processes (--gpu-num without CUDA): more than the cores is warned, this refused


@dataclasses.dataclass
class TrainOptions:
    """Everything one training run needs; ``None`` means "the template's value" (never a falsy test)."""

    template: str
    train_ann_files: object
    train_data_roots: object
    save_checkpoints_to: str
    val_ann_files: object = None
    val_data_roots: object = None
    resume_from: Optional[str] = None
    load_weights: Optional[str] = None
    load_backbone: Optional[str] = None  # a snapshot whose backbone.* weights start the backbone (not with the two above)
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    base_learning_rate: Optional[float] = None
    gpu_num: Optional[int] = None
    tensorboard_dir: Optional[str] = None
    workers: Optional[int] = None
    input_size: Optional[tuple] = None
    seed: int = 0
    amp: bool = False
    overwrite: bool = False
    progress: bool = True
    data_format: Optional[str] = "coco"  # or a Datumaro format name: converted first (data/formats.py)
    train_subset: Optional[str] = None  # of a Datumaro dataset: the subset(s) read (default: by role, pick_subsets)
    val_subset: Optional[str] = None
    # filled in by ``train`` before the processes start
    val_coco: Optional[dict] = None
    train_dataset: object = None  # built once; spawned DDP processes get it with their arguments
    use_cuda: bool = False


def build_train_dataset(cfg, ann_files, data_roots, classes, quiet=False, check_images=True):
    """The training dataset of ``cfg.data.train`` (RepeatDataset chains unrolled), its pipeline resizing
    to the config's ``input_size``. It says in one line what it leaves out and why (``CocoDataset``),
    unless ``quiet``; ``check_images``: as ``data.coco.load_coco_files``."""
    node, times = cfg.data.train, 1
    while node.get("type") == "RepeatDataset":
        times *= node.get("times", 1)
        node = node.dataset
    pipeline = with_input_size(node.get("pipeline", cfg.train_pipeline), input_size_wh(cfg.input_size))
    dataset = CocoDataset(ann_files, data_roots, pipeline, classes=classes,
                          min_size=node.get("min_size"), filter_empty_gt=node.get("filter_empty_gt", True),
                          quiet=quiet, check_images=check_images)
    return RepeatDataset(dataset, times) if times > 1 else dataset


def make_validator(coco, input_size, img_norm_cfg, batch_size, workers):
    """``validate(detector) -> {'ap': ...}`` on a merged COCO dict, with the predictor eval.py uses."""
    from ..evaluation import evaluate_detections

    paths = [img["path"] for img in coco["images"]]
    keys = [img["id"] for img in coco["images"]]

    def validate(detector):
        predictor = TorchPredictor(InferenceModel(detector, img_norm_cfg), input_size, batch_size=batch_size)
        dets = detect_images(predictor, paths, keys, batch_size=batch_size, workers=workers, progress=False)
        return evaluate_detections(coco, dets, ["ap"])
    return validate


def _prepare(task, options, plugin):
    """Config changes every process makes: input size, plugin, learning rate and epochs."""
    cfg = task.cfg
    if options.input_size:
        task.set_input_size(options.input_size)
    if plugin is not None:
        plugin.configure(cfg, options)
    if options.base_learning_rate is not None:
        cfg.optimizer["lr"] = options.base_learning_rate
    return cfg


def _run(options, plugin=None):
    """One training process (the only one, or one DDP rank)."""
    task = Task(options.template)
    cfg = _prepare(task, options, plugin)
    seed_everything(options.seed + (torch.distributed.get_rank() if torch.distributed.is_initialized() else 0))
    device = torch.device(f"cuda:{torch.cuda.current_device()}" if options.use_cuda else "cpu")
    dataset = options.train_dataset  # built (and reported) by train() before any process started
    loader = build_train_loader(dataset, options.batch_size, options.workers, options.seed,
                                pin_memory=options.use_cuda)
    detector = task.build_detector()
    start_epoch, resume_ckpt = 0, None
    if options.resume_from:
        resume_ckpt = load_checkpoint_file(options.resume_from)
        resume_meta = CheckpointMeta.of(resume_ckpt, options.resume_from)
        start_epoch = resume_meta.epoch
        if not resume_meta.compression:
            load_weights(detector, options.resume_from, expected_template=task.name, ckpt=resume_ckpt)
    elif options.load_weights:
        load_weights(detector, options.load_weights, expected_template=task.name)
    elif options.load_backbone:
        count = load_backbone_weights(detector, options.load_backbone)
        if dist_utils.is_main():
            log.info("backbone: %d tensors from %s; neck and head start from their initialisation", count,
                     options.load_backbone)
    elif cfg.model.backbone.get("pretrained") and dist_utils.is_main():
        detector.backbone.load_imagenet_weights()  # DDP gives the other processes rank 0's weights
    model = detector.to(device)
    if plugin is not None:
        ctx = PluginContext(device=device, input_size=task.input_size, batch_size=options.batch_size,
                            # each training image once (not RepeatDataset's copies): calibration counts images
                            init_loader=lambda: build_train_loader(
                                dataset.dataset if isinstance(dataset, RepeatDataset) else dataset,
                                options.batch_size, 0, options.seed),
                            resume_checkpoint=resume_ckpt)
        model = plugin.prepare_model(detector, ctx)
    optimizer = build_optimizer(model, cfg.optimizer)
    if resume_ckpt is not None and resume_ckpt.get("optimizer"):
        optimizer.load_state_dict(resume_ckpt["optimizer"])
    set_base_lr(optimizer, cfg.optimizer["lr"])
    trainer = Trainer(model, loader, optimizer, max_epochs=options.epochs, start_epoch=start_epoch, device=device,
                      amp=options.amp, grad_clip=(cfg.get("optimizer_config") or {}).get("grad_clip"),
                      progress=options.progress)
    def checkpoint_meta():  # the plugin's part may change during the run (e.g. pruned shapes)
        return dict(task.checkpoint_meta().to_dict(), **(plugin.checkpoint_meta() if plugin is not None else {}))
    hooks = [LRSchedulerHook(build_lr_scheduler(optimizer, cfg.lr_config, trainer.iters_per_epoch, options.epochs)),
             CheckpointHook(options.save_checkpoints_to, checkpoint_meta, save_checkpoint)]
    if options.val_coco is not None and dist_utils.is_main():
        hooks.append(EvalHook(make_validator(options.val_coco, task.input_size, task.img_norm_cfg,
                                             options.batch_size, options.workers)))
    hooks.append(LoggerHook(options.tensorboard_dir, (cfg.get("log_config") or {}).get("interval", 10)))
    if plugin is not None:
        hooks.extend(plugin.hooks())
    trainer.register_hooks(hooks)
    if resume_ckpt is not None:
        for hook in trainer.hooks:
            state = (resume_ckpt.get("hooks") or {}).get(hook.name)
            if state:
                hook.load_state_dict(state)
    history = trainer.train()
    return history if dist_utils.is_main() else None


def train(template, train_ann_files, train_data_roots, save_checkpoints_to, plugin=None, **kwargs):
    """Train the template's model; returns the per-epoch history (loss, lr, val AP...) of the main process.

    ``kwargs`` are ``TrainOptions`` fields. ``gpu_num``: None -> the template's gpu_num, limited to the
    GPUs present (0 -> CPU). On a machine without CUDA an explicit gpu_num > 1 runs that many DDP
    processes on the CPU with gloo. ``plugin``: an ``engine.plugin.TrainingPlugin`` (compression).
    """
    options = TrainOptions(template=os.path.abspath(template), train_ann_files=train_ann_files,
                           train_data_roots=train_data_roots, save_checkpoints_to=save_checkpoints_to, **kwargs)
    task = Task(options.template)
    if options.data_format is not None:  # coco: only checks that each file has its image folder
        options.train_ann_files, options.train_data_roots = prepare_datasets(
            options.train_ann_files, options.train_data_roots, options.data_format, task.classes, "--train",
            options.train_subset)
        options.val_ann_files, options.val_data_roots = prepare_datasets(
            options.val_ann_files, options.val_data_roots, options.data_format, task.classes, "--val",
            options.val_subset)
        options.data_format = None  # done: DDP processes and compress get COCO json
    if options.resume_from and options.load_weights:
        raise OteError("give either --resume-from or --load-weights, not both")
    if options.load_backbone and (options.resume_from or options.load_weights):
        raise OteError("--load-backbone starts a fresh model's backbone: not with --resume-from or --load-weights")
    for path in (options.resume_from, options.load_weights, options.load_backbone):
        if path:
            ckpt = load_checkpoint_file(path)
            meta = CheckpointMeta.of(ckpt, path)  # fail early, with the file's name
            if path == options.load_backbone:  # does its backbone fit (before any data is read)?
                load_backbone_weights(task.build_detector(), path, ckpt=ckpt)
            parts = (meta.compression or {}).get("parts")
            if parts and plugin is None:  # its compressed structure and optimizer are compress.py's
                flags = " ".join("--" + p.replace("_", "-") for p in parts)
                raise OteError(f"{path}: a compress.py checkpoint ({', '.join(parts)}); continue it with compress.py "
                               f"--resume-from {path} {flags} (train.py resumes and starts from train.py snapshots)")
            if path == options.resume_from:  # a resumed run keeps its input size, or says it changes
                options.input_size = tuple(task.resolve_input_size(options.input_size, meta, path))
            if (meta.source or {}).get("batchnorm") == "identity" and not task.cfg.model.backbone.get("norm_eval"):
                log.warning("%s: imported from an IR without --calibrate-bn; its BatchNorms are identities, and "
                            "training in train mode replaces them by batch statistics (AP collapses). Import it again "
                            "with tools/import_openvino_weights.py --calibrate-bn IMAGES", path)
    cfg = _prepare(task, options, plugin)
    check_lr_config(cfg.lr_config)
    basic = task.basic
    if options.epochs is None:
        options.epochs = int(basic["epochs"])
    if options.batch_size is None:
        options.batch_size = int(basic["batch_size"])
    if options.base_learning_rate is None and plugin is None:
        options.base_learning_rate = float(basic["base_learning_rate"])
    if options.workers is None:
        options.workers = min(int(cfg.data.get("workers_per_gpu", 2)), os.cpu_count() or 1)
    cuda = torch.cuda.device_count()
    gpu_num = options.gpu_num if options.gpu_num is not None else min(int(task.template.get("gpu_num", 1)), cuda)
    options.use_cuda = cuda > 0 and gpu_num > 0
    if options.use_cuda and gpu_num > cuda:
        raise OteError(f"--gpu-num {gpu_num} but only {cuda} GPU(s) are visible")
    processes = max(gpu_num, 1)
    cores = os.cpu_count() or 1
    if not options.use_cuda and processes > MAX_PROCESSES_PER_CORE * cores:
        raise OteError(f"--gpu-num {gpu_num}: {processes} CPU training processes on {cores} CPU core(s) is over the "
                       f"bound of {MAX_PROCESSES_PER_CORE} per core; give --gpu-num {cores} or fewer")
    if not options.use_cuda and processes > cores:
        log.warning("--gpu-num %d runs %d CPU training processes on %d CPU core(s): they oversubscribe the cores "
                    "and train slower than %d process(es); give --gpu-num %d or fewer", gpu_num, processes, cores,
                    cores, cores)
    # the backbones' deepest BatchNorm is at stride 32 (FCOS/ATSS levels above it have GroupNorm or no norm)
    check_batch_statistics(task.input_size, min(model_stride(cfg.model), 32), options.batch_size)
    # checked here, once, before any process starts and before any compute: the output folders are
    # writable and hold no other run, then every train and val image decodes (header check, data.checks)
    # and every annotation fits its image (one clear line each)
    options.save_checkpoints_to = os.path.abspath(options.save_checkpoints_to)
    check_writable_dir(options.save_checkpoints_to, "--save-checkpoints-to folder")
    if options.tensorboard_dir:
        check_writable_dir(options.tensorboard_dir, "--tensorboard-dir folder")
    lock = None
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 holds the folder's lock
        lock = OutputLock(options.save_checkpoints_to, "train.py", inside=True).acquire()
    try:
        start_epoch = 0
        if options.resume_from:
            start_epoch = CheckpointMeta.of(load_checkpoint_file(options.resume_from), options.resume_from).epoch
        if lock is not None:
            check_checkpoint_dir(options.save_checkpoints_to, options.resume_from, start_epoch, options.overwrite)
        check_data_flags(options.val_ann_files, options.val_data_roots, "--val")
        # the one build of the run: spawned processes get it with their arguments; under torchrun each rank
        # runs this, and only rank 0 reads the image headers and reports (the others read the JSON alone;
        # a file rank 0 refuses ends the whole job)
        rank0 = int(os.environ.get("RANK", "0")) == 0
        dataset = options.train_dataset = build_train_dataset(
            copy.deepcopy(cfg), options.train_ann_files, options.train_data_roots, task.classes, quiet=not rank0,
            check_images=rank0)
        try:  # the batch a process really gets: at most its share of the data
            check_batch_pixels(min(options.batch_size, -(-len(dataset) // processes)), task.input_size,
                               given=options.batch_size)
        except ValueError as exc:
            raise OteError(str(exc)) from None
        if options.val_ann_files and rank0:  # only rank 0 validates
            options.val_coco = load_coco_files(options.val_ann_files, options.val_data_roots, task.classes,
                                               flags="--val")
        return _launch(task, options, plugin, processes, start_epoch)
    finally:
        if lock is not None:
            lock.release()


def _epochs_text(start_epoch, epochs):
    """The epochs a run trains, for the log: '70 epochs', or after --resume-from 'epochs 71-71 of 71'
    (1-based, inclusive; the checkpoint holds ``start_epoch`` finished epochs)."""
    if not start_epoch:
        return f"{epochs} epoch{'' if epochs == 1 else 's'}"
    if start_epoch >= epochs:
        return f"no epoch left (the checkpoint is at epoch {start_epoch} of {epochs})"
    return f"epochs {start_epoch + 1}-{epochs} of {epochs} (resumed after epoch {start_epoch})"


def _launch(task, options, plugin, processes, start_epoch=0):
    log.info("training %s: %s, batch %d per process, %d process(es) on %s%s", task.name,
             _epochs_text(start_epoch, options.epochs),
             options.batch_size, processes, "GPU (NCCL)" if options.use_cuda else "CPU" + (" (gloo)" if processes > 1
                                                                                           else ""),
             ", mixed precision" if options.amp else "")
    if processes > 1 or dist_utils.launched_by_torchrun():
        dist_utils.launch(_run, processes, options.use_cuda, args=(options, plugin))
        latest = os.path.join(options.save_checkpoints_to, "latest.pth")
        if not os.path.isfile(latest):
            return []
        meta = CheckpointMeta.of(load_checkpoint_file(latest), latest)
        return [dict(epoch=meta.epoch, **(meta.metrics or {}))]
    return _run(options, plugin)
