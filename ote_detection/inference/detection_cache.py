"""A disposable cache of detections per (weights content, detection settings, image list).

Every entry is a .npz of float32 arrays [N, K]. The cache is never trusted: an entry that cannot be
read (truncated, not a zip, wrong arrays, another count of images) is removed and recomputed with a
warning, never a traceback; a cache folder that cannot be written only costs the caching (warning).

The key covers everything that changes detections:

* the content of the weights (sha256 of the .pth, or of the IR's .xml and .bin);
* ``settings``: a JSON-able mapping given by the caller (``inference.factory.detection_settings``): the
  resolved model config (``model`` with its anchors and ``test_cfg``, ``img_norm_cfg``), the input
  size, keep-ratio, the tiling options, the backend and precision, the batch size and the versions of
  ote_detection, torch and OpenVINO;
* the template name and a format version;
* each image's absolute path, size in bytes and modification time (ns), in order,

so entries of other models, configs, templates or images are never picked up.
"""

import contextlib
import hashlib
import json
import logging
import os
import zipfile

import numpy as np

from ..artefacts.kinds import artefact_files
from ..utils.errors import OteError
from ..utils.fileio import atomic_path, sha256sum

log = logging.getLogger(__name__)

__all__ = ["DetectionCache"]

FORMAT_VERSION = 3


class DetectionCache:
    """``key(...)`` -> ``load(key)`` (list of arrays, or None) / ``save(key, dets)``. ``cache_dir`` None: off."""

    def __init__(self, cache_dir, template=None):
        self.cache_dir = cache_dir or None
        self.template = template

    def key(self, weights, settings, paths):
        """32 hex digits. ``settings``: how the detections were made besides the weights (a JSON-able
        mapping: model config, input size, keep-ratio, tiling, precision, ...); ``paths``: the images."""
        digest = hashlib.sha256()
        files = artefact_files(weights)
        for f in files:
            digest.update(sha256sum(f).encode())
        digest.update(json.dumps([FORMAT_VERSION, self.template, settings], sort_keys=True,
                                 default=repr).encode())
        for p in paths:
            st = os.stat(p)
            digest.update(f"{os.path.abspath(p)}:{st.st_size}:{st.st_mtime_ns}".encode())
        return digest.hexdigest()[:32]

    def _path(self, key):
        return os.path.join(self.cache_dir, key + ".npz")

    def _drop(self, path, why):
        log.warning("detection cache: %s is unreadable (%s); recomputing", path, why)
        with contextlib.suppress(OSError):
            os.remove(path)

    def load(self, key, expected=None):
        """The cached list of arrays, or None (absent, unreadable: removed with a warning, or not
        ``expected`` entries long)."""
        if not self.cache_dir or key is None:
            return None
        path = self._path(key)
        if not os.path.isfile(path):
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                names = [f"d{i}" for i in range(len(data.files))]
                if sorted(names) != sorted(data.files):
                    raise ValueError("unexpected arrays")
                dets = [np.asarray(data[n]) for n in names]
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, RuntimeError) as exc:
            self._drop(path, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
            return None
        if expected is not None and len(dets) != expected:
            self._drop(path, f"{len(dets)} entries, expected {expected}")
            return None
        for d in dets:
            if d.ndim != 2 or not np.issubdtype(d.dtype, np.floating) or not np.all(np.isfinite(d)):
                self._drop(path, f"an entry of shape {d.shape} / {d.dtype} is not a finite [N, K] float array")
                return None
        return dets

    def save(self, key, dets):
        if not self.cache_dir or key is None:
            return
        try:
            os.makedirs(self.cache_dir, exist_ok=True)
            with atomic_path(self._path(key)) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, **{f"d{i}": np.asarray(d, dtype=np.float32) for i, d in enumerate(dets)})
        except (OSError, OteError) as exc:
            log.warning("detection cache: not saved (%s)", exc)
