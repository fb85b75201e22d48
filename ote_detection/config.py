"""Reading model templates: ``template.yaml`` (metadata, hyper-parameters) and ``model.py`` (mmdetection-style config)."""

import os
import runpy

import yaml

from .utils.errors import OteError


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


def load_config(path):
    """Execute an mmdetection-style ``model.py`` and return its public top-level variables."""
    if not os.path.isfile(path):
        raise OteError(f"{path}: model config not found")
    try:
        variables = runpy.run_path(path)
    except Exception as exc:  # a syntax or name error in the user's config
        raise OteError(f"{path}: cannot be read as a Python config: {type(exc).__name__}: {exc}") from exc
    public = {k: v for k, v in variables.items()
              if not k.startswith("_") and not callable(v) and not isinstance(v, type(os))}
    cfg = Config.wrap(public)
    for key in ("model", "data", "optimizer", "lr_config", "total_epochs"):
        if key not in cfg:
            raise OteError(f"{path}: model config has no '{key}'")
    cfg["filename"] = os.path.abspath(path)
    return cfg


TEMPLATE_KEYS = {
    "name": True, "domain": False, "problem": False, "framework": False, "summary": False,
    "annotation_format": False, "initial_weights": False, "dependencies": True,
    "dataset_requirements": False, "max_nodes": False, "training_target": False,
    "inference_target": False, "hyper_parameters": True, "output_format": False,
    "optimisations": False, "metrics": True, "gpu_num": True, "tensorboard": False, "config": True,
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


def find_template(work_dir):
    path = os.path.join(work_dir, "template.yaml")
    if not os.path.isfile(path):
        raise OteError(f"{work_dir}: no template.yaml here (instantiate a template first)")
    return path


def template_config_path(template_path, template):
    return os.path.join(os.path.dirname(os.path.abspath(template_path)), template["config"])
