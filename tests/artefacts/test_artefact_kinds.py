"""open_artefact (artefacts/kinds.py): one reader says what a path is, for a checkpoint, an IR, an export
folder, an ONNX file, and a file that is none of them (one clear line naming it)."""

import os
import re

import pytest
import torch

from conftest import REPO
from ote_detection.artefacts.checkpoint import save_checkpoint
from ote_detection.artefacts.formats import ExportInfo, ir_checksums, write_export_info
from ote_detection.artefacts.input_size import InputSize
from ote_detection.artefacts.kinds import IR, Checkpoint, ExportFolder, OnnxModel, artefact_files, open_artefact
from ote_detection.utils.errors import OteError


def _write_ir(folder):
    """A real OpenVINO IR (image [1, 3, 8, 8] -> ReLU) as folder/model.xml + model.bin."""
    import openvino as ov
    import openvino.opset13 as ops
    folder.mkdir(exist_ok=True)
    image = ops.parameter([1, 3, 8, 8], ov.Type.f32, name="image")
    model = ov.Model([ops.relu(ops.multiply(image, ops.constant(2.0, ov.Type.f32)))], [image], "tiny")
    ov.save_model(model, str(folder / "model.xml"), compress_to_fp16=False)
    return folder / "model.xml"


def test_open_artefact_says_what_a_file_is(tmp_path):
    ckpt_path = tmp_path / "snapshot.pth"
    save_checkpoint(str(ckpt_path), torch.nn.Conv2d(3, 4, 3),
                    meta={"template": "face-detection-0200", "input_size": [64, 48], "classes": ["face"]})
    ckpt = open_artefact(ckpt_path)
    assert isinstance(ckpt, Checkpoint) and ckpt.kind == "snapshot"
    assert ckpt.meta.input_size == InputSize(64, 48) and ckpt.meta.template == "face-detection-0200"
    assert set(ckpt.data["state_dict"]) == {"weight", "bias"} and ckpt.files == (str(ckpt_path),)

    # an IR without export_info.yaml (as Open Model Zoo's), named by either file
    xml = _write_ir(tmp_path / "omz")
    for given in (xml, xml.with_suffix(".bin")):
        ir = open_artefact(given)
        assert isinstance(ir, IR) and ir.info is None
        assert ir.files == (str(xml), str(xml.with_suffix(".bin")))

    # an export folder: IR + ONNX + export_info.yaml with the set's checksums
    folder = tmp_path / "export"
    _write_ir(folder)
    (folder / "model.onnx").write_bytes(b"\x08\x07")
    write_export_info(str(folder), ExportInfo(template="face-detection-0200", classes=["face"],
                                              sha256=ir_checksums(str(folder), ["model.xml", "model.bin"])))
    export = open_artefact(folder)
    assert isinstance(export, ExportFolder) and export.info.template == "face-detection-0200"
    assert isinstance(export.onnx, OnnxModel) and export.ir.xml == str(folder / "model.xml")
    assert artefact_files(folder) == export.ir.files
    assert open_artefact(folder / "model.xml").info.classes == ["face"]
    assert isinstance(open_artefact(folder / "model.onnx"), OnnxModel)

    # a reader that takes only some kinds: one line saying what the file is and what was wanted
    with pytest.raises(OteError, match=r"model.xml: an IR, not a snapshot \(give a .pth snapshot\)"):
        open_artefact(xml, expect=(Checkpoint,))


@pytest.mark.parametrize("case, expected", [
    ("notes.txt", "not a PyTorch checkpoint (a text file); nor an OpenVINO IR"),
    ("empty.pth", "not a PyTorch checkpoint (an empty file)"),
    ("missing.pth", "missing.pth: file not found"),
    ("folder", "a folder without model.xml: not an export folder"),
    ("lonely.xml", "lonely.xml: no lonely.bin beside it (" + "{tmp}/lonely.bin: not found"),
])
def test_open_artefact_refuses_what_is_none_of_them(tmp_path, case, expected):
    path = tmp_path / case
    if case == "notes.txt":
        path.write_text("weights: see the wiki\n")
    elif case == "empty.pth":
        path.write_bytes(b"")
    elif case == "folder":
        path.mkdir()
        (path / "readme.txt").write_text("x")
    elif case == "lonely.xml":
        path.write_text("<net/>")
    with pytest.raises(OteError) as err:
        open_artefact(path)
    line = str(err.value)
    assert expected.format(tmp=tmp_path) in line and "\n" not in line
    assert str(tmp_path) in line  # names the user's file


def test_an_opened_artefact_is_passed_down_not_read_again(tmp_path, monkeypatch):
    """A caller opens a file once and passes the artefact down: open_artefact returns it as it is (after the
    same kind checks); ``refuse`` gives a caller's own line for a kind it does not take, before reading;
    ``open_ir`` takes only an IR's .xml / .bin (one line otherwise, without reading the file)."""
    from ote_detection.artefacts.kinds import open_ir
    ckpt_path = tmp_path / "snapshot.pth"
    save_checkpoint(str(ckpt_path), torch.nn.Conv2d(3, 4, 3), meta={"template": "face-detection-0200"})
    xml = _write_ir(tmp_path / "export")
    reads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: reads.append(f) or real_load(f, *a, **k))
    ckpt = open_artefact(ckpt_path)
    assert open_artefact(ckpt, expect=(Checkpoint,)) is ckpt and len(reads) == 1
    with pytest.raises(OteError, match=r"snapshot.pth: a snapshot, not an IR \(give an IR's .xml\)"):
        open_artefact(ckpt, expect=(IR,))
    with pytest.raises(OteError, match=r"model.xml: already an IR, say so$"):
        open_artefact(xml, expect=(Checkpoint,), refuse={IR: "already an IR, say so"})
    ir = open_ir(xml)
    assert open_ir(ir) is ir and open_artefact(ir, expect=(IR,)) is ir
    for not_ir in (ckpt_path, tmp_path / "export", tmp_path / "missing.pth"):
        with pytest.raises(OteError, match=r"an OpenVINO IR is given as its .xml or .bin file"):
            open_ir(not_ir)
    assert len(reads) == 1


def test_only_artefacts_tells_an_ir_by_its_name():
    """``is_ir`` (the naming rule) is called in artefacts/ alone: every other reader asks ``open_artefact`` /
    ``open_ir`` and branches on the typed object."""
    found = []
    for top in ("ote_detection", "tools", "benchmarks"):
        for folder, _, files in os.walk(os.path.join(REPO, top)):
            for name in files:
                rel = os.path.relpath(os.path.join(folder, name), REPO)
                if name.endswith(".py") and not rel.startswith(os.path.join("ote_detection", "artefacts", "")):
                    with open(os.path.join(REPO, rel), encoding="utf-8") as f:
                        if re.search(r"\bis_ir\b", f.read()):
                            found.append(rel)
    assert found == [], found
