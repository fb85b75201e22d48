"""8-bit quantization-aware training with NNCF 3.x.

``nncf.quantize(model, nncf.Dataset(images))`` inserts fake-quantizers (8-bit, symmetric weights per
output channel, activations per tensor; NNCF's default preset) into the PyTorch model and sets their
ranges from ``num_init_samples`` training images (OTE's ``initializer.range.num_init_samples``); NNCF's
``batch_norm_adaptation`` then re-estimates the BatchNorm statistics on
``num_bn_adaptation_samples`` images (``initializer.batchnorm_adaptation``). The returned model is the
same ``nn.Module`` (NNCF wraps its ``forward`` with hooks) and is fine-tuned by the ordinary training
loop; its quantizer scales are parameters and train with it.

Ours: collecting the calibration images from the training loader and the settings mapping. NNCF does
the rest. The model must be trained first (quantizing a random model diverges).
"""

import logging

import torch

from .env import import_nncf

log = logging.getLogger(__name__)


def is_nncf_model(module):
    """True when ``module`` (or the module it wraps: DDP, InferenceModel) carries NNCF hooks."""
    for attr in ("module", "detector"):
        inner = getattr(module, attr, None)
        if isinstance(inner, torch.nn.Module) and is_nncf_model(inner):
            return True
    return "__nncf_hooks" in getattr(module, "_modules", {})


def collect_images(loader, count):
    """Up to ``count`` single images [1, 3, h, w] (normalised, as the model takes them) from one pass over a
    training loader whose batches are ``(imgs, gt_bboxes, gt_labels)``: each training image at most once,
    so a set smaller than ``count`` gives fewer (the caller says so)."""
    images = []
    if count <= 0:
        return images
    for batch in loader:
        imgs = batch[0] if isinstance(batch, (list, tuple)) else batch
        for img in imgs:
            images.append(img[None].float().contiguous())
            if len(images) >= count:
                return images
    return images


def collect_batches(loader, count):
    """Whole training batches (images only) holding at least ``count`` images, for BatchNorm adaptation."""
    batches, seen = [], 0
    while seen < count:
        before = seen
        for batch in loader:
            imgs = batch[0] if isinstance(batch, (list, tuple)) else batch
            batches.append(imgs.float().contiguous())
            seen += len(imgs)
            if seen >= count:
                return batches
        if seen == before:
            break
    return batches


def quantization_params(algorithm):
    """(num_init_samples, num_bn_adaptation_samples) of OTE's quantization algorithm dict."""
    init = algorithm.get("initializer") or {}
    num_init = int((init.get("range") or {}).get("num_init_samples", 256))
    num_bn = int((init.get("batchnorm_adaptation") or {}).get("num_bn_adaptation_samples", 0))
    return num_init, num_bn


def quantize_model(model, init_images, bn_batches=(), device="cpu"):
    """Insert NNCF's fake-quantizers into ``model`` (in place) and initialise their ranges on ``init_images``
    ([1, 3, h, w] each); then adapt the BatchNorm statistics on ``bn_batches`` (training batches, as
    NNCF 2.x did). Returns the model."""
    nncf = import_nncf()
    if not init_images:
        raise ValueError("quantization needs calibration images")
    was_training = model.training
    model.eval()
    images = [img.to(device) for img in init_images]
    log.info("quantization: range initialisation on %d training image(s)", len(images))
    quantized = nncf.quantize(model, nncf.Dataset(images), subset_size=len(images))
    if bn_batches:
        from nncf.torch.function_hook.pruning.batch_norm_adaptation import batch_norm_adaptation
        bn = [b.to(device) for b in bn_batches]
        log.info("quantization: batch-norm adaptation on %d batch(es) of training images", len(bn))
        batch_norm_adaptation(quantized, nncf.Dataset(bn))
    quantized.train(was_training)
    return quantized
