"""Training entry point behind the work dir's train.py."""

import copy
import logging
import os

import torch

from ..data.coco import CocoDataset, RepeatDataset, load_coco_files
from ..engine import distributed as dist_utils
from ..engine.checkpoint import load_checkpoint_file, load_weights
from ..engine.inference import TorchPredictor, detect_images
from ..engine.trainer import Trainer, seed_everything
from ..models.inference import InferenceModel
from ..utils.errors import OteError
from .task import Task

log = logging.getLogger(__name__)


def set_input_size(cfg, size):
    """Override the input size in the train and test pipelines (w, h)."""
    size = tuple(size)

    def visit(pipeline):
        for t in pipeline:
            if t["type"] == "Resize" and t.get("img_scale"):
                t["img_scale"] = size
            if t["type"] == "MultiScaleFlipAug":
                t["img_scale"] = size
                visit(t["transforms"])
    visit(cfg.train_pipeline)
    visit(cfg.test_pipeline)
    for split in ("train", "val", "test"):
        node = cfg.data.get(split)
        while node is not None:
            if "pipeline" in node:
                visit(node["pipeline"])
            node = node.get("dataset")


def _train_dataset_cfg(cfg):
    node, times = cfg.data.train, 1
    while node.get("type") == "RepeatDataset":
        times *= node.get("times", 1)
        node = node.dataset
    return node, times


def build_train_dataset(cfg, ann_files, data_roots, classes):
    ds_cfg, times = _train_dataset_cfg(cfg)
    dataset = CocoDataset(ann_files, data_roots, ds_cfg.get("pipeline", cfg.train_pipeline), classes=classes,
                          min_size=ds_cfg.get("min_size"), filter_empty_gt=ds_cfg.get("filter_empty_gt", True))
    return RepeatDataset(dataset, times) if times > 1 else dataset


def make_validator(coco, input_size, img_norm_cfg, batch_size, workers):
    """``validate(detector) -> {'ap': ...}`` on a merged COCO dict, with the same inference loop as eval.py."""
    from ..evaluation import evaluate_detections

    paths = [img["path"] for img in coco["images"]]
    keys = [img["id"] for img in coco["images"]]

    def validate(detector):
        predictor = TorchPredictor(InferenceModel(detector, img_norm_cfg))
        dets = detect_images(predictor, paths, input_size, keys, batch_size=batch_size, workers=workers, progress=False)
        return evaluate_detections(coco, dets, ["ap"])
    return validate


def _run(options):
    """One training process (the only one, or one DDP rank)."""
    task = Task(options["template"])
    cfg = task.cfg
    if options.get("input_size"):
        set_input_size(cfg, options["input_size"])
        task.input_size = tuple(options["input_size"])
    cfg.optimizer["lr"] = options["base_learning_rate"]
    seed_everything(options["seed"] + (torch.distributed.get_rank() if torch.distributed.is_initialized() else 0))
    device = "cpu"
    if options["use_cuda"]:
        device = f"cuda:{torch.cuda.current_device()}"
    dataset = build_train_dataset(cfg, options["train_ann_files"], options["train_data_roots"], task.classes)
    detector = task.build_detector()
    start_epoch, optimizer_state = 0, None
    if options.get("resume_from"):
        ckpt = load_weights(detector, options["resume_from"], expected_template=task.name)
        start_epoch = int((ckpt.get("meta") or {}).get("epoch", 0))
        optimizer_state = ckpt.get("optimizer")
    elif options.get("load_weights"):
        load_weights(detector, options["load_weights"], expected_template=task.name)
    elif cfg.model.backbone.get("pretrained"):
        detector.backbone.load_imagenet_weights()
    validate = None
    if options.get("val_coco") is not None and dist_utils.is_main():
        validate = make_validator(options["val_coco"], task.input_size, task.img_norm_cfg, options["batch_size"],
                                  options["workers"])
    meta = dict(task.checkpoint_meta(), input_size=list(task.input_size))
    trainer = Trainer(
        detector, dataset, optimizer_cfg=cfg.optimizer, lr_config=cfg.lr_config, total_epochs=options["epochs"],
        batch_size=options["batch_size"], workers=options["workers"], out_dir=options["save_checkpoints_to"],
        validate=validate, checkpoint_meta=meta, start_epoch=start_epoch, optimizer_state=optimizer_state,
        tensorboard_dir=options.get("tensorboard_dir"), grad_clip=(cfg.get("optimizer_config") or {}).get("grad_clip"),
        device=device, log_interval=(cfg.get("log_config") or {}).get("interval", 10), seed=options["seed"],
        progress=options.get("progress", True))
    history = trainer.run()
    if dist_utils.is_main():
        return history
    return None


def train(template, train_ann_files, train_data_roots, save_checkpoints_to, val_ann_files=None, val_data_roots=None,
          resume_from=None, load_weights=None, epochs=None, batch_size=None, base_learning_rate=None, gpu_num=None,
          tensorboard_dir=None, workers=None, input_size=None, seed=0, progress=True):
    """Train the template's model; returns the per-epoch history (loss, lr, val AP...) of the main process.

    ``gpu_num``: None -> the template's gpu_num, limited to the GPUs present (0 -> CPU). On a machine
    without CUDA an explicit gpu_num > 1 runs that many DDP processes on the CPU with gloo.
    """
    task = Task(template)
    if resume_from and load_weights:
        raise OteError("give either --resume-from or --load-weights, not both")
    for path in (resume_from, load_weights):
        if path:
            meta = load_checkpoint_file(path).get("meta") or {}  # fail early, with the file's name
            if path == resume_from and not input_size and meta.get("input_size"):
                input_size = tuple(meta["input_size"])  # a resumed run keeps its input size
    cuda = torch.cuda.device_count()
    if gpu_num is None:
        gpu_num = min(int(task.template.get("gpu_num", 1)), cuda)
    use_cuda = cuda > 0 and gpu_num > 0
    if use_cuda and gpu_num > cuda:
        raise OteError(f"--gpu-num {gpu_num} but only {cuda} GPU(s) are visible")
    processes = max(gpu_num, 1)
    # checked here, once, so that a data problem is one clear line before any process starts
    probe_cfg = copy.deepcopy(task.cfg)
    build_train_dataset(probe_cfg, train_ann_files, train_data_roots, task.classes)
    val_coco = load_coco_files(val_ann_files, val_data_roots, task.classes) if val_ann_files else None
    options = dict(
        template=task.template_path, train_ann_files=train_ann_files, train_data_roots=train_data_roots,
        val_coco=val_coco, save_checkpoints_to=os.path.abspath(save_checkpoints_to), resume_from=resume_from,
        load_weights=load_weights, epochs=int(epochs or task.basic["epochs"]),
        batch_size=int(batch_size or task.basic["batch_size"]), tensorboard_dir=tensorboard_dir,
        workers=int(workers if workers is not None else min(task.cfg.data.get("workers_per_gpu", 2), os.cpu_count())),
        input_size=input_size, seed=seed, use_cuda=use_cuda, progress=progress)
    options["base_learning_rate"] = float(base_learning_rate or task.basic["base_learning_rate"])
    os.makedirs(options["save_checkpoints_to"], exist_ok=True)
    if tensorboard_dir:
        os.makedirs(tensorboard_dir, exist_ok=True)
    log.info("training %s: %d epoch(s), batch %d per process, %d process(es) on %s", task.name, options["epochs"],
             options["batch_size"], processes, "GPU (NCCL)" if use_cuda else "CPU" + (" (gloo)" if processes > 1 else ""))
    if processes > 1 or dist_utils.launched_by_torchrun():
        dist_utils.launch(_run, processes, use_cuda, args=(options,))
        latest = os.path.join(options["save_checkpoints_to"], "latest.pth")
        meta = load_checkpoint_file(latest).get("meta", {}) if os.path.isfile(latest) else {}
        return [dict(epoch=meta.get("epoch"), **meta.get("metrics", {}))] if meta else []
    return _run(options)
