"""Training entry point behind the work dir's train.py (and compress.py, through a plugin)."""

import copy
import dataclasses
import logging
import os
from typing import Optional

import torch

from ..config import input_size_wh
from ..data.coco import CocoDataset, RepeatDataset, split_paths
from ..formats.convert import load_dataset
from ..data.scale_crop import with_geometry
from ..engine import distributed as dist_utils
from ..artefacts.checkpoint import (check_checkpoint_dir, find_resume_checkpoint, load_backbone_weights,
                                load_checkpoint_file, load_weights, resume_position, run_identity, save_checkpoint)
from ..engine.hooks import CheckpointHook, EvalHook, LoggerHook, LRSchedulerHook
from ..engine.optim import build_lr_scheduler, build_optimizer, check_lr_config, set_base_lr
from ..engine.plugin import PluginContext
from ..inference.deploy import common_frame_hw, model_stride
from ..inference.predictor import TorchPredictor, detect_images
from ..engine.trainer import Trainer, amp_plan, build_train_loader, check_batch_statistics, seed_everything
from ..models.inference import InferenceModel
from ..artefacts.formats import CheckpointMeta
from ..utils.cli import check_batch_pixels
from ..utils.errors import OteError, TrainingStopped
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
    resume: bool = False  # continue this run from the newest checkpoint of save_checkpoints_to, if it holds one
    checkpoint_interval_iters: Optional[int] = None  # also save latest.pth every N iterations within an epoch
    load_weights: Optional[str] = None
    load_weights_checkpoint: Optional[dict] = None  # its content, read once (by compress.py, or by ``train``)
    # without input_size: the run's geometry is the --load-weights snapshot's (compress.py: the snapshot is the
    # model compressed), not the template's (train.py: the snapshot is only a starting point)
    load_weights_geometry: bool = False
    load_backbone: Optional[str] = None  # a snapshot whose backbone.* weights start the backbone (not with the two above)
    load_backbone_checkpoint: Optional[dict] = None  # its content, read once by ``train``
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    base_learning_rate: Optional[float] = None
    gpu_num: Optional[int] = None
    tensorboard_dir: Optional[str] = None
    workers: Optional[int] = None
    input_size: Optional[tuple] = None  # (w, h), or (w, None): the height from the frames (or aspect), letterboxed
    aspect: Optional[str] = None  # W:H for input_size (w, None) instead of the training frames' aspect
    keep_ratio: bool = False  # frames letterboxed into input_size; resolved by ``train`` with the size
    seed: int = 0
    amp: bool = False
    overwrite: bool = False
    progress: bool = True
    data_format: Optional[str] = "coco"  # or a Datumaro format name: read by formats.convert.load_dataset
    train_subset: Optional[str] = None  # of a Datumaro dataset: the subset(s) read (default: by role, pick_subsets)
    val_subset: Optional[str] = None
    # filled in by ``train`` before the processes start
    val_coco: Optional[dict] = None
    train_dataset: object = None  # built once; spawned DDP processes get it with their arguments
    use_cuda: bool = False
    run: Optional[dict] = None  # artefacts.checkpoint.run_identity, recorded in every checkpoint
    resume_checkpoint: Optional[dict] = None  # the checkpoint resumed from, read once (by global rank 0)


def build_train_dataset(cfg, ann_files, data_roots, classes, quiet=False, check_images=True):
    """The training dataset of ``cfg.data.train`` (RepeatDataset chains unrolled), its pipeline resizing
    to the config's ``input_size`` (letterboxed with the config's ``keep_ratio``:
    ``data.scale_crop.with_geometry``). It says in one line what it leaves out and why (``CocoDataset``),
    unless ``quiet``; ``check_images``: as ``data.coco.load_coco_files``."""
    node, times = cfg.data.train, 1
    while node.get("type") == "RepeatDataset":
        times *= node.get("times", 1)
        node = node.dataset
    pipeline = with_geometry(node.get("pipeline", cfg.train_pipeline), input_size_wh(cfg.input_size),
                             bool(cfg.get("keep_ratio", False)))
    dataset = CocoDataset(ann_files, data_roots, pipeline, classes=classes,
                          min_size=node.get("min_size"), filter_empty_gt=node.get("filter_empty_gt", True),
                          quiet=quiet, check_images=check_images)
    return RepeatDataset(dataset, times) if times > 1 else dataset


def make_validator(coco, input_size, img_norm_cfg, batch_size, workers, keep_ratio=False):
    """``validate(detector) -> {'ap': ...}`` on a merged COCO dict, with the predictor eval.py uses."""
    from ..evaluation import evaluate_detections

    paths = [img["path"] for img in coco["images"]]
    keys = [img["id"] for img in coco["images"]]

    def validate(detector):
        predictor = TorchPredictor(InferenceModel(detector, img_norm_cfg), input_size, keep_ratio=keep_ratio,
                                   batch_size=batch_size)
        dets = detect_images(predictor, paths, keys, batch_size=batch_size, workers=workers, progress=False)
        return evaluate_detections(coco, dets, ["ap"])
    return validate


def _prepare(task, options, plugin):
    """Config changes every process makes: input geometry, plugin, learning rate and epochs."""
    cfg = task.cfg
    if options.input_size:
        task.set_input_size(options.input_size, options.keep_ratio)
    if plugin is not None:
        plugin.configure(cfg, options)
    if options.base_learning_rate is not None:
        cfg.optimizer["lr"] = options.base_learning_rate
    return cfg


def _shared_plan(options):
    """Under torchrun every process ran ``train``, but only global rank 0 read the checkpoint folder (on
    several machines the others may not see it): its resume decision (the checkpoint, read once, and the
    input size) is broadcast to the others."""
    if not dist_utils.launched_by_torchrun() or dist_utils.world_size() == 1:
        return options
    plan = dist_utils.broadcast_object({k: getattr(options, k) for k in ("resume_from", "resume_checkpoint",
                                                                         "input_size", "run")}
                                       if dist_utils.is_main() else None)
    return dataclasses.replace(options, **plan)


def _run(options, plugin=None):
    """One training process (the only one, or one DDP rank)."""
    options = _shared_plan(options)
    task = Task(options.template)
    cfg = _prepare(task, options, plugin)
    seed_everything(options.seed + dist_utils.rank())
    device = torch.device(f"cuda:{torch.cuda.current_device()}" if options.use_cuda else "cpu")
    dataset = options.train_dataset  # built (and reported) by train() before any process started
    loader = build_train_loader(dataset, options.batch_size, options.workers, options.seed,
                                pin_memory=options.use_cuda)
    detector = task.build_detector()
    start_epoch, start_iter, resume_ckpt = 0, 0, options.resume_checkpoint
    if resume_ckpt is not None:
        start_epoch, start_iter = resume_position(resume_ckpt, options.batch_size, dist_utils.world_size())
        if not CheckpointMeta.of(resume_ckpt, options.resume_from).compression:
            load_weights(detector, options.resume_from, expected_template=task.name, ckpt=resume_ckpt)
    elif options.load_weights:
        load_weights(detector, options.load_weights, expected_template=task.name, ckpt=options.load_weights_checkpoint)
    elif options.load_backbone:
        count = load_backbone_weights(detector, options.load_backbone, ckpt=options.load_backbone_checkpoint)
        if dist_utils.is_main():
            log.info("backbone: %d tensors from %s; neck and head start from their initialisation", count,
                     options.load_backbone)
    elif cfg.model.backbone.get("pretrained") and dist_utils.is_main():
        detector.backbone.load_imagenet_weights()  # DDP gives the other processes rank 0's weights
    model = detector.to(device)
    if plugin is not None:
        ctx = PluginContext(device=device, input_size=task.input_size, keep_ratio=task.keep_ratio,
                            batch_size=options.batch_size,
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
    trainer = Trainer(model, loader, optimizer, max_epochs=options.epochs, start_epoch=start_epoch,
                      start_iter=start_iter, device=device, amp=options.amp,
                      grad_clip=(cfg.get("optimizer_config") or {}).get("grad_clip"), progress=options.progress)

    def checkpoint_meta():  # the plugin's part may change during the run (e.g. pruned shapes)
        return dict(task.checkpoint_meta().to_dict(), run=options.run,
                    **(plugin.checkpoint_meta() if plugin is not None else {}))
    checkpoints = CheckpointHook(options.save_checkpoints_to, checkpoint_meta, save_checkpoint,
                                 interval_iters=options.checkpoint_interval_iters)
    hooks = [LRSchedulerHook(build_lr_scheduler(optimizer, cfg.lr_config, trainer.iters_per_epoch, options.epochs)),
             checkpoints]
    if options.val_coco is not None and dist_utils.is_main():
        hooks.append(EvalHook(make_validator(options.val_coco, task.input_size, task.img_norm_cfg,
                                             options.batch_size, options.workers, task.keep_ratio)))
    hooks.append(LoggerHook(options.tensorboard_dir, (cfg.get("log_config") or {}).get("interval", 10)))
    if plugin is not None:
        hooks.extend(plugin.hooks())
    trainer.register_hooks(hooks)
    if resume_ckpt is not None:
        for hook in trainer.hooks:
            state = (resume_ckpt.get("hooks") or {}).get(hook.name)
            if state:
                hook.load_state_dict(state)
        trainer.load_state(resume_ckpt.get("trainer"))
    try:
        history = trainer.train()
    except TrainingStopped as exc:
        latest = os.path.join(options.save_checkpoints_to, "latest.pth")
        raise TrainingStopped(f"{exc}; saved {latest}: the same command with --resume continues from there",
                              exc.epoch, exc.epoch_iter) from None
    return history if dist_utils.is_main() else None


def train(template, train_ann_files, train_data_roots, save_checkpoints_to, plugin=None, **kwargs):
    """Train the template's model; returns the per-epoch history (loss, lr, val AP...) of the main process.

    ``kwargs`` are ``TrainOptions`` fields. ``gpu_num``: None -> the template's gpu_num, limited to the
    GPUs present (0 -> CPU). On a machine without CUDA an explicit gpu_num > 1 runs that many DDP
    processes on the CPU with gloo. ``plugin``: an ``engine.plugin.TrainingPlugin`` (compression).
    """
    dist_utils.quiet_other_ranks()
    options = TrainOptions(template=os.path.abspath(template), train_ann_files=train_ann_files,
                           train_data_roots=train_data_roots, save_checkpoints_to=save_checkpoints_to, **kwargs)
    task = Task(options.template)
    # any format read as COCO json (coco: only checks that each file has its image folder); DDP processes get
    # the json files (under torchrun each rank reads the dataset itself)
    train_set = load_dataset(options.train_ann_files, options.train_data_roots, options.data_format,
                             options.train_subset, "train", task.classes)
    val_set = load_dataset(options.val_ann_files, options.val_data_roots, options.data_format, options.val_subset,
                           "val", task.classes)
    options.train_ann_files, options.train_data_roots = train_set.ann_files, train_set.data_roots
    options.val_ann_files, options.val_data_roots = val_set.ann_files, val_set.data_roots
    options.data_format, options.train_subset, options.val_subset = None, None, None  # done: COCO json now
    if options.resume_from and options.load_weights:
        raise OteError("give either --resume-from or --load-weights, not both")
    if options.resume_from and options.resume:
        raise OteError("give either --resume (the newest checkpoint of this run in --save-checkpoints-to) or "
                       "--resume-from CHECKPOINT, not both")
    # global rank 0 (the only process outside torchrun) checks and writes the checkpoint folder and reads the
    # checkpoint resumed from, once; under torchrun it hands it to the others (_shared_plan)
    writer = dist_utils.env_rank() == 0
    if options.load_backbone and (options.resume_from or options.load_weights):
        raise OteError("--load-backbone starts a fresh model's backbone: not with --resume-from or --load-weights")
    resume_meta = weights_meta = None
    # each file read once: here, or already by compress.py; _run takes the content from options
    for path_key, content_key in (("resume_from", "resume_checkpoint"), ("load_weights", "load_weights_checkpoint"),
                                  ("load_backbone", "load_backbone_checkpoint")):
        path = getattr(options, path_key)
        if path and (writer or path_key != "resume_from"):
            ckpt = getattr(options, content_key)
            if ckpt is None:
                ckpt = load_checkpoint_file(path)
                setattr(options, content_key, ckpt)
            meta = CheckpointMeta.of(ckpt, path)  # fail early, with the file's name
            if path_key == "load_backbone":  # does its backbone fit (before any data is read)?
                load_backbone_weights(task.build_detector(), path, ckpt=ckpt)
            parts = (meta.compression or {}).get("parts")
            if parts and plugin is None:  # its compressed structure and optimizer are compress.py's
                flags = " ".join("--" + p.replace("_", "-") for p in parts)
                raise OteError(f"{path}: a compress.py checkpoint ({', '.join(parts)}); continue it with compress.py "
                               f"--resume-from {path} {flags} (train.py resumes and starts from train.py snapshots)")
            if path_key == "resume_from":  # a resumed run keeps its input geometry, or says it changes
                resume_meta = meta
            if path_key == "load_weights":
                weights_meta = meta
            if (meta.source or {}).get("batchnorm") == "identity" and not task.cfg.model.backbone.get("norm_eval"):
                log.warning("%s: imported from an IR without --calibrate-bn; its BatchNorms are identities, and "
                            "training in train mode replaces them by batch statistics (AP collapses). Import it again "
                            "with tools/import_openvino_weights.py --calibrate-bn IMAGES", path)
    frame_hw = None
    if options.input_size is not None and options.input_size[1] is None and options.aspect is None:
        # 'Wx': the height from the aspect of most training frames (the sizes the annotation files give)
        frame_hw = common_frame_hw(train_set.load(require_boxes=False, check_images=False, quiet=True)["images"])
    # without --input-size: the geometry of the checkpoint resumed, or of the snapshot compress.py compresses
    snapshot, snapshot_path, role = ((weights_meta, options.load_weights, "compress")
                                     if options.load_weights_geometry and options.load_weights
                                     else (resume_meta, options.resume_from, "resume"))
    size, options.keep_ratio = task.resolve_geometry(options.input_size, snapshot, snapshot_path, frame_hw,
                                                     options.aspect, role=role)
    options.input_size = tuple(size)
    if options.keep_ratio:
        log.info("training at input %dx%d, frames letterboxed (as eval.py, export.py and the demo will show them)",
                 *size)
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
    if options.use_cuda and gpu_num > cuda and not dist_utils.launched_by_torchrun():
        raise OteError(f"--gpu-num {gpu_num} but only {cuda} GPU(s) are visible")
    # under torchrun the job's processes are torchrun's (--nnodes x --nproc-per-node), not --gpu-num
    processes = dist_utils.job_shape(max(gpu_num, 1))[0] if dist_utils.launched_by_torchrun() else max(gpu_num, 1)
    cores = os.cpu_count() or 1
    if not options.use_cuda and not dist_utils.launched_by_torchrun() and processes > MAX_PROCESSES_PER_CORE * cores:
        raise OteError(f"--gpu-num {gpu_num}: {processes} CPU training processes on {cores} CPU core(s) is over the "
                       f"bound of {MAX_PROCESSES_PER_CORE} per core; give --gpu-num {cores} or fewer")
    if not options.use_cuda and not dist_utils.launched_by_torchrun() and processes > cores:
        log.warning("--gpu-num %d runs %d CPU training processes on %d CPU core(s): they oversubscribe the cores "
                    "and train slower than %d process(es); give --gpu-num %d or fewer", gpu_num, processes, cores,
                    cores, cores)
    # the backbones' deepest BatchNorm is at stride 32 (FCOS/ATSS levels above it have GroupNorm or no norm)
    check_batch_statistics(task.input_size, min(model_stride(cfg.model), 32), options.batch_size)
    # checked here, once, before any process starts and before any compute: the output folders are
    # writable and hold no other run, then every train and val image decodes (header check, data.checks)
    # and every annotation fits its image (one clear line each)
    options.save_checkpoints_to = os.path.abspath(options.save_checkpoints_to)
    if writer:  # the only process that writes them (the others' machines need not have these folders)
        check_writable_dir(options.save_checkpoints_to, "--save-checkpoints-to folder")
        if options.tensorboard_dir:
            check_writable_dir(options.tensorboard_dir, "--tensorboard-dir folder")
    if writer:
        options.run = run_identity(task.name, cfg, split_paths(options.train_ann_files), options.seed)
    lock = None
    if writer:  # under torchrun only global rank 0 holds the folder's lock
        lock = OutputLock(options.save_checkpoints_to, "train.py", inside=True).acquire()
    try:
        if lock is not None:
            _find_resume(options)
        start = CheckpointMeta.of(options.resume_checkpoint, options.resume_from) \
            if options.resume_checkpoint is not None else CheckpointMeta()
        if lock is not None:
            check_checkpoint_dir(options.save_checkpoints_to, options.resume_from, start.epoch, options.overwrite)
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
        if val_set and rank0:  # only rank 0 validates
            options.val_coco = val_set.load()
        return _launch(task, options, plugin, processes, start.epoch, start.epoch_iter)
    finally:
        if lock is not None:
            lock.release()


def _find_resume(options):
    """--resume, or a torchrun restart (TORCHELASTIC_RESTART_COUNT > 0: torchrun starts the workers again
    with the same arguments, and asks the script to load its latest checkpoint): continue from the newest
    complete checkpoint of this run in --save-checkpoints-to (``artefacts.checkpoint.find_resume_checkpoint``),
    if it holds one; the folder holding another run's is one line. A restart of a run started with
    --resume-from continues from the folder's newest checkpoint too (written by this run since)."""
    restart = dist_utils.restart_count()
    if not (options.resume or restart) or (options.resume_from and not restart):
        return
    path, ckpt, meta = find_resume_checkpoint(options.save_checkpoints_to, options.run)
    why = f"torchrun restart {restart}" if restart else "--resume"
    if path is None:  # (a restart of a run started with --resume-from: from that file again)
        if not options.resume_from:
            log.info("%s: no checkpoint of this run in %s yet; training starts at the beginning", why,
                     options.save_checkpoints_to)
        return
    options.resume_from, options.resume_checkpoint = path, ckpt
    at = f"in epoch {meta.epoch + 1}, after iteration {meta.epoch_iter}" if meta.epoch_iter else \
        f"after epoch {meta.epoch}"
    log.info("%s: resuming from %s (%s)", why, path, at)


def _epochs_text(start_epoch, epochs, epoch_iter=0):
    """The epochs a run trains, for the log: '70 epochs', or after a resume 'epochs 71-71 of 71'
    (1-based, inclusive; the checkpoint holds ``start_epoch`` finished epochs and ``epoch_iter`` iterations
    of the next)."""
    if not start_epoch and not epoch_iter:
        return f"{epochs} epoch{'' if epochs == 1 else 's'}"
    if start_epoch >= epochs:
        return f"no epoch left (the checkpoint is at epoch {start_epoch} of {epochs})"
    where = f"in epoch {start_epoch + 1}, after iteration {epoch_iter}" if epoch_iter else f"after epoch {start_epoch}"
    return f"epochs {start_epoch + 1}-{epochs} of {epochs} (resumed {where})"


def _precision_text(amp, use_cuda):
    """The plan line's words on precision: what --amp runs here, or why it runs fp32."""
    if not amp:
        return ""
    dtype, reason = amp_plan("cuda" if use_cuda else "cpu")
    return f", mixed precision ({reason})" if dtype is not None else f"; --amp: {reason}"


def _launch(task, options, plugin, processes, start_epoch=0, epoch_iter=0):
    world, nodes, per_node = dist_utils.job_shape(processes)
    shape = f"{world} process(es)" + (f" on {nodes} nodes ({per_node} per node)" if nodes > 1 else "")
    log.info("training %s: %s, batch %d per process, %s on %s%s", task.name,
             _epochs_text(start_epoch, options.epochs, epoch_iter), options.batch_size, shape,
             "GPU (NCCL)" if options.use_cuda else "CPU" + (" (gloo)" if world > 1 else ""),
             _precision_text(options.amp, options.use_cuda))
    if processes > 1 or dist_utils.launched_by_torchrun():
        dist_utils.launch(_run, processes, options.use_cuda, args=(options, plugin))
        latest = os.path.join(options.save_checkpoints_to, "latest.pth")
        if dist_utils.env_rank() != 0 or not os.path.isfile(latest):
            return []
        meta = CheckpointMeta.of(load_checkpoint_file(latest), latest)
        return [dict(epoch=meta.epoch, **(meta.metrics or {}))]
    return _run(options, plugin)
