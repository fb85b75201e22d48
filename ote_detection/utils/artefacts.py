"""Artefacts that must belong together: an IR's files, its export_info.yaml, and the work dir's template.

An export folder holds ``model.xml``, ``model.bin`` (and ``model.onnx``) and ``export_info.yaml``,
whose ``sha256`` section (written by ``ir_checksums``) names the content of each file. Readers call
``check_ir_belongs(ir_path, task)``: the template and classes must be the work dir's, and every file
must have the recorded checksum, so a ``model.bin`` of another export beside this ``model.xml`` (a
hand copy, an interrupted copy, an old non-atomic export) is one clear line instead of garbage
detections. ``read_ir_files`` reads the set through one folder descriptor, so even a reader racing
an export's folder swap gets files of one set.

IRs without export_info.yaml (e.g. Open Model Zoo's) are checked by their own graph when
``export.openvino_predictor.OpenVINOPredictor`` reads them: one image input [1, 3, H, W] and an SSD
``detection_out`` [1, 1, N, 7] or ``boxes`` [N, 5] + ``labels`` outputs.
"""

import errno
import hashlib
import os

import yaml

from .errors import OteError

__all__ = ["EXPORT_INFO", "ir_paths", "ir_checksums", "read_ir_files", "check_ir_belongs"]

EXPORT_INFO = "export_info.yaml"


def ir_paths(ir_path):
    """(model.xml, model.bin, export_info.yaml) paths for an IR given as .xml, .bin or its folder."""
    path = os.fspath(ir_path)
    if os.path.isdir(path):
        path = os.path.join(path, "model.xml")
    stem = os.path.splitext(path)[0]
    return stem + ".xml", stem + ".bin", os.path.join(os.path.dirname(os.path.abspath(path)), EXPORT_INFO)


def ir_checksums(folder, names):
    """{name: sha256} of the files ``names`` in ``folder`` (for export_info.yaml's ``sha256`` section)."""
    out = {}
    for name in names:
        digest = hashlib.sha256()
        with open(os.path.join(folder, name), "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        out[name] = digest.hexdigest()
    return out


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
    if not isinstance(info, dict):
        raise OteError(f"{path}: not an export description (no mapping)")
    return info


def read_ir_files(ir_path, verify=True):
    """(xml bytes, bin bytes, export_info dict or None), read as one consistent set.

    With ``verify``, the checksums recorded in export_info.yaml must match (one line otherwise)."""
    xml, binf, info_path = ir_paths(ir_path)
    folder = os.path.dirname(os.path.abspath(xml))
    xml_name, bin_name = os.path.basename(xml), os.path.basename(binf)
    for p in (xml, binf):
        if not os.path.isfile(p):
            raise OteError(f"{p}: not found (an IR is model.xml + model.bin side by side)")
    data = _read_all(folder, [xml_name, bin_name], optional=[EXPORT_INFO])
    info = _load_info(data[EXPORT_INFO], info_path) if data[EXPORT_INFO] is not None else None
    if verify and info is not None:
        recorded = info.get("sha256") or {}
        for name in (xml_name, bin_name):
            want = recorded.get(name)
            if want and hashlib.sha256(data[name]).hexdigest() != want:
                raise OteError(f"{os.path.join(folder, name)}: does not belong to this export (its sha256 differs "
                               f"from the one in {EXPORT_INFO}): the folder holds files of different exports; "
                               f"export again")
    return data[xml_name], data[bin_name], info


def check_ir_belongs(ir_path, task):
    """Refuse an IR that is not this work dir's model, or whose files come from different exports.

    ``task``: anything with ``.name`` (template name) and ``.classes``. Returns export_info (or None
    for an IR without it, e.g. Open Model Zoo's, whose graph the predictor checks when it reads it)."""
    xml, binf, info_path = ir_paths(ir_path)
    for p in (xml, binf):
        if not os.path.isfile(p):
            raise OteError(f"{p}: not found (an IR is model.xml + model.bin side by side)")
    if not os.path.isfile(info_path):
        return None  # e.g. Open Model Zoo's IR: OpenVINOPredictor checks its graph (input, output contract)
    try:
        with open(info_path, encoding="utf-8") as f:
            info = _load_info(f.read(), info_path)
    except OSError as exc:
        raise OteError(f"{info_path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise OteError(f"{info_path}: not a text file") from None
    template = info.get("template")
    name = getattr(task, "name", None)
    if template and name and template != name:
        raise OteError(f"{xml}: IR of template '{template}', not of '{name}' (says {info_path})")
    classes = info.get("classes")
    want = list(getattr(task, "classes", []) or [])
    if classes and want and list(classes) != want:
        raise OteError(f"{xml}: IR for classes {classes}, this work dir's model has {want}")
    recorded = info.get("sha256") or {}
    for p in (xml, binf):
        digest = recorded.get(os.path.basename(p))
        if digest:
            try:
                got = ir_checksums(os.path.dirname(p), [os.path.basename(p)])[os.path.basename(p)]
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    raise OteError(f"{p}: not found") from None
                raise OteError(f"{p}: cannot read ({exc.strerror})") from None
            if got != digest:
                raise OteError(f"{p}: does not belong to this export (its sha256 differs from the one in "
                               f"{EXPORT_INFO}): the folder holds files of different exports; export again")
    return info
