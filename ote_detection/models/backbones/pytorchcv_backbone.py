"""Backbones from pytorchcv (``mobilenetv2_w1``, ``shufflenetv2_w1``, ...), as OTE used them.

OTE wrapped every pytorchcv classifier as a multi-output backbone: the stages of ``features`` run in
order, the outputs of ``out_indices`` are returned, and the stages after the last one used are
dropped. We keep the same module names (``backbone.features.<stage>...``) so OTE snapshots load.
"""

import contextlib
import io
import logging
import os
import socket
from urllib.parse import urlparse

import torch.nn as nn
from pytorchcv.model_provider import _models as PYTORCHCV_MODELS
from pytorchcv.models.common import model_store

from ...registry import BACKBONES
from ...utils.errors import OteError

log = logging.getLogger(__name__)


class PytorchcvBackbone(nn.Module):
    def __init__(self, model_name, out_indices, frozen_stages=-1, norm_eval=False, pretrained=False):
        super().__init__()
        self.model_name = model_name
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.pretrained = pretrained
        classifier = PYTORCHCV_MODELS[model_name](pretrained=False)
        stages = list(classifier.features.named_children())
        last = max(self.out_indices)
        if last >= len(stages):
            raise OteError(f"model.py: {model_name} has {len(stages)} stages, out_indices {self.out_indices} is out of range")
        self.features = nn.Sequential()
        for name, stage in stages[: last + 1]:
            self.features.add_module(name, stage)

    def load_imagenet_weights(self):
        """Load pytorchcv's ImageNet weights (downloaded and cached by pytorchcv); False when unavailable.

        Offline, this says so in one log line: the download is not attempted when the download host cannot
        be reached, and pytorchcv's own progress and retry messages are silenced during an attempt."""
        name = self.model_name
        cached = _cached_weights(name)
        if cached is None:
            host = urlparse(model_store.imgclsmob_repo_url).hostname
            if not _reachable(host):
                log.warning("ImageNet weights of %s not loaded: %s cannot be reached (offline?); the backbone "
                            "starts from random initialisation", name, host)
                return False
        try:
            with contextlib.redirect_stdout(io.StringIO()), _quiet_logging():
                classifier = PYTORCHCV_MODELS[name](pretrained=True)
        except Exception as exc:  # the download failed or the file is damaged
            detail = str(exc).splitlines()[0] if str(exc) else ""
            log.warning("ImageNet weights of %s not loaded (%s: %s); the backbone starts from random "
                        "initialisation", name, type(exc).__name__, detail)
            return False
        own = self.state_dict()
        weights = {k: v for k, v in classifier.state_dict().items() if k in own}
        self.load_state_dict(weights, strict=False)
        return True

    def forward(self, x):
        outputs = []
        for i, stage in enumerate(self.features):
            x = stage(x)
            if i in self.out_indices:
                outputs.append(x)
        return outputs

    def train(self, mode=True):
        super().train(mode)
        for i in range(self.frozen_stages + 1):
            stage = self.features[i]
            stage.eval()
            for param in stage.parameters():
                param.requires_grad = False
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self


def _cached_weights(name, root=os.path.join("~", ".torch", "models")):
    """The path of pytorchcv's cached weight file of ``name`` (its default cache), or None."""
    try:
        error, sha1_hash, _ = model_store.get_model_name_suffix_data(name)
    except Exception:  # no pretrained weights known for this name
        return None
    path = os.path.join(os.path.expanduser(root), f"{name}-{error}-{sha1_hash[:8]}.pth")
    return path if os.path.exists(path) else None


def _reachable(host, port=443, timeout=5.0):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _quiet_logging():
    """pytorchcv logs to the root logger ("Model file not found. Downloading ..."): silence it meanwhile."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _register(name):
    def build(**kwargs):
        return PytorchcvBackbone(name, **kwargs)
    build.__name__ = name
    BACKBONES.register(name)(build)


for _name in ("mobilenetv2_w1", "mobilenetv2_wd2", "mobilenetv2_w3d4", "shufflenetv2_w1", "shufflenetv2_wd2",
              "shufflenetv2_w3d2", "shufflenetv2_w2", "resnet50", "resnet101", "resnet152", "resnet50b",
              "resnet101b", "resnet152b"):
    if _name in PYTORCHCV_MODELS:
        _register(_name)
