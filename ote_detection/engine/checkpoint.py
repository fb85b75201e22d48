"""Checkpoints in mmcv's layout (``meta``, ``state_dict``, ``optimizer``), written atomically."""

import os
import pickle

import torch

from ..utils.errors import OteError
from ..utils.fileio import atomic_torch_save


def save_checkpoint(path, model, optimizer=None, meta=None):
    model = getattr(model, "module", model)  # DDP
    state = {"meta": dict(meta or {}),
             "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    atomic_torch_save(state, path)


def load_checkpoint_file(path):
    if not os.path.isfile(path):
        raise OteError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OteError(f"{path}: not a readable PyTorch checkpoint ({first})") from exc
    if isinstance(ckpt, dict) and "state_dict" in ckpt:
        return ckpt
    if isinstance(ckpt, dict) and ckpt and all(torch.is_tensor(v) for v in ckpt.values()):
        return {"meta": {}, "state_dict": ckpt}
    raise OteError(f"{path}: not a model checkpoint (no state_dict)")


def load_weights(model, path, expected_template=None):
    """Load a checkpoint's weights; mismatches are reported as one error naming the checkpoint."""
    ckpt = load_checkpoint_file(path)
    meta = ckpt.get("meta") or {}
    template = meta.get("template")
    if expected_template and template and template != expected_template:
        raise OteError(f"{path}: checkpoint of template '{template}', not of '{expected_template}'")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in ckpt["state_dict"].items()}
    target = getattr(model, "module", model)
    own = target.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} shape mismatch(es), e.g. {wrong[0]} {tuple(state[wrong[0]].shape)} vs "
                         f"{tuple(own[wrong[0]].shape)}")
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]}")
        raise OteError(f"{path}: weights do not fit this model ({'; '.join(parts)}); is it a snapshot of another template?")
    target.load_state_dict(state)
    return ckpt
