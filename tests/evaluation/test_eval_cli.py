"""eval.py on real WIDER FACE val images with the official ground truth, PR curves, clear errors."""

import os

import pytest
import torch
import yaml

from conftest import SHARED, need_shared, run_here
from ote_detection.apis.task import Task
from ote_detection.artefacts.checkpoint import save_checkpoint


@pytest.mark.slow
def test_eval_wider_and_pr_curves(work_dir_0200, tmp_path):
    need_shared("data", "wider_val5")
    need_shared("data", "wider_val_gt")
    torch.manual_seed(0)
    task = Task(os.path.join(work_dir_0200, "template.yaml"))
    ckpt = tmp_path / "random.pth"
    save_checkpoint(str(ckpt), task.build_detector(), meta=task.checkpoint_meta())
    val5 = os.path.join(SHARED, "data", "wider_val5")
    metrics = tmp_path / "metrics.yaml"
    r = run_here([os.path.join(work_dir_0200, "eval.py"), "--load-weights", str(ckpt),
                  "--test-ann-files", os.path.join(val5, "annotations_coco.json"), "--test-data-roots", val5,
                  "--wider-dir", os.path.join(val5, "images"),
                  "--wider-gt-dir", os.path.join(SHARED, "data", "wider_val_gt"),
                  "--save-metrics-to", str(metrics), "--save-pr-curves", str(tmp_path / "pr"), "--cache-dir", ""])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "5 of 3226 val images" in r.stderr
    entries = {e["key"]: e["value"] for e in yaml.safe_load(metrics.read_text())["metrics"]}
    for key in ("ap", "ap_64x64", "widerface_e", "widerface_m", "widerface_h", "size", "complexity"):
        assert key in entries, key
    assert entries["wider_images"] == 5
    assert any(f.endswith(".png") for f in os.listdir(tmp_path / "pr"))

    # no ground truth where it was said to be: one clear line
    r = run_here([os.path.join(work_dir_0200, "eval.py"), "--load-weights", str(ckpt),
                  "--wider-dir", os.path.join(val5, "images"), "--wider-gt-dir", str(tmp_path), "--cache-dir", ""])
    assert r.returncode == 2 and "WIDER FACE ground truth" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_eval_runs_open_model_zoo_irs_unchanged(work_dir_0200, tmp_path):
    """eval.py takes the published OMZ IR (FP16 and FP16-INT8) like our own export; the trained OMZ
    model finds the airport faces (its AP here is 13.84 at FP16, see README)."""
    need_shared("models", "omz", "face-detection-0200")
    need_shared("data", "airport")
    results = {}
    for precision in ("FP16", "FP16-INT8"):
        xml = os.path.join(SHARED, "models", "omz", "face-detection-0200", precision, "face-detection-0200.xml")
        metrics = tmp_path / f"{precision}.yaml"
        r = run_here([os.path.join(work_dir_0200, "eval.py"), "--load-weights", xml,
                      "--test-ann-files", os.path.join(SHARED, "data", "airport", "annotation_faces_train.json"),
                      "--test-data-roots", os.path.join(SHARED, "data", "airport"),
                      "--save-metrics-to", str(metrics), "--cache-dir", ""])
        assert r.returncode == 0, r.stderr[-3000:]
        results[precision] = {e["key"]: e["value"] for e in yaml.safe_load(metrics.read_text())["metrics"]}["ap"]
    assert abs(results["FP16"] - 13.84) < 0.05, results
    assert abs(results["FP16-INT8"] - results["FP16"]) < 3.0, results
