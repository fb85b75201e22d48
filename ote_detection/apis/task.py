"""A template (template.yaml + model.py) as the other entry points use it; the one place that resolves
a run's input geometry (``resolve_geometry``: --input-size, a resumed or compressed checkpoint's, the
template's)."""

import logging
import os

from ..artefacts.checkpoint import load_weights
from ..artefacts.formats import CheckpointMeta
from ..artefacts.input_size import InputSize
from ..artefacts.kinds import Checkpoint, open_artefact
from ..config import input_size_wh, load_config, load_template, template_config_path
from ..inference.deploy import deployment_geometry, model_stride
from ..models import build_detector
from ..models.inference import InferenceModel
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

    @property
    def keep_ratio(self):
        """Whether the run's frames are letterboxed into the input (``train.py --input-size Wx``) rather
        than stretched (the templates' own way); a model.py may set ``keep_ratio = True`` beside
        ``input_size`` to train its own size letterboxed."""
        return bool(self.cfg.get("keep_ratio", False))

    def set_input_size(self, size, keep_ratio=None):
        self.cfg["input_size"] = tuple(int(v) for v in size)
        if keep_ratio is not None:
            self.cfg["keep_ratio"] = bool(keep_ratio)

    def resolve_geometry(self, requested=None, snapshot_meta=None, snapshot_path=None, frame_hw=None, aspect=None,
                         role="resume"):
        """The input geometry of a training run, ((w, h), keep_ratio), set into the config and returned.

        ``requested`` (--input-size: W, WxH, or (W, None) for 'Wx') if given, else the geometry the checkpoint
        ``snapshot_meta`` (a ``CheckpointMeta``, of the file ``snapshot_path``) was trained at, else the
        template's (stretched). ``role``: why that checkpoint's geometry counts, for the log lines:
        ``"resume"`` (train.py / compress.py --resume-from) or ``"compress"`` (compress.py --load-weights:
        the snapshot is the model compressed, so the run keeps its geometry). 'Wx' takes its height from
        ``aspect`` (--aspect) if given, else from ``frame_hw`` (the training frames' (h, w)), rounded up to the
        model's stride, and letterboxes: ``inference.deploy.deployment_geometry``, the decision export, eval and
        the demo make. Taking the checkpoint's geometry says so in one line; an --input-size that differs from
        it says so in one warning (the run goes on at the requested geometry)."""
        taking, going_on = {"resume": ("resuming", "the resumed run continues"),
                            "compress": ("compressing", "compression runs")}[role]
        requested = InputSize.of(requested)
        stored = snapshot_meta.input_size if snapshot_meta is not None else None
        default = ((stored, snapshot_meta.keep_ratio) if stored is not None else (self.input_size, self.keep_ratio))
        size, keep = deployment_geometry(requested, frame_hw=None if aspect is not None else frame_hw, aspect=aspect,
                                         stride=model_stride(self.cfg.model), default=default)
        fit = "letterboxed" if keep else "stretched"
        if requested is None and stored is not None:
            template = "the template's" if (tuple(stored), keep) == (tuple(self.input_size), self.keep_ratio) else \
                "the template's is %dx%d %s" % (*self.input_size, "letterboxed" if self.keep_ratio else "stretched")
            log.info("%s: %s at its input size %dx%d %s (%s)", snapshot_path, taking, *stored, fit, template)
        elif requested is not None and stored is not None and (tuple(stored), snapshot_meta.keep_ratio) != (size, keep):
            log.warning("%s was trained at %dx%d%s; %s at --input-size %dx%d %s (its anchors were matched and its "
                        "BatchNorm statistics measured at %dx%d)", snapshot_path, *stored,
                        " letterboxed" if snapshot_meta.keep_ratio else "", going_on, *size, fit, *stored)
        size = InputSize(int(size[0]), int(size[1]))
        self.set_input_size(size, keep)
        return size, keep

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

    def load_snapshot(self, weights, with_meta=False):
        """(InferenceModel with a snapshot's weights, its input size (w, h)), reading the file once;
        ``with_meta``: (model, size, its ``CheckpointMeta``), whose ``keep_ratio`` says whether it was
        trained letterboxed. ``weights``: a path, or the ``artefacts.kinds.Checkpoint`` already opened.

        The input size is the checkpoint's own (training may override it), else the template's."""
        detector = self.build_detector()
        snapshot = open_artefact(weights, expect=(Checkpoint,))  # (as it is when already opened)
        weights, ckpt, meta = snapshot.path, snapshot.data, snapshot.meta
        if meta.template and meta.template != self.name:
            raise OteError(f"{weights}: checkpoint of template '{meta.template}', not of '{self.name}'")
        if meta.compression:  # a compress.py checkpoint: rebuild the compressed structure
            from ..compression import restore_compressed_model
            detector = restore_compressed_model(detector, ckpt)
        else:
            load_weights(detector, weights, expected_template=self.name, ckpt=ckpt)
        size = tuple(meta.input_size or self.input_size)
        model = InferenceModel(detector, self.img_norm_cfg).eval()
        return (model, size, meta) if with_meta else (model, size)

    def build_inference_model(self, weights=None):
        if weights:
            return self.load_snapshot(weights)[0]
        return InferenceModel(self.build_detector(), self.img_norm_cfg).eval()

    def checkpoint_meta(self):
        """``CheckpointMeta`` of this template's model at its (resolved) input size and letterboxing."""
        return CheckpointMeta(template=self.name, input_size=self.input_size, keep_ratio=self.keep_ratio,
                              classes=list(self.classes))
