"""Import of Open Model Zoo IR weights: the imported PyTorch model detects what the OMZ IR detects."""

import os
import shutil

import numpy as np
import pytest
import torch

from conftest import REPO, SHARED, imported_snapshot, omz_ir, real_images, run_here, template_path
from ote_detection.apis.task import Task
from ote_detection.artefacts.checkpoint import load_checkpoint_file, load_weights
from ote_detection.inference.predictor import TorchPredictor, detect_images
from ote_detection.apis.import_weights import import_openvino_weights
from ote_detection.inference.openvino_predictor import OpenVINOPredictor, match_detections
from ote_detection.utils.errors import OteError

OMZ = os.path.join(SHARED, "models", "omz")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _stack(dets):
    return np.concatenate([dets, np.zeros((len(dets), 1), np.float32)], axis=1)


def test_import_0200_loads_with_no_missing_keys():
    path, report = imported_snapshot()
    ckpt = load_checkpoint_file(path)
    meta = ckpt["meta"]
    assert meta["template"] == "face-detection-0200"
    assert meta["input_size"] == [256, 256] and meta["classes"] == ["face"]
    assert meta["epoch"] == 70  # the template's schedule: --resume-from continues after it, as with OTE's snapshot
    assert meta["source"]["openvino_ir"].endswith("face-detection-0200.xml") and not meta["source"]["int8_dequantised"]
    task = Task(template_path())
    load_weights(task.build_detector(), path, expected_template=task.name)  # strict: raises on any mismatch
    assert torch.count_nonzero(ckpt["state_dict"]["bbox_head.loss_weights"]) == 0
    assert report["convolutions"] == 60
    # head outputs (DetectionOutput inputs) of the IR, f32 hint, and of our model on a test image
    assert report["max_abs_diff_scores"] < 1e-4 and report["max_abs_diff_deltas"] < 1e-3, report


def test_imported_0200_detects_what_the_omz_ir_detects():
    path, _ = imported_snapshot()
    task = Task(template_path())
    paths = real_images()
    ours = detect_images(TorchPredictor(task.build_inference_model(path), task.input_size), paths, batch_size=1,
                         progress=False)
    theirs = detect_images(OpenVINOPredictor(omz_ir(), precision="f32"), paths, batch_size=1,
                           progress=False)
    confident = 0
    for key in ours:
        a, b = _stack(ours[key]), _stack(theirs[key])
        # OMZ's DetectionOutput does not clip boxes before NMS, ours (mmdetection's decode) does: border boxes
        # of low score can be suppressed differently. From score 0.1 up the detections are the same.
        s = match_detections(a, b, min_score=0.1)
        assert not s["unmatched_a"] and not s["unmatched_b"], (paths[key], s)
        assert s["min_iou"] > 0.98 and s["max_score_diff"] < 0.01, (paths[key], s)
        confident += s["matched"]
        full = match_detections(a, b)
        assert full["matched"] >= 0.95 * max(full["n_a"], full["n_b"]), (paths[key], full)
    assert confident >= 10


def test_imported_0200_matches_omz_ir_with_clip_before_nms_exactly(tmp_path):
    """With the OMZ IR's DetectionOutput switched to clip_before_nms, every detection matches (all scores)."""
    import openvino as ov
    core = ov.Core()
    model = core.read_model(omz_ir())
    det = next(op for op in model.get_ordered_ops() if op.get_type_name() == "DetectionOutput")
    attrs = dict(det.get_attributes(), clip_before_nms=True)
    new = ov.opset8.detection_output(det.input_value(0), det.input_value(1), det.input_value(2), attrs)
    clipped = ov.Model([ov.opset8.result(new)], model.get_parameters(), "omz-clipped")
    ov.save_model(clipped, str(tmp_path / "omz_clip.xml"), compress_to_fp16=False)
    path, _ = imported_snapshot()
    task = Task(template_path())
    paths = real_images(2, 1)
    ours = detect_images(TorchPredictor(task.build_inference_model(path), task.input_size), paths, batch_size=1,
                         progress=False)
    theirs = detect_images(OpenVINOPredictor(str(tmp_path / "omz_clip.xml")), paths, batch_size=1,
                           progress=False)
    for key in ours:
        s = match_detections(_stack(ours[key]), _stack(theirs[key]))
        assert s["matched"] == s["n_a"] == s["n_b"] > 0, s
        assert s["min_iou"] > 0.999 and s["max_score_diff"] < 1e-4, s


@pytest.mark.slow
def test_import_cli_rejects_ir_of_another_input_size(tmp_path):
    out = tmp_path / "x.pth"
    r = run_here([os.path.join(REPO, "tools", "import_openvino_weights.py"), template_path("face-detection-0200"),
                  omz_ir("face-detection-0204"), str(out)])
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "IR input is 448x448" in last and "256x256" in last, r.stderr
    assert not out.exists() and os.listdir(tmp_path) == []


def test_import_rejects_truncated_bin_and_missing_bin(tmp_path):
    src = omz_ir()
    xml = tmp_path / "m.xml"
    shutil.copyfile(src, xml)
    with pytest.raises(OteError, match="no m.bin beside it"):
        import_openvino_weights(template_path(), str(xml), str(tmp_path / "o.pth"))
    with open(src[:-4] + ".bin", "rb") as f:
        (tmp_path / "m.bin").write_bytes(f.read()[: 100000])
    with pytest.raises(OteError, match="m.bin: weights file is truncated"):
        import_openvino_weights(template_path(), str(xml), str(tmp_path / "o.pth"))
    assert not (tmp_path / "o.pth").exists()


def test_import_rejects_ir_that_does_not_map(tmp_path):
    """0204's IR into a template of the same input size but another backbone (0207, ShuffleNetV2)."""
    out = tmp_path / "o.pth"
    with pytest.raises(OteError, match="does not map onto|convolutions, this template's|priors"):
        import_openvino_weights(template_path("face-detection-0207"), omz_ir("face-detection-0204"), str(out))
    assert not out.exists()


def test_import_int8_ir_dequantises_weights(tmp_path):
    out = tmp_path / "int8.pth"
    report = import_openvino_weights(template_path(), omz_ir(precision="FP16-INT8"), str(out), verify=False)
    assert report["int8"] and out.exists()
    meta = load_checkpoint_file(str(out))["meta"]
    assert meta["source"]["int8_dequantised"] is True


def test_batchnorm_calibration_keeps_eval_output_and_matches_train_mode(tmp_path):
    """With --calibrate-bn the BatchNorms carry the images' statistics: eval mode still computes the IR's
    function, and train mode (batch statistics, as in fine-tuning) computes the same on those images."""
    from ote_detection.data.transforms import read_image, resize_image
    paths = real_images(2, 0)
    out = tmp_path / "cal.pth"
    report = import_openvino_weights(template_path(), omz_ir(), str(out), calibration_images=",".join(paths))
    assert report["batchnorm_calibration_images"] == 2
    ckpt = load_checkpoint_file(str(out))
    assert ckpt["meta"]["source"]["batchnorm"] == "calibrated"
    assert ckpt["meta"]["source"]["verify_max_abs_diff"]["max_abs_diff_scores"] < 1e-4
    task = Task(template_path())
    plain = task.build_inference_model(imported_snapshot()[0])
    model = task.build_inference_model(str(out))
    batch = torch.stack([torch.from_numpy(resize_image(read_image(p), task.input_size)).permute(2, 0, 1).float()
                         for p in paths])

    def scores(m):
        with torch.no_grad():
            logits, deltas = m.detector.bbox_head.flatten_outputs(*m(batch))
        return logits.softmax(-1), deltas

    s_plain, d_plain = scores(plain)
    s_eval, d_eval = scores(model)
    assert (s_eval - s_plain).abs().max() < 1e-4 and (d_eval - d_plain).abs().max() < 1e-3
    model.train()
    s_train, d_train = scores(model)
    assert (s_train - s_plain).abs().max() < 1e-3 and (d_train - d_plain).abs().max() < 1e-2
    plain.train()
    s_identity, _ = scores(plain)  # identity BatchNorms in train mode: a different function
    assert (s_identity - s_plain).abs().max() > 0.1


def test_background_first_ir_classes_are_moved_last_per_anchor():
    """An IR whose DetectionOutput has background_label_id 0 (OMZ's face detectors have it last, so the
    imports above never take this step): each anchor's [background, c1 .. cn] rows of the last class
    convolution become [c1 .. cn, background], weights and biases alike; other convolutions stay."""
    import types

    from ote_detection.omz_import.importer import move_background_last
    anchors, classes = 3, 2
    rows = anchors * (classes + 1)
    last = types.SimpleNamespace(weight=np.arange(rows, dtype=np.float64).reshape(rows, 1, 1, 1),
                                 bias=np.arange(rows, dtype=np.float64) + 100)
    first = types.SimpleNamespace(weight=np.zeros((4, 1, 1, 1)), bias=np.arange(4.0))
    move_background_last([[first, last]], classes)
    assert last.weight.ravel().tolist() == [1, 2, 0, 4, 5, 3, 7, 8, 6]
    assert last.bias.tolist() == [101, 102, 100, 104, 105, 103, 107, 108, 106]
    assert first.bias.tolist() == [0, 1, 2, 3]
