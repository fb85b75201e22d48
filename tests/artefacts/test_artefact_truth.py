"""Numbers that describe what was evaluated: a detection cache that follows the work dir's model.py
(issue 15.1), size and complexity of the artefact itself, foreign IRs reported as such (15.6, 15.8),
and the typed checkpoint meta / export_info.yaml (issue 16.2)."""

import os
import re
import shutil

import pytest

from conftest import AIRPORT_ANN, AIRPORT_ROOT, REPO, SHARED, need_shared, run_here, run_tool, template_path

OMZ = os.path.join(SHARED, "models", "omz")


def _ap(stdout):
    m = re.search(r"AP @ \[IoU=0\.50:0\.95\]\s+%\s+([0-9.]+)", stdout)
    assert m, stdout[-2000:]
    return float(m.group(1))


@pytest.fixture(scope="module")
def omz_0200_work_dir(tmp_path_factory):
    """A 0200 work dir with the OMZ 0200 IR's weights imported as snapshot.pth (as case 12 builds it)."""
    need_shared("models", "omz", "face-detection-0200")
    need_shared("data", "airport")
    work = tmp_path_factory.mktemp("wd0200omz")
    r = run_tool([os.path.join(REPO, "tools", "instantiate_template.py"), template_path(), str(work),
                  "--do-not-load-snapshot"])
    assert r.returncode == 0, r.stderr
    xml = os.path.join(OMZ, "face-detection-0200", "FP16", "face-detection-0200.xml")
    r = run_here([os.path.join(REPO, "tools", "import_openvino_weights.py"), "template.yaml", xml, "snapshot.pth",
                  "--calibrate-bn", os.path.join(AIRPORT_ROOT, "train")], cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    return work


@pytest.mark.slow
def test_detection_cache_follows_model_py(omz_0200_work_dir, tmp_path):
    """Case 12: the cache key covers the resolved model config (test_cfg, anchors): a changed model.py
    gives the AP of the new config, not the cached one; an unchanged one is still served from the cache."""
    work = tmp_path / "wd"
    shutil.copytree(omz_0200_work_dir, work)
    cache = str(tmp_path / "cache")
    ev = [os.path.join(work, "eval.py"), "--load-weights", "snapshot.pth", "--test-ann-files", AIRPORT_ANN,
          "--test-data-roots", AIRPORT_ROOT]

    def ap(*extra):
        r = run_here(ev + ["--cache-dir", cache, *extra], cwd=work)
        assert r.returncode == 0, r.stderr[-3000:]
        return _ap(r.stdout), "taken from the cache" in r.stderr

    assert ap() == (13.84, False)
    assert ap() == (13.84, True)  # the same model.py: served from the cache
    model_py = work / "model.py"
    original = model_py.read_text()
    # the case's test_cfg change (merged onto the base's test_cfg, as mmcv merges a config's dicts)
    model_py.write_text(original + "\nmodel['test_cfg'] = dict(nms=dict(type='nms', iou_threshold=0.3), "
                                   "max_per_img=5)\n")
    assert ap() == (13.61, False)
    model_py.write_text(original)
    assert ap() == (13.84, True)
    cluster = [os.path.join(REPO, "tools", "cluster_anchors.py"), "model.py", "--train-ann-files", AIRPORT_ANN,
               "--write"]
    r = run_here(cluster, cwd=work)
    if r.returncode != 0 and "--force" in r.stderr:  # the tool keeps the template's anchors unless forced
        r = run_here(cluster + ["--force"], cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    assert model_py.read_text() != original
    assert ap() == (0.0, False)


def _metrics(path):
    import yaml
    with open(path, encoding="utf-8") as f:
        return {e["key"]: e["value"] for e in yaml.safe_load(f)["metrics"]}


def _eval(work, weights, tmp_path, name):
    out = tmp_path / f"{name}.yaml"
    r = run_here([os.path.join(work, "eval.py"), "--load-weights", str(weights), "--test-ann-files", AIRPORT_ANN,
                  "--test-data-roots", AIRPORT_ROOT, "--cache-dir", "", "--save-metrics-to", str(out)], cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    return r, _metrics(out)


@pytest.fixture(scope="module")
def work_dirs(work_dir_0200, tmp_path_factory):
    out = {"face-detection-0200": str(work_dir_0200)}
    for name in ("face-detection-0207",):
        work = tmp_path_factory.mktemp(name)
        r = run_tool([os.path.join(REPO, "tools", "instantiate_template.py"), template_path(name), str(work),
                      "--do-not-load-snapshot"])
        assert r.returncode == 0, r.stderr
        out[name] = str(work)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("work_name, omz_name, own", [
    ("face-detection-0207", "face-detection-0200", False),  # other architecture
    ("face-detection-0200", "face-detection-0204", False),  # same convolutions, other input size (448)
    ("face-detection-0200", "face-detection-0200", True),   # the template's own published IR
])
def test_ir_without_export_info_is_reported_as_what_it_is(work_dirs, tmp_path, work_name, omz_name, own):
    """Issue 15.6/15.8: an IR without export_info.yaml gets its size and complexity counted from its own
    graph; the reference figures are the template's only when its graph is the template model's; eval
    and the demo say which."""
    need_shared("models", "omz", omz_name)
    need_shared("data", "airport")
    work = work_dirs[work_name]
    xml = os.path.join(OMZ, omz_name, "FP16", omz_name + ".xml")
    r, m = _eval(work, xml, tmp_path, "omz")
    counted = {"face-detection-0200": (1.82, 0.80), "face-detection-0204": (1.82, 2.46)}[omz_name]
    assert (m["size"], m["complexity"]) == counted  # the IR's own graph, not the work dir's template
    table = r.stdout[r.stdout.index("Metric"):]
    size_row = next(line for line in table.splitlines() if line.startswith("Size"))
    if own:
        assert m["reference_template"] == work_name and "1.830" in size_row
        assert "not shown to be" not in r.stderr
    else:
        assert m["reference_template"] is None
        assert size_row.split()[-2:] == ["-", "-"], size_row  # no reference, no difference
        assert f"NOT {work_name}'s model" in r.stdout and f"NOT {work_name}'s model" in m["evaluated"]
        assert f"not shown to be {work_name}'s model" in r.stderr
    # the demo (visualize.py) says the same in one line
    out = tmp_path / "demo"
    r = run_here([os.path.join(work, "visualize.py"), "--load-weights", xml, "--video",
                  os.path.join(AIRPORT_ROOT, "train"), "--output", str(out)], cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    assert ("not shown to be" in r.stderr) == (not own), r.stderr[-2000:]


@pytest.mark.slow
def test_pruned_snapshot_and_its_irs_report_their_own_size(work_dirs, tmp_path):
    """Issue 15.8: a pruned checkpoint, its IR (export_info.yaml records the exported model's figures)
    and the same IR without export_info.yaml (counted from the graph) all report the pruned model's size
    and complexity, not the template's 1.83 Mp."""
    import json

    import yaml
    from conftest import copy_airport_subset, imported_snapshot
    work = work_dirs["face-detection-0200"]
    snapshot, _ = imported_snapshot()
    ann, _ = copy_airport_subset(str(tmp_path / "data"), n=2)
    with open(os.path.join(work, "compression_config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    cfg["nncf_pruning"]["nncf_config"]["compression"][0]["params"].update(pruning_init=0.3, pruning_target=0.3,
                                                                           pruning_steps=1)
    config = tmp_path / "compression_config.json"
    config.write_text(json.dumps(cfg))
    out = tmp_path / "pruned"
    r = run_here([os.path.join(work, "compress.py"), "--train-ann-files", ann, "--train-data-roots",
                  str(tmp_path / "data"), "--save-checkpoints-to", str(out), "--batch-size", "2", "--workers", "0",
                  "--input-size", "128", "--nncf-pruning", "--load-weights", snapshot, "--epochs", "1",
                  "--compression-config", str(config)], cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    _, pth = _eval(work, out / "latest.pth", tmp_path, "pth")
    assert pth["size"] < 1.7, pth  # pruned: smaller than the template's 1.83 Mp
    r = run_here([os.path.join(work, "export.py"), "--load-weights", str(out / "latest.pth"), "--save-model-to",
                  str(tmp_path / "ir")], cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    info = yaml.safe_load((tmp_path / "ir" / "export_info.yaml").read_text())
    assert info["version"] == 2 and info["complexity"]["input_size"] == [128, 128]
    _, ir = _eval(work, tmp_path / "ir" / "model.xml", tmp_path, "ir")
    assert (ir["size"], ir["complexity"]) == (pth["size"], pth["complexity"])
    assert ir["reference_template"] == "face-detection-0200"
    # the same IR without export_info.yaml: counted from its graph (BatchNorm folded), and not the template's
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("model.xml", "model.bin"):
        shutil.copyfile(tmp_path / "ir" / name, bare / name)
    _, m = _eval(work, bare / "model.xml", tmp_path, "bare")
    assert abs(m["size"] - pth["size"]) <= 0.03 and abs(m["complexity"] - pth["complexity"]) <= 0.01, (m, pth)
    assert m["reference_template"] is None


# --- issue 16.2: typed artefacts ------------------------------------------------------------------------

def test_export_info_reads_old_files_and_refuses_newer_ones(tmp_path):
    import yaml

    from ote_detection.artefacts.formats import ExportInfo, read_export_info, write_export_info
    from ote_detection.utils.errors import OteError
    path = tmp_path / "export_info.yaml"
    # version 1 (no 'version', no 'complexity'), as export.py wrote it before
    old = {"template": "face-detection-0200", "precision": "FP32", "files": ["model.xml", "model.bin"],
           "sha256": {"model.xml": "ab"}, "input": {"input_size": [256, 256], "keep_ratio": True},
           "classes": ["face"], "head_family": "ssd", "output": {"contract": "ssd"}, "future_key": 1}
    path.write_text(yaml.safe_dump(old))
    info = read_export_info(str(path))
    assert info.version == 1 and info.template == "face-detection-0200" and info.complexity is None
    assert tuple(info.input_size) == (256, 256) and info.keep_ratio and info.extra == {"future_key": 1}
    write_export_info(str(tmp_path), info)  # rewritten as the current version, nothing lost
    again = read_export_info(str(path))
    assert again.version == 2 and again.to_dict() == dict(info.to_dict())
    assert yaml.safe_load(path.read_text())["future_key"] == 1
    for bad, words in (({"version": 99}, "newer ote-face"), ({"sha256": "x"}, "'sha256' is str"),
                       ({"version": "two"}, "positive integer"), (["a list"], "no mapping")):
        path.write_text(yaml.safe_dump(bad))
        with pytest.raises(OteError, match=words) as exc:
            read_export_info(str(path))
        assert str(path) in str(exc.value) and "\n" not in str(exc.value)
    assert ExportInfo().to_dict()["version"] == 2


def test_checkpoint_meta_one_reader_one_writer(tmp_path):
    import torch

    from ote_detection.apis.task import Task
    from ote_detection.artefacts.checkpoint import load_checkpoint_file, save_checkpoint
    from ote_detection.artefacts.formats import CheckpointMeta
    from ote_detection.artefacts.input_size import InputSize
    from ote_detection.utils.errors import OteError
    task = Task(template_path())
    meta = task.checkpoint_meta()
    assert meta.input_size == InputSize(256, 256) and meta.template == "face-detection-0200"
    path = str(tmp_path / "a.pth")
    save_checkpoint(path, torch.nn.Conv2d(1, 1, 1), meta=meta.replace(epoch=3))
    stored = load_checkpoint_file(path)["meta"]
    assert stored == {"version": 3, "template": "face-detection-0200", "input_size": [256, 256],
                      "keep_ratio": False, "classes": ["face"], "epoch": 3}
    # a meta of the first layout (no version; tuple sizes; keys of other tools) still loads
    old = {"meta": {"template": "face-detection-0200", "input_size": (96, 96), "epoch": 2, "mmdet_version": "2.x"},
           "state_dict": {"w": torch.zeros(1)}}
    torch.save(old, str(tmp_path / "old.pth"))
    meta = CheckpointMeta.of(load_checkpoint_file(str(tmp_path / "old.pth")), "old.pth")
    assert meta.version == 1 and meta.input_size == (96, 96) and meta.epoch == 2
    assert meta.extra == {"mmdet_version": "2.x"}
    for bad, words in (({"version": 4}, "newer ote-face"), ({"keep_ratio": "yes"}, "'keep_ratio' is str"), ({"input_size": "big"}, "input_size"),
                       ({"epoch": "two"}, "'epoch' is str")):
        torch.save({"meta": bad, "state_dict": {"w": torch.zeros(1)}}, str(tmp_path / "bad.pth"))
        with pytest.raises(OteError, match=words) as exc:
            load_checkpoint_file(str(tmp_path / "bad.pth"))
        assert "bad.pth" in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.slow
def test_resume_at_another_input_size_says_so(work_dir_0200, synthetic_data, tmp_path):
    from ote_detection.artefacts.checkpoint import load_checkpoint_file
    ann, root = synthetic_data
    out = tmp_path / "out"
    base = [os.path.join(work_dir_0200, "train.py"), "--train-ann-files", ann, "--train-data-roots", root,
            "--save-checkpoints-to", str(out), "--batch-size", "4", "--workers", "0"]
    r = run_here(base + ["--input-size", "96", "--epochs", "1"])
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_here(base + ["--input-size", "128", "--epochs", "2", "--resume-from", str(out / "latest.pth")])
    assert r.returncode == 0, r.stderr[-3000:]
    said = [line for line in r.stderr.splitlines() if "was trained at 96x96" in line]
    assert len(said) == 1 and "--input-size 128x128" in said[0], r.stderr[-2000:]
    assert load_checkpoint_file(str(out / "latest.pth"))["meta"]["input_size"] == [128, 128]
    # without --input-size the resumed run keeps the checkpoint's size, without a warning
    r = run_here(base + ["--epochs", "3", "--resume-from", str(out / "latest.pth")])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "was trained at" not in r.stderr
    assert load_checkpoint_file(str(out / "latest.pth"))["meta"]["input_size"] == [128, 128]


# --- issue 25.1: one IR check, one checksum comparison ------------------------------------------------------

def test_one_ir_check_decides_for_every_reader(tmp_path):
    """``artefacts.formats.is_ir`` is the only place that tells an IR from a snapshot: the names it calls IRs
    are the ones the OpenVINO reader takes, the detection cache keys by both files, and export / the size
    sweep refuse (one line, before any model is loaded)."""
    import pathlib

    from ote_detection.apis.choose_input_size import choose_input_size
    from ote_detection.apis.export import export
    from ote_detection.inference.detection_cache import DetectionCache
    from ote_detection.inference.openvino_predictor import find_ir_pair
    from ote_detection.artefacts.formats import is_ir
    from ote_detection.utils.errors import OteError
    irs = ["model.xml", "a/b/MODEL.BIN", pathlib.Path("x/model.Xml"), "snap.pth.bin"]
    others = ["snapshot.pth", "model.xml.pth", "a.xml/snapshot.pth", "model", "model.onnx", None, ""]
    assert all(is_ir(p) for p in irs) and not any(is_ir(p) for p in others)
    (tmp_path / "model.xml").write_text("<net/>")
    (tmp_path / "model.bin").write_bytes(b"\0" * 8)
    (tmp_path / "snapshot.pth").write_bytes(b"\1" * 8)
    xml, binf, pth = (str(tmp_path / n) for n in ("model.xml", "model.bin", "snapshot.pth"))
    assert find_ir_pair(xml) == find_ir_pair(binf) == (xml, binf)
    with pytest.raises(OteError, match="given as its .xml or .bin file"):
        find_ir_pair(pth)
    cache = DetectionCache(str(tmp_path / "cache"), "t")
    key = cache.key(xml, {}, [])
    assert key == cache.key(binf, {}, []) != cache.key(pth, {}, [])
    (tmp_path / "model.bin").write_bytes(b"\0" * 9)  # the key covers the .bin when given the .xml
    assert cache.key(xml, {}, []) != key
    for call in (lambda: export(template_path(), binf, str(tmp_path / "out")),
                 lambda: choose_input_size(template_path(), xml, [], [], "320x")):
        with pytest.raises(OteError, match="IR") as exc:
            call()
        assert "\n" not in str(exc.value) and str(tmp_path) in str(exc.value)


def test_one_checksum_comparison_for_both_ir_readers(tmp_path):
    """``check_ir_checksum`` is the one comparison of export_info.yaml's ``sha256`` with an IR's files: the
    reader of the bytes (``read_ir_files``) and the check of a work dir's IR (``check_ir_belongs``) accept the
    same set, refuse the same mixed set with the same line, and pass a file with no recorded digest."""
    import types

    from ote_detection.artefacts.formats import (ExportInfo, check_ir_belongs, check_ir_checksum, ir_checksums,
                                               read_ir_files, write_export_info)
    from ote_detection.utils.errors import OteError
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "model.xml").write_text("<net/>")
    (folder / "model.bin").write_bytes(b"\0" * 64)
    write_export_info(str(folder), ExportInfo(template="t", classes=["face"],
                                              sha256=ir_checksums(str(folder), ["model.xml", "model.bin"])))
    xml = str(folder / "model.xml")
    task = types.SimpleNamespace(name="t", classes=["face"])
    assert read_ir_files(xml)[:2] == (b"<net/>", b"\0" * 64) and check_ir_belongs(xml, task).template == "t"
    (folder / "model.bin").write_bytes(b"\1" * 64)  # a model.bin of another export
    said = []
    for read in (lambda: read_ir_files(xml), lambda: check_ir_belongs(xml, task)):
        with pytest.raises(OteError, match="does not belong to this export") as exc:
            read()
        said.append(str(exc.value))
    assert said[0] == said[1] and said[0].startswith(str(folder / "model.bin") + ":") and "\n" not in said[0]
    assert read_ir_files(xml, verify=False)[1] == b"\1" * 64
    # the comparison itself: a digest is computed only when one is recorded
    asked = []
    info = ExportInfo(sha256={"model.xml": "ab"})
    check_ir_checksum(info, "x/model.bin", lambda p: asked.append(p))
    check_ir_checksum(info, "x/model.xml", lambda p: asked.append(p) or "ab")
    assert asked == ["x/model.xml"]
    with pytest.raises(OteError, match=r"^x/model.xml: does not belong"):
        check_ir_checksum(info, "x/model.xml", lambda p: "cd")
