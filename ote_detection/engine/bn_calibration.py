"""BatchNorm calibration: statistics measured on images without changing the eval-mode function."""

import os

import numpy as np
import torch

from ..models.inference import InferenceModel
from ..data.images import IMAGE_EXTS
from ..utils.errors import OteError
from ..utils.fileio import files_under


def _image_list(images):
    from ..data.coco import split_paths
    paths = []
    for item in split_paths(images) if isinstance(images, str) else list(images):
        if os.path.isdir(item):
            paths.extend(files_under(item, IMAGE_EXTS))  # each real file once (symlinks, loops)
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise OteError(f"{item}: calibration image or folder not found")
    if not paths:
        raise OteError(f"{images}: no image file ({', '.join(IMAGE_EXTS[:4])}, ...) found for BatchNorm calibration")
    return paths


def calibrate_batchnorm(detector, img_norm_cfg, images, input_size, bn_added, max_images=200):
    """Give every identity BatchNorm the statistics of its input on ``images`` while keeping eval-mode output.

    With running mean m and variance v measured on the images, weight sqrt(v + eps) and bias m + c, eval
    mode still computes x + c (to float rounding), and train mode's batch statistics (norm_eval False)
    start close to the running ones, so fine-tuning starts from the imported function. Returns the number
    of images used."""
    from ..data.transforms import read_image, resize_image
    paths = _image_list(images)[:max_images]
    inference = InferenceModel(detector, img_norm_cfg).eval()
    bns = {name: m for name, m in detector.named_modules() if name in bn_added}
    sums = {name: None for name in bns}
    hooks = []

    def make_hook(name):
        def hook(module, inputs):
            x = inputs[0].detach().double()
            stats = torch.stack([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3))])
            count = x.numel() // x.shape[1]
            prev = sums[name]
            sums[name] = (stats, count) if prev is None else (prev[0] + stats, prev[1] + count)
        return hook

    for name, m in bns.items():
        hooks.append(m.register_forward_pre_hook(make_hook(name)))
    try:
        with torch.no_grad():
            for path in paths:
                img = resize_image(read_image(path), input_size)
                inference(torch.from_numpy(img).permute(2, 0, 1)[None].float())
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        for name, m in bns.items():
            (total, total_sq), count = sums[name]
            mean = total / count
            var = (total_sq / count - mean * mean).clamp(min=0)
            added = torch.as_tensor(np.asarray(bn_added[name], dtype=np.float64))
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.weight.copy_(torch.sqrt(var.float() + m.eps))
            m.bias.copy_(mean + added)
    return len(paths)


