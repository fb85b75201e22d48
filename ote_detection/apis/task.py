"""A template (template.yaml + model.py) as the other entry points use it; the one place that resolves
a run's input size (``resolve_input_size``: --input-size, a resumed checkpoint's, the template's)."""

import logging
import os

from ..config import input_size_wh, load_config, load_template, template_config_path
from ..engine.checkpoint import load_checkpoint_file, load_weights
from ..models import build_detector
from ..models.inference import InferenceModel
from ..utils.artefacts import CheckpointMeta
from ..utils.cli import InputSize
from ..utils.errors import OteError

log = logging.getLogger(__name__)


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
        """``InputSize`` (w, h) of the config's top-level ``input_size``."""
        try:
            return input_size_wh(self.cfg.input_size)
        except ValueError as exc:
            raise OteError(f"{self.config_path}: input_size: {exc}") from None

    def set_input_size(self, size):
        self.cfg["input_size"] = tuple(int(v) for v in size)

    def resolve_input_size(self, requested=None, resume_meta=None, resume_path=None):
        """The input size (w, h) of a training run, set into the config and returned: ``requested``
        (--input-size) if given, else the size the resumed checkpoint (``resume_meta``, a
        ``CheckpointMeta``) was trained at, else the template's. A resume whose --input-size differs from
        the checkpoint's says so in one line (the run continues at the requested size)."""
        requested = InputSize.of(requested)
        stored = resume_meta.input_size if resume_meta is not None else None
        if requested is None:
            size = stored or self.input_size
            if stored is not None and tuple(stored) != tuple(self.input_size):
                log.info("%s: resuming at its input size %dx%d (the template's is %dx%d)", resume_path,
                         *stored, *self.input_size)
        else:
            size = requested
            if stored is not None and tuple(stored) != tuple(requested):
                log.warning("%s was trained at %dx%d; the resumed run continues at --input-size %dx%d (its "
                            "anchors were matched and its BatchNorm statistics measured at %dx%d)", resume_path,
                            *stored, *requested, *stored)
        size = InputSize(int(size[0]), int(size[1]))
        self.set_input_size(size)
        return size

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
        meta = CheckpointMeta.of(ckpt, weights)
        if meta.template and meta.template != self.name:
            raise OteError(f"{weights}: checkpoint of template '{meta.template}', not of '{self.name}'")
        if meta.compression:  # a compress.py checkpoint: rebuild the compressed structure
            from ..compression import restore_compressed_model
            detector = restore_compressed_model(detector, ckpt)
        else:
            load_weights(detector, weights, expected_template=self.name, ckpt=ckpt)
        size = tuple(meta.input_size or self.input_size)
        return InferenceModel(detector, self.img_norm_cfg).eval(), size

    def build_inference_model(self, weights=None):
        if weights:
            return self.load_snapshot(weights)[0]
        return InferenceModel(self.build_detector(), self.img_norm_cfg).eval()

    def checkpoint_meta(self):
        """``CheckpointMeta`` of this template's model at its (resolved) input size."""
        return CheckpointMeta(template=self.name, input_size=self.input_size, classes=list(self.classes))
