"""Artefacts that must belong together: an IR's files, its export_info.yaml, and the work dir's template.

An export folder holds ``model.xml``, ``model.bin`` (and ``model.onnx``) and ``export_info.yaml``,
whose ``sha256`` section (written by ``ir_checksums``) names the content of each file. Readers call
``check_ir_belongs(ir_path, task)``: the template and classes must be the work dir's, and every file
must have the recorded checksum, so a ``model.bin`` of another export beside this ``model.xml`` (a
hand copy, an interrupted copy, an old non-atomic export) is one clear line instead of garbage
detections. ``read_ir_files`` reads the set through one folder descriptor, so even a reader racing
an export's folder swap gets files of one set.

IRs without export_info.yaml (e.g. Open Model Zoo's) are checked by their own graph when
``inference.openvino_predictor.OpenVINOPredictor`` reads them: one image input [1, 3, H, W] and an SSD
``detection_out`` [1, 1, N, 7] or ``boxes`` [N, 5] + ``labels`` outputs.

The two typed artefact descriptions, each with one reader and one writer and a format version (a
file without ``version`` is version 1 and still loads; a newer version than this code knows is one
line):

* ``ExportInfo``: ``export_info.yaml`` beside an IR (``read_export_info`` / ``write_export_info``);
* ``CheckpointMeta``: a checkpoint's ``meta`` (``CheckpointMeta.of(ckpt, path)`` / ``.to_dict()``,
  which ``artefacts.checkpoint.save_checkpoint`` writes).
"""

import dataclasses
import errno
import hashlib
import os
from typing import Optional

import yaml

from ..utils.errors import OteError
from ..utils.fileio import sha256sum
from .input_size import InputSize

__all__ = ["EXPORT_INFO", "IR_SUFFIXES", "ExportInfo", "CheckpointMeta", "is_ir", "read_export_info",
           "write_export_info", "ir_paths", "need_ir_files", "ir_checksums", "check_ir_checksum", "read_ir_files",
           "check_ir_belongs"]

EXPORT_INFO = "export_info.yaml"
IR_SUFFIXES = (".xml", ".bin")  # an OpenVINO IR is named by either of its two files
EXPORT_INFO_VERSION = 2     # 2: ``version`` and ``complexity`` (GFLOPs, Mp of the exported model) added
CHECKPOINT_META_VERSION = 3  # 2: ``version`` added; ``input_size`` always [w, h]; 3: ``keep_ratio`` added


def _check_version(data, newest, path, what):
    version = data.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise OteError(f"{path}: {what} has version {version!r}, not a positive integer")
    if version > newest:
        raise OteError(f"{path}: {what} of version {version}, written by a newer ote-face (this one reads up to "
                       f"version {newest}); update ote-face")
    return version


def _typed(data, key, kinds, path, what):
    value = data.get(key)
    if value is not None and not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in (kinds if isinstance(kinds, tuple) else (kinds,)))
        raise OteError(f"{path}: {what} '{key}' is {type(value).__name__} {value!r:.60}, expected {names}")
    return value


class _ReadOnlyMapping:
    """``info["key"]``, ``dict(meta, epoch=2)``: a read-only mapping view of ``to_dict()``, for callers
    written against the untyped dicts of version 1."""

    def keys(self):
        return self.to_dict().keys()

    def __getitem__(self, key):
        return self.to_dict()[key]

    def get(self, key, default=None):
        return self.to_dict().get(key, default)


@dataclasses.dataclass
class ExportInfo(_ReadOnlyMapping):
    """What ``export_info.yaml`` says about the IR beside it (written by ``apis/export.py`` and by
    ``compression/ptq.py``). ``input``: name, shape [1, 3, H, W], layout, colour, range, ``input_size``
    [w, h], ``keep_ratio`` and the folded normalisation; ``complexity``: ``gflops``, ``mparams`` of the
    exported PyTorch model (a pruned one's own), ``input_size`` [w, h] and ``counted_by``; ``sha256``:
    {file name: hex digest}; ``int8``: ``export.py --int8``'s post-training quantization (AP before and after,
    what the CPU runs). Keys this version does not know are kept in ``extra``."""

    template: Optional[str] = None
    classes: list = dataclasses.field(default_factory=list)
    precision: Optional[str] = None
    files: list = dataclasses.field(default_factory=list)
    sha256: dict = dataclasses.field(default_factory=dict)
    input: dict = dataclasses.field(default_factory=dict)
    complexity: Optional[dict] = None
    source_snapshot: Optional[str] = None
    source_sha256: Optional[str] = None
    head_family: Optional[str] = None
    output: Optional[dict] = None
    onnx: Optional[dict] = None
    int8: Optional[dict] = None
    extra: dict = dataclasses.field(default_factory=dict)
    version: int = EXPORT_INFO_VERSION

    @property
    def input_size(self):
        """``InputSize`` the IR was exported at, or None when not recorded."""
        try:
            return InputSize.of(self.input.get("input_size"))
        except ValueError:
            return None

    @property
    def keep_ratio(self):
        """Whether the IR expects letterboxed frames (``export.py --input-size Wx``)."""
        return bool(self.input.get("keep_ratio", False))

    @classmethod
    def from_dict(cls, data, path):
        if not isinstance(data, dict):
            raise OteError(f"{path}: not an export description (no mapping)")
        what = "export_info key"
        version = _check_version(data, EXPORT_INFO_VERSION, path, "export_info.yaml")
        fields = {f.name for f in dataclasses.fields(cls)} - {"extra", "version"}
        kinds = {"template": str, "classes": list, "precision": str, "files": list, "sha256": dict, "input": dict,
                 "complexity": dict, "source_snapshot": str, "source_sha256": str, "head_family": str,
                 "output": dict, "onnx": dict, "int8": dict}
        values = {k: _typed(data, k, kinds[k], path, what) for k in fields if data.get(k) is not None}
        return cls(**values, extra={k: v for k, v in data.items() if k not in fields and k != "version"},
                   version=version)

    def to_dict(self):
        """Plain types in a stable order (for yaml.safe_dump); None fields are left out."""
        out = {"version": EXPORT_INFO_VERSION}
        for f in dataclasses.fields(self):
            if f.name in ("extra", "version"):
                continue
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = value
        out.update(self.extra)
        return out


def read_export_info(path):
    """The ``ExportInfo`` of an ``export_info.yaml`` file (or of the IR/folder it describes); None when
    there is none. Any damage is one line naming the file."""
    if not str(path).endswith(EXPORT_INFO):
        path = ir_paths(path)[2]
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise OteError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise OteError(f"{path}: not a text file") from None
    return _load_info(text, path)


def write_export_info(folder, info):
    """Write ``info`` (an ``ExportInfo``) as ``folder``/export_info.yaml; returns the path."""
    path = os.path.join(folder, EXPORT_INFO)
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(info.to_dict(), f, sort_keys=False)
    return path


@dataclasses.dataclass
class CheckpointMeta(_ReadOnlyMapping):
    """A checkpoint's ``meta``: the template it was trained for, its input size and whether frames are
    letterboxed into it (``keep_ratio``: ``train.py --input-size Wx``; eval, export and the demo then
    letterbox too), classes, ``epoch`` (epochs finished), ``epoch_iter`` (iterations of the next epoch
    done: a checkpoint written within an epoch), ``iter``, ``run`` (the training run's identity:
    ``artefacts.checkpoint.run_identity``), ``compression`` (compress.py's structure and state), ``source``
    (how it was made, e.g. imported from an IR), ``metrics`` of its last epoch. Keys this version does not
    know are kept in
    ``extra``."""

    template: Optional[str] = None
    input_size: Optional[InputSize] = None
    keep_ratio: bool = False
    classes: Optional[list] = None
    epoch: int = 0
    epoch_iter: int = 0
    iter: Optional[int] = None
    run: Optional[dict] = None
    compression: Optional[dict] = None
    source: Optional[dict] = None
    metrics: Optional[dict] = None
    extra: dict = dataclasses.field(default_factory=dict)
    version: int = CHECKPOINT_META_VERSION

    @classmethod
    def from_dict(cls, meta, path):
        """The meta of the checkpoint file ``path`` (a dict, or None for a bare state dict)."""
        meta = meta or {}
        if not isinstance(meta, dict):
            raise OteError(f"{path}: not a model checkpoint (its meta is not a mapping)")
        what = "checkpoint meta key"
        version = _check_version(meta, CHECKPOINT_META_VERSION, path, "checkpoint meta")
        try:
            size = InputSize.of(meta.get("input_size"))
        except ValueError as exc:
            raise OteError(f"{path}: checkpoint meta 'input_size': {exc}") from None
        epoch = _typed(meta, "epoch", int, path, what) or 0
        fields = {f.name for f in dataclasses.fields(cls)} - {"extra", "version"}
        return cls(template=_typed(meta, "template", str, path, what), input_size=size,
                   keep_ratio=bool(_typed(meta, "keep_ratio", bool, path, what)),
                   classes=_typed(meta, "classes", (list, tuple), path, what), epoch=int(epoch),
                   iter=_typed(meta, "iter", int, path, what),
                   epoch_iter=int(_typed(meta, "epoch_iter", int, path, what) or 0),
                   run=_typed(meta, "run", dict, path, what),
                   compression=_typed(meta, "compression", dict, path, what) or None,
                   source=_typed(meta, "source", dict, path, what),
                   metrics=_typed(meta, "metrics", dict, path, what),
                   extra={k: v for k, v in meta.items() if k not in fields and k != "version"}, version=version)

    @classmethod
    def of(cls, ckpt, path):
        """The meta of a checkpoint dict (``artefacts.checkpoint.load_checkpoint_file``'s result)."""
        return cls.from_dict(ckpt.get("meta"), path)

    def to_dict(self):
        """Plain types (lists, not tuples) for torch.save with weights_only loading; None left out."""
        out = {"version": CHECKPOINT_META_VERSION}
        for f in dataclasses.fields(self):
            if f.name in ("extra", "version"):
                continue
            value = getattr(self, f.name)
            if value is None or (f.name == "epoch_iter" and not value):
                continue
            if f.name == "input_size":
                value = [int(v) for v in value]
            elif f.name == "classes":
                value = list(value)
            out[f.name] = value
        out.update(self.extra)
        return out

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def is_ir(path):
    """Whether the weights file ``path`` (str, PathLike or None) names an OpenVINO IR: its extension is
    ``.xml`` or ``.bin`` (any case). The one place this is decided; anything else is a PyTorch snapshot."""
    return os.path.splitext(str(path))[1].lower() in IR_SUFFIXES


def ir_paths(ir_path):
    """(model.xml, model.bin, export_info.yaml) paths for an IR given as .xml, .bin or its folder."""
    path = os.fspath(ir_path)
    if os.path.isdir(path):
        path = os.path.join(path, "model.xml")
    stem = os.path.splitext(path)[0]
    return stem + ".xml", stem + ".bin", os.path.join(os.path.dirname(os.path.abspath(path)), EXPORT_INFO)


def ir_checksums(folder, names):
    """{name: sha256} of the files ``names`` in ``folder`` (for export_info.yaml's ``sha256`` section)."""
    return {name: sha256sum(os.path.join(folder, name)) for name in names}


def check_ir_checksum(info, path, sha256_of):
    """Refuse the IR file ``path`` when its sha256 differs from the one ``info`` (``ExportInfo``) records
    for its file name: the one comparison of the IR set checksums. ``sha256_of(path)`` gives the file's hex
    digest; it is called only when a digest is recorded (files of an export_info.yaml without one pass)."""
    want = info.sha256.get(os.path.basename(path))
    if want and sha256_of(path) != want:
        raise OteError(f"{path}: does not belong to this export (its sha256 differs from the one in "
                       f"{EXPORT_INFO}): the folder holds files of different exports; export again")


def _read_all(folder, names, optional=()):
    """Read files through one descriptor of ``folder``: all come from the same folder inode."""
    for _ in range(5):
        try:
            dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise OteError(f"{folder}: cannot open ({exc.strerror})") from None
        try:
            data = {}
            for name in list(names) + list(optional):
                try:
                    fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
                except FileNotFoundError:
                    if name in optional:
                        data[name] = None
                        continue
                    raise
                with os.fdopen(fd, "rb") as f:
                    data[name] = f.read()
            return data
        except FileNotFoundError as exc:
            missing = exc.filename or "a file"
            # the folder may have been swapped away and removed while we read: try the new one
            if os.stat(folder).st_ino != os.fstat(dir_fd).st_ino:
                continue
            raise OteError(f"{os.path.join(folder, str(missing))}: not found") from None
        finally:
            os.close(dir_fd)
    raise OteError(f"{folder}: changed while being read (an export is running?); try again")


def _load_info(text, path):
    try:
        info = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise OteError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return ExportInfo.from_dict(info, path)


def need_ir_files(xml, binf):
    """Refuse (one line) an IR whose .xml or .bin is missing: the one check that both files are there."""
    for missing, other in ((xml, binf), (binf, xml)):
        if not os.path.isfile(missing):
            raise OteError(f"{other}: no {os.path.basename(missing)} beside it ({missing}: not found; an IR is its "
                           f".xml and .bin side by side)")


def read_ir_files(ir_path, verify=True):
    """(xml bytes, bin bytes, ``ExportInfo`` or None), read as one consistent set.

    With ``verify``, the checksums recorded in export_info.yaml must match (one line otherwise)."""
    xml, binf, info_path = ir_paths(ir_path)
    folder = os.path.dirname(os.path.abspath(xml))
    xml_name, bin_name = os.path.basename(xml), os.path.basename(binf)
    need_ir_files(xml, binf)
    data = _read_all(folder, [xml_name, bin_name], optional=[EXPORT_INFO])
    info = _load_info(data[EXPORT_INFO], info_path) if data[EXPORT_INFO] is not None else None
    if verify and info is not None:
        for name in (xml_name, bin_name):
            check_ir_checksum(info, os.path.join(folder, name),
                              lambda p: hashlib.sha256(data[os.path.basename(p)]).hexdigest())
    return data[xml_name], data[bin_name], info


def check_ir_belongs(ir_path, task):
    """Refuse an IR that is not this work dir's model, or whose files come from different exports.

    ``task``: anything with ``.name`` (template name) and ``.classes``. Returns its ``ExportInfo`` (or None
    for an IR without it, e.g. Open Model Zoo's, whose graph the predictor checks when it reads it)."""
    xml, binf, info_path = ir_paths(ir_path)
    need_ir_files(xml, binf)
    info = read_export_info(info_path)
    if info is None:
        return None  # e.g. Open Model Zoo's IR: OpenVINOPredictor checks its graph (input, output contract)
    name = getattr(task, "name", None)
    if info.template and name and info.template != name:
        raise OteError(f"{xml}: IR of template '{info.template}', not of '{name}' (says {info_path})")
    want = list(getattr(task, "classes", []) or [])
    if info.classes and want and list(info.classes) != want:
        raise OteError(f"{xml}: IR for classes {info.classes}, this work dir's model has {want}")
    for p in (xml, binf):
        check_ir_checksum(info, p, _file_sha256)
    return info


def _file_sha256(path):
    """Hex sha256 of the file ``path``; a vanished or unreadable file is one line."""
    try:
        return sha256sum(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise OteError(f"{path}: not found") from None
        raise OteError(f"{path}: cannot read ({exc.strerror})") from None
