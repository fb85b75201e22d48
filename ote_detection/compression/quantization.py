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


def plain_images(paths, input_size, keep_ratio, img_norm_cfg, count):
    """Up to ``count`` images [1, 3, h, w] as the model takes them, WITHOUT the training augmentation: each
    of the first ``count`` files of ``paths`` brought to ``input_size`` (w, h) as the run's frames are
    (``data.scale_crop.letterbox``: letterboxed when ``keep_ratio``, else stretched; the run's geometry,
    decided once by ``inference.deploy.deployment_geometry``), as eval.py and the exported IR show them,
    then normalised by ``img_norm_cfg``. Range initialisation and BatchNorm adaptation on these match what
    the deployed model sees (augmented batches cost 0.57 AP, docs/templates.md)."""
    from ..data.images import read_image
    from ..data.scale_crop import letterbox
    from ..models.inference import InferenceModel

    norm = InferenceModel(torch.nn.Identity(), img_norm_cfg)
    images = []
    paths = list(paths)
    for i in range(min(int(count), len(paths)) if count > 0 else 0):
        img, _ = letterbox(read_image(paths[i]), tuple(input_size), bool(keep_ratio))
        bgr = torch.from_numpy(img.transpose(2, 0, 1).copy()).float()[None]
        images.append(norm.normalize(bgr).contiguous())
    return images


def freeze_batchnorm(model):
    """Put every BatchNorm layer of ``model`` in eval mode (running statistics used and not updated; its
    affine parameters still train). Called after each ``model.train()`` during QAT: the imported Open
    Model Zoo weights have their BatchNorms folded into the convolutions, and batch statistics of tiny
    batches would replace the statistics the quantizer ranges were set for. Returns the count."""
    count = 0
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training:
            m.eval()
            count += 1
    return count


def quantization_params(algorithm):
    """(num_init_samples, num_bn_adaptation_samples) of OTE's quantization algorithm dict."""
    init = algorithm.get("initializer") or {}
    num_init = int((init.get("range") or {}).get("num_init_samples", 256))
    num_bn = int((init.get("batchnorm_adaptation") or {}).get("num_bn_adaptation_samples", 0))
    return num_init, num_bn


def quantization_options(algorithm):
    """Our keys of the quantization algorithm dict (not OTE's; docs/templates.md):
    ``freeze_bn`` (default True): BatchNorm layers stay in eval mode during QAT;
    ``init_images`` ("plain", default, or "augmented"): which images range init and BN adaptation use;
    ``preset`` ("performance", default, or "mixed"): NNCF's quantization preset."""
    return {"freeze_bn": bool(algorithm.get("freeze_bn", True)),
            "init_images": str(algorithm.get("init_images", "plain")),
            "preset": str(algorithm.get("preset", "performance"))}


def quantize_model(model, init_images, bn_batches=(), device="cpu", preset=None):
    """Insert NNCF's fake-quantizers into ``model`` (in place) and initialise their ranges on ``init_images``
    ([1, 3, h, w] each); then adapt the BatchNorm statistics on ``bn_batches`` ([B, 3, h, w] each, as
    NNCF 2.x did). ``preset``: "performance" (NNCF's default: symmetric activations) or "mixed"
    (asymmetric activations). Returns the model."""
    nncf = import_nncf()
    if not init_images:
        raise ValueError("quantization needs calibration images")
    was_training = model.training
    model.eval()
    images = [img.to(device) for img in init_images]
    log.info("quantization: range initialisation on %d training image(s)", len(images))
    kwargs = {}
    if preset:
        kwargs["preset"] = nncf.QuantizationPreset(preset)
    quantized = nncf.quantize(model, nncf.Dataset(images), subset_size=len(images), **kwargs)
    if bn_batches:
        from nncf.torch.function_hook.pruning.batch_norm_adaptation import batch_norm_adaptation
        bn = [b.to(device) for b in bn_batches]
        log.info("quantization: batch-norm adaptation on %d batch(es) of images", len(bn))
        batch_norm_adaptation(quantized, nncf.Dataset(bn))
    quantized.train(was_training)
    return quantized
