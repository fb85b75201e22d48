"""Checkpoints in mmcv's layout (``meta``, ``state_dict``, ``optimizer``), written atomically.

Also the rules of a checkpoint folder (``check_checkpoint_dir``): a fresh run never overwrites the
checkpoints of an earlier run unless asked to (``--overwrite``), and a resumed run never overwrites
checkpoints of epochs after the one it resumes from.
"""

import hashlib
import json
import logging
import os
import pickle
import re
import zipfile

import torch

from ..utils.errors import OteError
from ..utils.fileio import atomic_torch_save, clean_leftovers, sha256sum
from .formats import CheckpointMeta

log = logging.getLogger(__name__)

RESERVED_KEYS = ("meta", "state_dict", "optimizer")


def save_checkpoint(path, model, optimizer=None, meta=None, extra=None):
    """Write ``{'meta', 'state_dict', 'optimizer'}`` atomically. ``meta``: a ``CheckpointMeta`` or a dict of
    its fields (written through ``CheckpointMeta.to_dict``: with its version, sizes as [w, h] lists).

    ``extra``: more top-level keys (e.g. ``hooks``: the training hooks' state); the reserved keys
    meta / state_dict / optimizer cannot be replaced through it."""
    model = getattr(model, "module", model)  # DDP
    clash = [k for k in (extra or {}) if k in RESERVED_KEYS]
    if clash:
        raise ValueError(f"save_checkpoint: extra key(s) {clash} are reserved")
    if not isinstance(meta, CheckpointMeta):
        meta = CheckpointMeta.from_dict(dict(meta or {}), path)
    state = {**(extra or {}), "meta": meta.to_dict(),
             "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    atomic_torch_save(state, path)


def load_checkpoint_file(path):
    """The checkpoint dict of ``path``; any unreadable file is one line naming it. (torch's own message
    advising weights_only=False is never passed on: a file that is not a checkpoint must not be
    unpickled with arbitrary code.)"""
    if not os.path.isfile(path):
        raise OteError(f"{path}: checkpoint not found" + (" (it is a folder)" if os.path.isdir(path) else ""))
    problem = not_a_checkpoint(path)
    if problem:
        raise OteError(f"{path}: not a PyTorch checkpoint ({problem})")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) or "Weights only" in str(exc):
            raise OteError(f"{path}: not a checkpoint of ours (it holds Python objects other than tensors and "
                           f"plain values)") from None
        raise OteError(f"{path}: not a readable PyTorch checkpoint (cannot unpickle it)") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError, AttributeError,
            UnicodeDecodeError, zipfile.BadZipFile, MemoryError) as exc:
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        if isinstance(exc, OSError) and exc.strerror:
            first = exc.strerror
        if isinstance(exc, KeyError) or "magic number" in first or "load key" in first:
            first = "not a PyTorch file"
        if "weights_only" in first or "Weights only" in first:
            first = "holds objects other than tensors"
        raise OteError(f"{path}: not a readable PyTorch checkpoint ({first[:200]})") from None
    if isinstance(ckpt, dict) and "state_dict" in ckpt:
        if not isinstance(ckpt["state_dict"], dict):
            raise OteError(f"{path}: not a model checkpoint (its state_dict is not a mapping)")
        CheckpointMeta.of(ckpt, path)  # a meta that is not ours is one line here, not a KeyError later
        return ckpt
    if isinstance(ckpt, dict) and ckpt and all(torch.is_tensor(v) for v in ckpt.values()):
        return {"meta": {}, "state_dict": ckpt}
    raise OteError(f"{path}: not a model checkpoint (no state_dict)")


def not_a_checkpoint(path):
    """Why the file ``path`` cannot be a PyTorch checkpoint, from its first bytes (a phrase: 'an empty
    file', 'truncated or damaged', 'a text file', 'not a PyTorch file'), or None when it may be one
    (torch's zip format or a legacy pickle). An unreadable file is one OteError line."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as exc:
        raise OteError(f"{path}: cannot read ({exc.strerror})") from None
    if zipfile.is_zipfile(path) or head[:1] == b"\x80":
        return None
    return ("an empty file" if not head else "truncated or damaged" if head[:4] == b"PK\x03\x04"
            else "a text file" if _is_text(head) else "not a PyTorch file")


def _is_text(head):
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the end of the sample
            return False
    return b"\x00" not in head


_EPOCH_RE = re.compile(r"^epoch_(\d+)\.pth$")


def run_checkpoints(out_dir):
    """The checkpoint files of a training run in ``out_dir``: latest.pth, epoch_N.pth, best*.pth."""
    if not os.path.isdir(out_dir):
        return []
    names = [n for n in os.listdir(out_dir)
             if n == "latest.pth" or _EPOCH_RE.match(n) or (n.startswith("best") and n.endswith(".pth"))]
    return sorted(os.path.join(out_dir, n) for n in names)


def _epoch_of_name(path):
    m = _EPOCH_RE.match(os.path.basename(path))
    return int(m.group(1)) if m else None


def _describe(paths):
    names = [os.path.basename(p) for p in paths]
    epochs = sorted(e for e in (_epoch_of_name(p) for p in paths) if e is not None)
    parts = [n for n in names if not _EPOCH_RE.match(n)]
    if epochs:
        parts.append(f"epoch_{epochs[0]}.pth" if len(epochs) == 1 else f"epoch_{epochs[0]}..{epochs[-1]}.pth")
    return ", ".join(parts)


def _stored_epoch(path):
    try:
        return CheckpointMeta.of(load_checkpoint_file(path), path).epoch
    except (OteError, TypeError, ValueError):
        return 1 << 30  # unreadable: counts as later, so it is never overwritten silently


def check_checkpoint_dir(out_dir, resume_from=None, start_epoch=0, overwrite=False):
    """Make sure a training run into ``out_dir`` destroys nothing of an earlier run; returns removed paths.

    * ``out_dir`` is an existing file -> one line.
    * Fresh run (no ``resume_from``, or one from another folder) into a folder holding checkpoints ->
      one line naming --resume-from, a new folder and --overwrite. With ``overwrite`` the old run's
      checkpoints are removed first (said in the log), so no old epoch_N.pth stays mixed in.
    * Resumed from a checkpoint of ``out_dir`` itself: checkpoints of epochs after ``start_epoch``
      (they would be overwritten or mixed) -> one line; with ``overwrite`` they are removed (the file
      resumed from is kept).
    """
    out_dir = os.path.abspath(out_dir)
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise OteError(f"{out_dir}: exists and is not a folder (give a folder for --save-checkpoints-to)")
    existing = run_checkpoints(out_dir)
    if not existing:
        return []
    source = os.path.realpath(resume_from) if resume_from else None
    if source is not None and os.path.dirname(source) == os.path.realpath(out_dir):
        doomed = []
        for p in existing:
            if os.path.realpath(p) == source:
                continue
            epoch = _epoch_of_name(p)
            if (epoch if epoch is not None else _stored_epoch(p)) > start_epoch:
                doomed.append(p)
        if not doomed:
            return []
        if not overwrite:
            raise OteError(f"{out_dir}: resuming from epoch {start_epoch} would overwrite {_describe(doomed)} of "
                           f"later epochs; resume from the last one, choose a new folder, or add --overwrite to "
                           f"replace them")
    else:
        doomed = [p for p in existing if os.path.realpath(p) != source]
        if not overwrite:
            latest = os.path.join(out_dir, "latest.pth")
            hint = "continue it with --resume (or --resume-from " + (latest if latest in existing else
                                                                   "one of them") + ")"
            raise OteError(f"{out_dir}: holds the checkpoints of an earlier run ({_describe(existing)}); {hint}, "
                           f"choose a new folder, or add --overwrite to replace them")
    for p in doomed:
        try:
            os.remove(p)
        except OSError as exc:
            raise OteError(f"{p}: cannot remove ({exc.strerror})") from None
        clean_leftovers(out_dir, os.path.basename(p))
    log.warning("--overwrite: removed %d checkpoint(s) of the earlier run in %s (%s)", len(doomed), out_dir,
                _describe(doomed))
    return doomed


def _plain_state(ckpt):
    """The checkpoint's state dict without DDP's ``module.`` prefix."""
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in ckpt["state_dict"].items()}


def _state_mismatches(own, state, prefix="", extra_ok=False):
    """What keeps ``state`` from loading into a module whose state dict is ``own``: a list of phrases (shape
    mismatches, missing keys, and unless ``extra_ok`` unexpected keys), each with a first example named
    ``prefix`` + key; empty when it fits."""
    missing = [k for k in own if k not in state]
    unexpected = [] if extra_ok else [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = []
    if wrong:
        parts.append(f"{len(wrong)} shape mismatch(es), e.g. {prefix}{wrong[0]} {tuple(state[wrong[0]].shape)} vs "
                     f"{tuple(own[wrong[0]].shape)}")
    if missing:
        parts.append(f"{len(missing)} missing key(s), e.g. {prefix}{missing[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s), e.g. {prefix}{unexpected[0]}")
    return parts


def load_weights(model, path, expected_template=None, ckpt=None):
    """Load a checkpoint's weights (``ckpt``: the file's content when already read); mismatches are
    reported as one error naming the checkpoint."""
    ckpt = ckpt if ckpt is not None else load_checkpoint_file(path)
    template = CheckpointMeta.of(ckpt, path).template
    if expected_template and template and template != expected_template:
        raise OteError(f"{path}: checkpoint of template '{template}', not of '{expected_template}'")
    state = _plain_state(ckpt)
    target = getattr(model, "module", model)
    parts = _state_mismatches(target.state_dict(), state)
    if parts:
        raise OteError(f"{path}: weights do not fit this model ({'; '.join(parts)}); is it a snapshot of another template?")
    target.load_state_dict(state)
    return ckpt


def load_backbone_weights(model, path, ckpt=None):
    """Copy the ``backbone.*`` tensors of the snapshot at ``path`` into ``model``'s backbone; the neck and
    head keep their initialisation. The snapshot may be of another template with the same backbone (e.g. an
    Open Model Zoo import of face-detection-0204 for face-detection-0205: both ``mobilenetv2_w1``), which is
    how a template starts without ImageNet weights (offline). Returns the number of tensors copied.

    Every backbone tensor of ``model`` must be in the snapshot with the same shape (the snapshot may hold
    more, e.g. a backbone stage this template drops); otherwise one error naming the file."""
    ckpt = ckpt if ckpt is not None else load_checkpoint_file(path)
    meta = CheckpointMeta.of(ckpt, path)
    if meta.compression:
        raise OteError(f"{path}: a compressed checkpoint ({', '.join(meta.compression.get('parts') or [])}); its "
                       f"backbone is not plain weights: give a train.py snapshot or an imported one")
    prefix = "backbone."
    state = {k[len(prefix):]: v for k, v in _plain_state(ckpt).items() if k.startswith(prefix)}
    target = getattr(model, "module", model).backbone
    own = target.state_dict()
    parts = ["no backbone.* weights"] if not state else _state_mismatches(own, state, prefix, extra_ok=True)
    if parts:
        source = f" (template {meta.template})" if meta.template else ""
        raise OteError(f"{path}{source}: {'; '.join(parts)}; --load-backbone needs a snapshot with the same backbone")
    target.load_state_dict({k: state[k] for k in own})
    return len(own)


# --- the same run: what --resume continues ---------------------------------------------------------------

RUN_FIELDS = {"template": "template", "config": "resolved config (model.py with the flags applied: input size, "
              "learning rate, compression settings...)", "data": "training annotation files", "seed": "--seed"}


def _digest(data):
    return hashlib.sha256(data).hexdigest()[:16]


def run_identity(template, cfg, ann_files, seed):
    """What makes two starts one training run, stored in every checkpoint's meta (``run``) and compared by
    ``find_resume_checkpoint``: the template's name, a digest of the resolved config (``cfg`` after the
    flags: input size, learning rate, a plugin's changes; JSON with sorted keys), a digest of the training
    annotation files' content, in order (not their paths: a restart on another node may mount them
    elsewhere), and the seed (it draws the sampler's order). Not in it: --epochs (a run may be extended, as
    --resume-from allows), the batch size and the number of processes (the position within an epoch is
    carried over in samples)."""
    config = json.dumps(cfg, sort_keys=True, default=repr).encode("utf-8")
    files = hashlib.sha256()
    for path in ann_files:
        try:
            files.update(sha256sum(path).encode("ascii"))
        except OSError as exc:
            raise OteError(f"{path}: cannot read ({exc.strerror})") from None
    return {"template": str(template), "config": _digest(config), "data": files.hexdigest()[:16], "seed": int(seed)}


def run_differences(stored, current):
    """The fields of ``RUN_FIELDS`` in which two run identities differ, as words for a message."""
    return [RUN_FIELDS[k] for k in RUN_FIELDS if (stored or {}).get(k) != current.get(k)]


def _newest_first(out_dir):
    """latest.pth, then epoch_N.pth from the highest N down (best*.pth are copies of an epoch: not resumed)."""
    paths = [p for p in run_checkpoints(out_dir) if os.path.basename(p) == "latest.pth"]
    return paths + sorted((p for p in run_checkpoints(out_dir) if _epoch_of_name(p) is not None),
                          key=_epoch_of_name, reverse=True)


def find_resume_checkpoint(out_dir, run):
    """``(path, checkpoint dict, CheckpointMeta)`` of the newest complete checkpoint of the run ``run``
    (``run_identity``) in ``out_dir``, each file read once; ``(None, None, None)`` when it holds none.

    Newest: the highest (epochs finished, iterations within the next) of latest.pth and of the highest
    epoch_N.pth that loads. A file that does not load (damaged by a copy, a full disk, a crash of the
    machine) is passed over with a warning and renamed ``<name>.damaged`` (kept for the user; a save never
    leaves one: saves are atomic). A checkpoint of another run (its recorded template, config, data or
    seed differ), or one that records no run (older ote-face), is one OteError line."""
    found, damaged = [], []
    for path in _newest_first(out_dir):
        if found and _epoch_of_name(path) is not None and _epoch_of_name(found[-1][0]) is not None:
            break  # the highest epoch_N.pth that loads is found
        try:
            ckpt = load_checkpoint_file(path)
            meta = CheckpointMeta.of(ckpt, path)
        except OteError as exc:
            damaged.append((path, exc))
            continue
        found.append((path, ckpt, meta))
    for path, exc in damaged:
        log.warning("%s (not resumed from; kept as %s.damaged)", exc, os.path.basename(path))
        os.replace(path, path + ".damaged")
    if not found:
        return None, None, None
    path, ckpt, meta = max(found, key=lambda f: (f[2].epoch, f[2].epoch_iter, os.path.basename(f[0]) == "latest.pth"))
    for other_path, _, other in found:
        if other.run is None:
            raise OteError(f"{out_dir}: {os.path.basename(other_path)} records no training run (written by an older "
                           f"ote-face), so --resume cannot tell whether it is this run's; continue it with "
                           f"--resume-from {other_path}, or choose a new folder")
        diff = run_differences(other.run, run)
        if diff:
            raise OteError(f"{out_dir}: holds the checkpoints of another run ({os.path.basename(other_path)}: its "
                           f"{', '.join(diff)} differ from this run's); choose a new folder, give the same settings "
                           f"to continue it, or add --overwrite without --resume to replace them")
    return path, ckpt, meta


def resume_position(ckpt, batch_size, world_size):
    """Where a run resumed from ``ckpt`` starts: (epochs finished, iterations of the next epoch done) for
    ``batch_size`` images per process and ``world_size`` processes. Written with another batch or number
    of processes, the position within the epoch is carried over in samples (rounded down: a few samples
    are seen again rather than left out)."""
    meta = CheckpointMeta.of(ckpt, "checkpoint")
    state = ckpt.get("trainer") or {}
    done = meta.epoch_iter
    old = (state.get("batch_size") or batch_size) * (state.get("world_size") or world_size)
    if done and old != batch_size * world_size:
        done = done * old // (batch_size * world_size)
    return meta.epoch, done
