"""Export to OpenVINO IR (OMZ SSD format), the IR predictor, and their error handling."""

import importlib.util
import os
import warnings

import numpy as np
import pytest
import torch
import yaml

from conftest import AIRPORT_ANN, AIRPORT_ROOT, need_shared, template_path
from conftest import imported_snapshot, omz_ir, real_images
from ote_detection.apis.export import export
from ote_detection.apis.task import Task
from ote_detection.artefacts.checkpoint import save_checkpoint
from ote_detection.inference.predictor import TorchPredictor, detect_images
from ote_detection.inference.openvino_predictor import OpenVINOPredictor, match_detections
from ote_detection.models.heads import ExportFamily
from ote_detection.utils.errors import OteError, run_cli

SSD = ["face-detection-0200", "face-detection-0202", "face-detection-0204", "face-detection-0207"]
SMALL = (128, 96)  # (w, h): non-square, to catch any w/h swap


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_snapshot(name, path, input_size=SMALL, seed=0):
    """Seeded random weights with decisive class scores (cls logits scaled up), saved with meta input_size."""
    torch.manual_seed(seed)
    task = Task(template_path(name))
    detector = task.build_detector()
    with torch.no_grad():
        for module in detector.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 2.0)
        for conv in detector.bbox_head.cls_convs:
            last = [m for m in conv.modules() if isinstance(m, torch.nn.Conv2d)][-1]
            last.weight.mul_(8.0)
    save_checkpoint(str(path), detector, meta=dict(task.checkpoint_meta(), input_size=list(input_size)))
    return str(path)


def _with_label(dets):
    return np.concatenate([dets, np.zeros((len(dets), 1), np.float32)], axis=1)


@pytest.mark.slow
@pytest.mark.parametrize("name", SSD)
def test_export_each_ssd_template(name, tmp_path):
    snap = random_snapshot(name, tmp_path / "snap.pth")
    out = tmp_path / "export"
    xml = export(template_path(name), snap, str(out))
    assert sorted(os.listdir(out)) == ["export_info.yaml", "model.bin", "model.xml"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # temp folder moved, not left behind
    info = yaml.safe_load((out / "export_info.yaml").read_text())
    task = Task(template_path(name))
    assert info["template"] == name and info["precision"] == "FP32" and info["classes"] == ["face"]
    assert info["input"]["shape"] == [1, 3, SMALL[1], SMALL[0]] and info["input"]["color"] == "BGR"
    assert info["input"]["normalization_folded_in"]["std"] == [float(v) for v in task.img_norm_cfg["std"]]
    assert len(info["source_sha256"]) == 64
    import openvino as ov
    model = ov.Core().read_model(xml)
    assert model.inputs[0].get_any_name() == "image" and list(model.inputs[0].get_shape()) == [1, 3, SMALL[1], SMALL[0]]
    assert model.outputs[0].get_any_name() == "detection_out" and list(model.outputs[0].get_shape()) == [1, 1, 200, 7]
    assert model.outputs[0].get_element_type() == ov.Type.f32
    det = next(op for op in model.get_ordered_ops() if op.get_type_name() == "DetectionOutput")
    a = det.get_attributes()
    assert (a["background_label_id"], a["top_k"], list(a["keep_top_k"])) == (1, 200, [200])
    assert a["code_type"] == "caffe.PriorBoxParameter.CENTER_SIZE" and a["share_location"] and a["normalized"]
    assert abs(a["nms_threshold"] - 0.45) < 1e-6 and abs(a["confidence_threshold"] - 0.02) < 1e-6
    assert a["clip_before_nms"] and not a["clip_after_nms"] and not a["variance_encoded_in_target"]
    consts = [op for op in model.get_ordered_ops() if op.get_type_name() == "Constant"]
    assert all(op.get_element_type() != ov.Type.f16 for op in consts)  # FP32 weights, not compressed
    # the IR reproduces the PyTorch model on a real image, also at this small non-square size
    path = real_images(1, 0)
    ours = detect_images(TorchPredictor(task.build_inference_model(snap), SMALL), path, batch_size=1, progress=False)[0]
    ir = OpenVINOPredictor(xml, precision="f32")
    assert ir.input_size == SMALL
    theirs = detect_images(ir, path, batch_size=1, progress=False)[0]
    assert len(ours) > 0
    s = match_detections(_with_label(ours), _with_label(theirs))
    assert s["matched"] >= 0.98 * max(s["n_a"], s["n_b"]), s
    assert s["max_score_diff"] < 1e-4, s


@pytest.mark.slow
def test_parity_ir_vs_pytorch_on_real_images(tmp_path):
    """Imported OMZ weights (real detections): the exported IR (f32 hint) gives the PyTorch detections."""
    snap, _ = imported_snapshot()
    out = tmp_path / "export"
    with warnings.catch_warnings(record=True) as caught:  # torch.export + the dynamo ONNX exporter: no
        warnings.simplefilter("always")                    # deprecated TorchScript tracing, no FutureWarning
        xml = export(template_path(), snap, str(out), onnx=True)
    deprecated = [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))
                  and ("jit" in str(w.message) or "deprecat" in str(w.message).lower())]
    assert not deprecated, deprecated
    task = Task(template_path())
    paths = real_images(3, 2)
    torch_pred = TorchPredictor(task.build_inference_model(snap), task.input_size)
    ir_pred = OpenVINOPredictor(xml, precision="f32")
    omz_pred = OpenVINOPredictor(omz_ir(), precision="f32")
    ours = detect_images(torch_pred, paths, batch_size=1, progress=False)
    theirs = detect_images(ir_pred, paths, batch_size=1, progress=False)
    omz = detect_images(omz_pred, paths, batch_size=1, progress=False)
    total = 0
    for key in ours:
        a, b = ours[key], theirs[key]
        assert len(a) == len(b), (paths[key], len(a), len(b))
        # one-to-one: every box within 1e-3 of its size, every score within 1e-4
        s = match_detections(_with_label(a), _with_label(b))
        assert s["matched"] == len(a), (paths[key], s)
        assert s["max_score_diff"] < 1e-4, s
        assert s["max_box_rel_diff"] < 1e-3, s
        total += int((a[:, 4] > 0.5).sum())
        # and our IR detects what the OMZ IR detects (confident detections; see test_omz_import)
        o = match_detections(_with_label(b), _with_label(omz[key]), min_score=0.1)
        assert not o["unmatched_a"] and not o["unmatched_b"] and o["min_iou"] > 0.98 and o["max_score_diff"] < 0.01
    assert total >= 10
    # the ONNX model: the same head outputs as PyTorch when run by OpenVINO
    import onnx
    import openvino as ov
    onnx_model = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(onnx_model)
    assert [o.name for o in onnx_model.graph.output] == ["scores", "deltas"]
    img = np.random.default_rng(0).uniform(0, 255, (1, 3, 256, 256)).astype(np.float32)
    compiled = ov.Core().compile_model(str(out / "model.onnx"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    res = compiled(img)
    model = task.build_inference_model(snap)
    with torch.no_grad():
        logits, deltas = model.detector.bbox_head.flatten_outputs(*model(torch.from_numpy(img)))
        deltas = deltas.reshape(1, -1)
        logits = logits.reshape(1, -1, 2)
    assert np.abs(res[compiled.outputs[0]] - logits.softmax(-1).reshape(1, -1).numpy()).max() < 1e-4
    assert np.abs(res[compiled.outputs[1]] - deltas.numpy()).max() < 1e-3


def test_predictor_runs_omz_irs_unchanged():
    paths = real_images(1, 1)
    for precision in ("FP16", "FP16-INT8"):
        pred = OpenVINOPredictor(omz_ir(precision=precision), precision="f32", threads=1)
        assert pred.input_size == (256, 256)
        dets = detect_images(pred, paths, batch_size=1, progress=False)
        for d in dets.values():
            assert d.shape[1] == 5 and (d[:, 4] > 0.5).sum() >= 1
            assert (np.diff(d[:, 4]) <= 0).all()
    raw = OpenVINOPredictor(omz_ir(), precision="bf16")
    out = raw.predict_frames([np.zeros((300, 400, 3), np.uint8)])[0]
    assert out.shape[1] == 6 and (out[:, 5] == 0).all()  # OMZ face label 0 (background_label_id 1) stays 0


def _load_workdir_script(work_dir, name):
    spec = importlib.util.spec_from_file_location(f"wd_{name}", os.path.join(work_dir, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cli_error(main, argv, capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli(main, argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ")
    return err[-1]


def test_export_cli_bad_snapshots(work_dir_0200, tmp_path, capsys):
    export_main = _load_workdir_script(str(work_dir_0200), "export").main
    other = random_snapshot("face-detection-0204", tmp_path / "other.pth")
    out = tmp_path / "out"
    line = _cli_error(export_main, ["--load-weights", other, "--save-model-to", str(out)], capsys)
    assert "checkpoint of template 'face-detection-0204', not of 'face-detection-0200'" in line
    # weights of another model without a template name in meta: a shape mismatch
    bare = tmp_path / "bare.pth"
    torch.save({"state_dict": torch.load(random_snapshot("face-detection-0207", tmp_path / "s.pth"),
                                         weights_only=True)["state_dict"]}, bare)
    line = _cli_error(export_main, ["--load-weights", str(bare), "--save-model-to", str(out)], capsys)
    assert "weights do not fit this model" in line
    trunc = tmp_path / "trunc.pth"
    trunc.write_bytes(open(other, "rb").read()[:1000])
    line = _cli_error(export_main, ["--load-weights", str(trunc), "--save-model-to", str(out)], capsys)
    assert "not a PyTorch checkpoint (truncated or damaged)" in line
    assert not out.exists()
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []


@pytest.mark.slow
def test_export_into_existing_folder_keeps_other_files_and_replaces_ir(work_dir_0200, tmp_path):
    export_main = _load_workdir_script(str(work_dir_0200), "export").main
    snap = random_snapshot("face-detection-0200", tmp_path / "snap.pth")
    out = tmp_path / "export"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    (out / "model.xml").write_text("old")
    with pytest.raises(SystemExit) as exc:
        run_cli(export_main, ["--load-weights", snap, "--save-model-to", str(out)])
    assert exc.value.code == 0
    assert sorted(os.listdir(out)) == ["export_info.yaml", "model.bin", "model.xml", "notes.txt"]
    assert OpenVINOPredictor(str(out / "model.bin")).input_size == SMALL
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []


def test_ir_bad_files_one_line_errors(work_dir_0200, tmp_path, capsys):
    need_shared("data", "airport")
    src = omz_ir()
    xml_only = tmp_path / "a" / "model.xml"
    xml_only.parent.mkdir()
    xml_only.write_bytes(open(src, "rb").read())
    eval_main = _load_workdir_script(str(work_dir_0200), "eval").main
    common = ["--test-ann-files", AIRPORT_ANN, "--test-data-roots", AIRPORT_ROOT, "--cache-dir", ""]
    line = _cli_error(eval_main, ["--load-weights", str(xml_only), *common], capsys)
    assert "model.bin: not found" in line
    trunc = tmp_path / "b" / "model.xml"
    trunc.parent.mkdir()
    trunc.write_bytes(open(src, "rb").read())
    (trunc.parent / "model.bin").write_bytes(open(src[:-4] + ".bin", "rb").read()[:50000])
    line = _cli_error(eval_main, ["--load-weights", str(trunc.parent / "model.bin"), *common], capsys)
    assert "weights file is truncated" in line
    bad = tmp_path / "c" / "model.xml"
    bad.parent.mkdir()
    bad.write_bytes(open(src, "rb").read()[:3000])
    (bad.parent / "model.bin").write_bytes(open(src[:-4] + ".bin", "rb").read())
    line = _cli_error(eval_main, ["--load-weights", str(bad), *common], capsys)
    assert "not a readable OpenVINO IR" in line
    with pytest.raises(OteError, match="no such|not found"):
        OpenVINOPredictor(str(tmp_path / "nothing.xml"))


@pytest.mark.slow
def test_export_input_size_without_checkpoint_meta_is_the_templates(tmp_path):
    """(A snapshot's meta input_size is used when present: SMALL in the tests above.)"""
    snap = random_snapshot("face-detection-0200", tmp_path / "s.pth")
    ckpt = torch.load(snap, weights_only=True)
    del ckpt["meta"]["input_size"]
    torch.save(ckpt, snap)
    xml = export(template_path(), snap, str(tmp_path / "e"))
    assert OpenVINOPredictor(xml).input_size == Task(template_path()).input_size == (256, 256)


@pytest.mark.slow
def test_anchor_free_ir_has_omz_boxes_labels_outputs_and_pytorch_parity(tmp_path):
    """face-detection-0205 (FCOS): decode in the graph + MulticlassNms; outputs boxes [N, 5] and labels [N]
    as Open Model Zoo's 0205/0206 IRs; the IR (f32) gives the PyTorch model's detections box for box."""
    import openvino as ov
    from ote_detection.data.transforms import read_image
    name = "face-detection-0205"
    torch.manual_seed(0)
    task = Task(template_path(name))
    det = task.build_detector()
    with torch.no_grad():  # decisive class scores, so that NMS has many boxes to keep
        det.bbox_head.conv_cls.weight.mul_(30)
        det.bbox_head.conv_cls.bias.fill_(0.5)
    snap = str(tmp_path / "s.pth")
    save_checkpoint(snap, det, meta=dict(task.checkpoint_meta(), input_size=list(SMALL)))
    xml = export(template_path(name), snap, str(tmp_path / "e"))
    model = ov.Core().read_model(xml)
    assert [o.get_any_name() for o in model.outputs] == ["boxes", "labels"]
    assert model.outputs[0].get_partial_shape()[1].get_length() == 5
    info = yaml.safe_load(open(tmp_path / "e" / "export_info.yaml"))
    assert info["head_family"] == "nms" and info["output"]["names"] == ["boxes", "labels"]
    frames = [read_image(p) for p in real_images(2, 0)]
    torch_pred = TorchPredictor(task.load_snapshot(snap)[0], SMALL)
    ir_pred = OpenVINOPredictor(xml, precision="f32")
    assert ir_pred.contract == ExportFamily.NMS == info["head_family"]
    for a, b in zip(torch_pred.predict_frames(frames), ir_pred.predict_frames(frames)):
        assert len(a) > 50
        s = match_detections(a, b)
        assert s["matched"] == len(a) == len(b), s
        assert s["max_score_diff"] < 1e-4 and s["min_iou"] > 0.999, s
