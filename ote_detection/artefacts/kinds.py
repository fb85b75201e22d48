"""What a file is: ``open_artefact(path)`` reads it once and returns one typed object, the one place a
path is told apart as a checkpoint, an OpenVINO IR, an ONNX model or an export folder.

* ``Checkpoint``: a PyTorch snapshot (``.pth``: torch's zip format or a legacy pickle), its content read
  once (``artefacts.checkpoint.load_checkpoint_file``) with its ``CheckpointMeta``;
* ``IR``: an OpenVINO IR named by its ``.xml`` or ``.bin`` (``formats.is_ir``), both files present, with the
  ``ExportInfo`` of the ``export_info.yaml`` beside it (None for an IR without one, e.g. Open Model Zoo's);
* ``OnnxModel``: an ``.onnx`` file (``export.py --onnx``);
* ``ExportFolder``: what ``export.py`` writes: a folder with ``model.xml`` + ``model.bin`` (its ``ir``), and
  ``model.onnx`` and ``export_info.yaml`` when written.

Anything else (a text file, an empty file, a folder without an IR, a missing path) is one OteError line
naming the file and what it is not. Nothing here imports OpenVINO: an IR's graph is read by
``inference.openvino_predictor``.
"""

import dataclasses
import os
from typing import Optional

from ..utils.errors import OteError
from .checkpoint import load_checkpoint_file, not_a_checkpoint
from .formats import CheckpointMeta, ExportInfo, ir_paths, is_ir, need_ir_files, read_export_info

__all__ = ["Checkpoint", "IR", "OnnxModel", "ExportFolder", "open_artefact", "open_ir", "artefact_files"]

ONNX_SUFFIX = ".onnx"
OTHER_KINDS = "an OpenVINO IR (.xml + .bin), an ONNX model (.onnx) or an export folder (model.xml + model.bin)"


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A PyTorch snapshot: ``data`` is the checkpoint dict (``meta``, ``state_dict``, ...), read once."""

    path: str
    data: dict
    meta: CheckpointMeta
    kind = "snapshot"

    @property
    def files(self):
        return (self.path,)


@dataclasses.dataclass(frozen=True)
class IR:
    """An OpenVINO IR: ``path`` as given (.xml or .bin), its ``xml`` and ``bin`` files, and ``info``, the
    ``ExportInfo`` of the export_info.yaml beside it (None when there is none)."""

    path: str
    xml: str
    bin: str
    info: Optional[ExportInfo]
    kind = "IR"

    @property
    def files(self):
        return (self.xml, self.bin)


@dataclasses.dataclass(frozen=True)
class OnnxModel:
    """An ONNX model file (not read: OpenVINO or onnxruntime read it)."""

    path: str
    kind = "ONNX model"

    @property
    def files(self):
        return (self.path,)


@dataclasses.dataclass(frozen=True)
class ExportFolder:
    """An ``export.py`` output folder: ``ir`` (model.xml + model.bin), ``onnx`` (model.onnx, or None) and
    ``info`` (its export_info.yaml, or None)."""

    path: str
    ir: IR
    onnx: Optional[OnnxModel]
    kind = "export folder"

    @property
    def info(self):
        return self.ir.info

    @property
    def files(self):
        return self.ir.files + (self.onnx.files if self.onnx else ())


def _ir(path):
    """The ``IR`` named by ``path`` (.xml or .bin, or a folder's model.xml); each missing file is one line."""
    xml, bin_, info_path = ir_paths(path)
    given = os.fspath(path)
    if not os.path.isdir(given) and not os.path.isfile(given):
        raise OteError(f"{given}: file not found")
    need_ir_files(xml, bin_)
    return IR(given, xml, bin_, read_export_info(info_path))


def artefact_files(path):
    """The files whose content makes the artefact named by ``path`` (an IR: its .xml and .bin; a folder:
    its IR's; anything else: ``path``), without reading them (e.g. to hash them for a cache key)."""
    path = os.fspath(path)
    if os.path.isdir(path) or is_ir(path):
        return ir_paths(path)[:2]
    return (path,)


def _kind_of(path):
    """The artefact class of ``path``, from its name and first bytes only; none of them is one line."""
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "model.xml")):
            raise OteError(f"{path}: a folder without model.xml: not an export folder (nor a PyTorch checkpoint "
                           f"(.pth), an OpenVINO IR or an ONNX model)")
        return ExportFolder
    if not os.path.exists(path):
        raise OteError(f"{path}: file not found")
    if is_ir(path):
        return IR
    if os.path.splitext(path)[1].lower() == ONNX_SUFFIX:
        return OnnxModel
    problem = not_a_checkpoint(path)
    if problem:
        raise OteError(f"{path}: not a PyTorch checkpoint ({problem}); nor {OTHER_KINDS}")
    return Checkpoint


def _checkpoint(path):
    data = load_checkpoint_file(path)
    return Checkpoint(path, data, CheckpointMeta.of(data, path))


def _export_folder(path):
    onnx = os.path.join(path, "model.onnx")
    return ExportFolder(path, _ir(path), OnnxModel(onnx) if os.path.isfile(onnx) else None)


_READERS = {Checkpoint: _checkpoint, IR: _ir, OnnxModel: OnnxModel, ExportFolder: _export_folder}


def open_artefact(path, expect=None, refuse=None):
    """The typed artefact of ``path`` (``Checkpoint``, ``IR``, ``OnnxModel`` or ``ExportFolder``), read once.

    ``path``: a path, or an artefact already opened (returned as it is, after the checks below: a caller
    passes what it opened down instead of the path). ``expect``: the artefact classes the caller takes
    (default: all); another kind is one OteError line saying what the file is and what was wanted, before
    the file is read. ``refuse``: {artefact class: phrase}, the caller's own one-line reason for a kind it
    does not take (``path: phrase``), checked first. A path that is none of them is one line naming it."""
    opened = path if isinstance(path, tuple(_READERS)) else None
    path = opened.path if opened is not None else os.fspath(path)
    kind = type(opened) if opened is not None else _kind_of(path)
    if refuse and kind in refuse:
        raise OteError(f"{path}: {refuse[kind]}")
    if expect is not None and kind not in expect:
        wanted = " or ".join(_a(c.kind) for c in expect)
        raise OteError(f"{path}: {_a(kind.kind)}, not {wanted} (give {_hint(expect)})")
    return opened if opened is not None else _READERS[kind](path)


def open_ir(path):
    """The ``IR`` named by ``path`` (its .xml or .bin; an ``IR`` already opened is returned as it is), for
    the readers that take nothing else (OpenVINO's): any other name is one line, before anything is read."""
    if not isinstance(path, IR) and not is_ir(path):
        raise OteError(f"{os.fspath(path)}: an OpenVINO IR is given as its .xml or .bin file")
    return open_artefact(path, expect=(IR,))


def _a(kind):
    return ("an " if kind[0].lower() in "aeiou" else "a ") + kind


def _hint(expect):
    hints = {Checkpoint: "a .pth snapshot", IR: "an IR's .xml", OnnxModel: "an .onnx file",
             ExportFolder: "an export folder"}
    return " or ".join(hints[c] for c in expect)
