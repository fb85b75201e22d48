"""A template (template.yaml + model.py) as the other entry points use it."""

import os

from ..config import input_size_wh, load_config, load_template, template_config_path
from ..engine.checkpoint import load_checkpoint_file, load_weights
from ..models import build_detector
from ..models.inference import InferenceModel
from ..utils.errors import OteError


class Task:
    def __init__(self, template_path):
        self.template_path = os.path.abspath(template_path)
        self.template = load_template(self.template_path)
        self.config_path = template_config_path(self.template_path, self.template)
        self.cfg = load_config(self.config_path)
        self.name = self.template["name"]
        self.classes = tuple((self.template.get("dataset_requirements") or {}).get("classes") or ("face",))

    @property
    def input_size(self):
        """(w, h) of the config's top-level ``input_size``."""
        return input_size_wh(self.cfg.input_size)

    def set_input_size(self, size):
        self.cfg["input_size"] = tuple(int(v) for v in size)

    @property
    def basic(self):
        return self.template["hyper_parameters"]["basic"]

    @property
    def img_norm_cfg(self):
        if "img_norm_cfg" not in self.cfg:
            raise OteError(f"{self.config_path}: model config has no 'img_norm_cfg'")
        return self.cfg.img_norm_cfg

    def build_detector(self):
        return build_detector(self.cfg.model)

    def load_snapshot(self, weights):
        """(InferenceModel with a snapshot's weights, its input size (w, h)), reading the file once.

        The input size is the checkpoint's own (training may override it), else the template's."""
        detector = self.build_detector()
        ckpt = load_checkpoint_file(weights)
        meta = ckpt.get("meta") or {}
        if meta.get("template") and meta["template"] != self.name:
            raise OteError(f"{weights}: checkpoint of template '{meta['template']}', not of '{self.name}'")
        if meta.get("compression"):  # a compress.py checkpoint: rebuild the compressed structure
            from ..compression import restore_compressed_model
            detector = restore_compressed_model(detector, ckpt)
        else:
            load_weights(detector, weights, expected_template=self.name, ckpt=ckpt)
        size = tuple(meta.get("input_size") or self.input_size)
        return InferenceModel(detector, self.img_norm_cfg).eval(), size

    def build_inference_model(self, weights=None):
        if weights:
            return self.load_snapshot(weights)[0]
        return InferenceModel(self.build_detector(), self.img_norm_cfg).eval()

    def checkpoint_meta(self):
        return {"template": self.name, "input_size": list(self.input_size), "classes": list(self.classes)}
