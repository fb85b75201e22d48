"""Reading model templates: ``template.yaml`` (metadata, hyper-parameters) and ``model.py`` (mmdetection-style config)."""

import logging
import os
import runpy

import yaml

from .registry import HEADS
from .utils.errors import OteError

log = logging.getLogger(__name__)


class Config(dict):
    """A dict whose keys are also attributes (``cfg.model.bbox_head``), as in mmcv's Config."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc

    def __setattr__(self, name, value):
        self[name] = value

    @staticmethod
    def wrap(obj):
        if isinstance(obj, dict):
            return Config({k: Config.wrap(v) for k, v in obj.items()})
        if isinstance(obj, list):
            return [Config.wrap(v) for v in obj]
        return obj


BASE_KEY = "_base_"
DELETE_KEY = "_delete_"

# read by nothing in ote-face (mmcv runner settings, SSD-only switches): a user's config that has them is
# told so once, since changing them would change nothing
DEAD_KEYS = {
    "checkpoint_config": "checkpoints are written after every epoch",
    "dist_params": "the backend is NCCL on GPUs and gloo on the CPU",
    "workflow": "training runs train epochs only",
    "work_dir": "--save-checkpoints-to sets the output folder",
    "load_from": "use --load-weights",
    "resume_from": "use --resume-from",
    "log_level": "the log level is INFO",
    "cudnn_benchmark": "not used",
    "total_epochs": "template.yaml's hyper_parameters.basic.epochs (or --epochs) sets the epochs",
    "evaluation": "validation runs after every epoch when --val-ann-files is given",
}
REQUIRED_KEYS = ("model", "data", "optimizer", "lr_config", "input_size")


def merge_dict(base, override):
    """mmcv's config merge: dicts merge key by key, recursively; a dict of ``override`` with
    ``_delete_=True`` replaces the base's dict instead; any other value (lists included) replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and not value.get(DELETE_KEY, False) and isinstance(merged.get(key), dict):
            merged[key] = merge_dict(merged[key], value)
        elif isinstance(value, dict):
            merged[key] = {k: v for k, v in value.items() if k != DELETE_KEY}
        else:
            merged[key] = value
    return merged


def _read_py_config(path, chain=()):
    """The public top-level variables of one config file, merged onto its ``_base_`` file(s)."""
    if not os.path.isfile(path):
        raise OteError(f"{path}: model config not found")
    if path in chain:
        raise OteError(f"{path}: _base_ inherits from itself ({' -> '.join(chain)})")
    try:
        variables = runpy.run_path(path)
    except Exception as exc:  # a syntax or name error in the user's config
        raise OteError(f"{path}: cannot be read as a Python config: {type(exc).__name__}: {exc}") from exc
    own = {k: v for k, v in variables.items()
           if not k.startswith("_") and not callable(v) and not isinstance(v, type(os))}
    bases = variables.get(BASE_KEY) or []
    bases = [bases] if isinstance(bases, str) else list(bases)
    merged = {}
    for base in bases:
        base_path = os.path.normpath(os.path.join(os.path.dirname(path), base))
        merged = merge_dict(merged, _read_py_config(base_path, chain + (path,)))
    return merge_dict(merged, own)


def input_size_wh(value):
    """``input_size`` of a config: an int (square) or (w, h) -> ``artefacts.input_size.InputSize``."""
    from .artefacts.input_size import InputSize
    return InputSize.of(value)


# nested keys that mmdetection configs carry and nothing in ote-face reads (the paths are the dotted keys of
# the merged config; ``data.train.dataset.*`` also stands for a ``data.train`` without a RepeatDataset)
DEAD_NESTED_KEYS = {
    "test_pipeline": "eval and export resize to input_size and normalise with img_norm_cfg",
    "data_root": "--train-data-roots / --val-data-roots give the images",
    "dataset_type": "the annotations are COCO JSON files given by --train-ann-files",
    "data.samples_per_gpu": "template.yaml's hyper_parameters.basic.batch_size (or --batch-size) sets the batch size",
    "data.val": "--val-ann-files / --val-data-roots give the validation data",
    "data.test": "eval.py's --test-ann-files / --test-data-roots give the test data",
    "data.train.dataset.ann_file": "--train-ann-files gives the annotations",
    "data.train.dataset.img_prefix": "--train-data-roots gives the images",
    "data.train.dataset.classes": "template.yaml's dataset_requirements.classes gives the classes",
    "log_config.hooks": "the text log is always on; --tensorboard-dir adds TensorBoard",
    "model.bbox_head.reg_decoded_bbox": "each head fixes what its box loss compares (SSD: deltas, FCOS/ATSS: boxes)",
}
PIPELINE_IMG_SCALE = "input_size sets the size (or --input-size)"


def _train_dataset_node(cfg):
    """The dataset dict of ``data.train`` under any RepeatDataset wrappers (``{}`` if there is none)."""
    node = (cfg.get("data") or {}).get("train") or {}
    while isinstance(node, dict) and node.get("type") == "RepeatDataset":
        node = node.get("dataset") or {}
    return node if isinstance(node, dict) else {}


def _train_pipelines(cfg):
    """The training pipeline lists of a config: ``data.train``'s own and the top-level ``train_pipeline``."""
    node = _train_dataset_node(cfg)
    return [p for p in (node.get("pipeline"), cfg.get("train_pipeline")) if isinstance(p, list)]


def _resolve_normalize(cfg, path):
    """A ``Normalize`` step without arguments takes the top-level ``img_norm_cfg`` (the values eval and export
    use); one with other values than ``img_norm_cfg`` would train on differently scaled pixels: refused."""
    norm = cfg.get("img_norm_cfg")
    for pipeline in _train_pipelines(cfg):
        for i, step in enumerate(pipeline):
            if not isinstance(step, dict) or step.get("type") != "Normalize":
                continue
            args = {k: v for k, v in step.items() if k != "type"}
            if not args and not norm:
                raise OteError(f"{path}: the training pipeline's Normalize has no values and the config no "
                               f"img_norm_cfg (e.g. img_norm_cfg = dict(mean=[0, 0, 0], std=[255, 255, 255], "
                               f"to_rgb=True))")
            if not args:
                pipeline[i] = Config(type="Normalize", **Config.wrap(dict(norm)))
            elif args and norm and _as_floats(args) != _as_floats(norm):
                raise OteError(f"{path}: the training pipeline's Normalize {dict(args)} differs from img_norm_cfg "
                               f"{dict(norm)}, which eval and export use; write dict(type='Normalize') to use "
                               f"img_norm_cfg")


def _as_floats(norm):
    return ([float(v) for v in norm.get("mean", ())], [float(v) for v in norm.get("std", ())],
            bool(norm.get("to_rgb", False)))


def _dead_keys(cfg):
    """{dotted key: why it is not read} for the keys of a merged config that nothing in ote-face reads."""
    dead = {k: DEAD_KEYS[k] for k in DEAD_KEYS if k in cfg}
    node = _train_dataset_node(cfg)
    for key, why in DEAD_NESTED_KEYS.items():
        parts = key.split(".")
        if key.startswith("data.train.dataset."):
            found = parts[-1] in node
        else:
            value = cfg
            for part in parts:
                value = value.get(part) if isinstance(value, dict) else None
            found = value is not None
        if found:
            dead[key] = why
    for pipeline in _train_pipelines(cfg)[:1]:
        for step in pipeline:
            if isinstance(step, dict) and "img_scale" in step:
                dead[f"train_pipeline {step.get('type')}.img_scale"] = PIPELINE_IMG_SCALE
    own = node.get("pipeline")
    if isinstance(own, list) and isinstance(cfg.get("train_pipeline"), list) and own != cfg.train_pipeline:
        dead["train_pipeline"] = "data.train's own pipeline is the one used"
    for k in unread_train_cfg_keys(cfg.model):
        dead[f"model.train_cfg.{k}"] = "not used by this head"
    return dead


def unread_train_cfg_keys(model_cfg):
    """The keys of ``model.train_cfg`` that the head does not read: the head class declares the ones it reads
    (``train_cfg_keys``). The head classes are in ``HEADS`` once ``ote_detection.models`` is imported (every
    entry point does; this layer does not import it); none for an unknown head type (building the model
    reports that)."""
    head_cfg = model_cfg.get("bbox_head") or {}
    if head_cfg.get("type") not in HEADS:
        return []
    read = HEADS.get(head_cfg["type"]).train_cfg_keys
    return [k for k in (model_cfg.get("train_cfg") or {}) if k not in read]


def load_config(path):
    """Execute an mmdetection-style ``model.py`` (with ``_base_`` inheritance and ``_delete_`` merging,
    as mmcv's Config) and return its public top-level variables.

    Resolved here: a training-pipeline ``Normalize`` without arguments gets ``img_norm_cfg``'s values. Keys
    that nothing reads are named in one warning; a value ote-face cannot honour (``model.pretrained``,
    a training dataset other than COCO JSON) is refused with one line."""
    path = os.path.abspath(path)
    cfg = Config.wrap(_read_py_config(path))
    for key in REQUIRED_KEYS:
        if key not in cfg:
            raise OteError(f"{path}: model config has no '{key}'")
    if cfg.model.get("pretrained"):
        raise OteError(f"{path}: model.pretrained={cfg.model.pretrained!r} is not supported: set "
                       f"model.backbone.pretrained=True (ImageNet weights) or give --load-weights")
    kind = _train_dataset_node(cfg).get("type", "CocoDataset")
    if kind != "CocoDataset":
        raise OteError(f"{path}: data.train dataset type '{kind}' is not supported (only CocoDataset: COCO JSON "
                       f"files given by --train-ann-files)")
    _resolve_normalize(cfg, path)
    dead = _dead_keys(cfg)
    if dead:
        log.warning("%s: ignored key(s) %s (%s)", path, ", ".join(dead),
                    "; ".join(f"{k}: {why}" for k, why in dead.items()))
    cfg["filename"] = path
    return cfg


TEMPLATE_KEYS = {
    "name": True, "domain": False, "problem": False, "framework": False, "summary": False,
    "annotation_format": False, "initial_weights": False, "dependencies": True,
    "dataset_requirements": False, "max_nodes": False, "training_target": False,
    "inference_target": False, "hyper_parameters": True, "output_format": False,
    "optimisations": False, "metrics": True, "gpu_num": True, "tensorboard": False, "config": True,
    "omz_weights": False,  # the Open Model Zoo IRs of the template (tools/import_openvino_weights.py --download)
}


def load_template(path):
    """Load and check a ``template.yaml``; unknown or missing keys are reported by name."""
    if not os.path.isfile(path):
        raise OteError(f"{path}: template not found")
    try:
        with open(path, encoding="utf-8") as f:
            template = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise OteError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(template, dict):
        raise OteError(f"{path}: template must be a YAML mapping")
    for key in template:
        if key not in TEMPLATE_KEYS:
            raise OteError(f"{path}: unknown template key '{key}'")
    for key, required in TEMPLATE_KEYS.items():
        if required and key not in template:
            raise OteError(f"{path}: template has no '{key}' field")
    basic = (template.get("hyper_parameters") or {}).get("basic") or {}
    for key in ("batch_size", "base_learning_rate", "epochs"):
        if key not in basic:
            raise OteError(f"{path}: template has no 'hyper_parameters.basic.{key}' field")
    for i, metric in enumerate(template["metrics"]):
        for key in ("key", "display_name", "unit"):
            if key not in metric:
                raise OteError(f"{path}: metrics[{i}] has no '{key}' field")
    return template


def template_config_path(template_path, template):
    return os.path.join(os.path.dirname(os.path.abspath(template_path)), template["config"])
