"""INT8 that keeps its detections (export.py --int8, compress.py --ptq) and what it is given to calibrate on.

* The accuracy check also watches the recall at the operating score (the IR's confidence_threshold, 0.5):
  calibration on images without faces squeezes the INT8 scores below it, so the demo and Model API find
  few faces though the AP may pass. Before/after AP and recall are printed; a collapse is refused
  (nothing written) or, with --allow-recall-drop, warned. Case: the imported 0200 at --input-size 320x,
  calibrated on 6 generated non-face images, --max-drop 1000, validated on the 10 airport frames: AP
  13.22 (FP32 IR) -> under 5, recall at 0.5 36.6 % -> 0 %.
* --max-drop 0: NNCF's accuracy search shows a progress bar and an estimate.
* Calibration folders: a symlink loop (self -> .) gives each real file once; an empty or missing folder
  is refused before the FP32 export.
"""

import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import yaml

from conftest import AIRPORT_ANN, AIRPORT_ROOT, copy_airport_subset, need_shared, run_here
from conftest import imported_snapshot

os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "0")


def non_face_images(folder, n=6, size=(640, 360)):
    """``n`` images without faces: noise, colour ramps and checkerboards."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    w, h = size
    for i in range(n):
        if i % 3 == 0:
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        elif i % 3 == 1:
            img = np.broadcast_to(np.linspace(0, 255, w)[None, :, None], (h, w, 3)).astype(np.uint8).copy()
            img[:, :, i % 3] = 255 - img[:, :, i % 3]
        else:
            yy, xx = np.mgrid[:h, :w]
            img = (((yy // 40 + xx // 40) % 2) * 255).astype(np.uint8)[..., None].repeat(3, 2)
        cv2.imwrite(os.path.join(folder, f"img{i}.png"), img)
    return str(folder)


def _export(work_dir, out, *flags):
    snap, _ = imported_snapshot()
    return run_here([work_dir / "export.py", "--load-weights", snap, "--save-model-to", out, *flags], cwd=work_dir)


@pytest.mark.slow
def test_export_int8_refuses_a_recall_collapse_and_prints_ap_and_recall(work_dir_0200, tmp_path, one_torch_thread):
    need_shared("data", "airport")
    calib = non_face_images(tmp_path / "nonface")
    flags = ["--input-size", "320x", "--int8", "--calibration-images", calib, "--val-ann-files", AIRPORT_ANN,
             "--val-data-roots", AIRPORT_ROOT, "--max-drop", "1000"]
    r = _export(work_dir_0200, tmp_path / "int8", *flags)
    assert r.returncode == 2, r.stderr[-3000:]
    lines = r.stderr.replace("\r", "\n").splitlines()
    summary = [ln for ln in lines if ln.startswith("INT8 on 10 validation image(s): AP 13.22 -> ")]
    assert summary and "recall at score 0.5 36.6% -> " in summary[0], r.stderr[-3000:]
    error = lines[-1]
    assert error.startswith("error: INT8's AP 13.22 -> ") and "(the IR's confidence_threshold) falls 36.6% -> " in \
        error and "more than --max-recall-drop 10 points" in error and calib in error, error
    assert not (tmp_path / "int8").exists()
    # --allow-recall-drop: written, with one warning line; export_info.yaml records both figures
    r = _export(work_dir_0200, tmp_path / "int8", *flags, "--allow-recall-drop")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Written anyway (--allow-recall-drop)" in r.stderr
    q = yaml.safe_load((tmp_path / "int8" / "export_info.yaml").read_text())["int8"]
    assert abs(q["ap_fp32_ir"] - 13.22) < 0.005 and q["ap_int8_ir"] < 5, q
    assert abs(q["recall_fp32_ir"] - 36.6) < 0.05 and q["recall_int8_ir"] < 5 and q["operating_score"] == 0.5, q


@pytest.mark.slow
def test_compress_ptq_prints_ap_and_recall_and_checks_recall(work_dir_0200, tmp_path, one_torch_thread):
    """compress.py --ptq calibrates on the training set: calibrated on its faces the recall holds."""
    ann, _ = copy_airport_subset(str(tmp_path / "data"), n=2)
    root = str(tmp_path / "data")
    snap, _ = imported_snapshot()
    out = tmp_path / "ptq"
    r = run_here([work_dir_0200 / "compress.py", "--train-ann-files", ann, "--train-data-roots", root,
                  "--val-ann-files", ann, "--val-data-roots", root, "--save-checkpoints-to", out, "--load-weights",
                  snap, "--nncf-quantization", "--ptq", "--max-drop", "5", "--max-recall-drop", "0"],
                 cwd=work_dir_0200)
    info_line = [ln for ln in r.stderr.splitlines() if ln.startswith("INT8 on 2 validation image(s): AP ")]
    assert info_line and "recall at score 0.5 " in info_line[0], r.stderr[-3000:]
    if r.returncode == 0:  # recall kept exactly: written, with its figures
        info = yaml.safe_load((out / "ptq_info.yaml").read_text())
        assert info["recall_int8_ir"] >= info["recall_fp32_ir"], info
    else:  # any recall lost is refused at --max-recall-drop 0, nothing written
        assert r.returncode == 2 and "more than --max-recall-drop 0 points" in r.stderr.splitlines()[-1]
        assert not (out / "model.xml").exists()


@pytest.mark.slow
def test_max_drop_zero_shows_progress_with_an_estimate(work_dir_0200, tmp_path):
    """--max-drop 0 with non-face calibration: NNCF goes on to rank and revert layers (minutes); the bar and
    the estimate line come as soon as the ranking starts (the run is stopped there)."""
    ann, _ = copy_airport_subset(str(tmp_path / "data"), n=2)
    snap, _ = imported_snapshot()
    calib = non_face_images(tmp_path / "nonface")
    proc = subprocess.Popen([sys.executable, str(work_dir_0200 / "export.py"), "--load-weights", snap,
                             "--save-model-to", str(tmp_path / "int8"), "--input-size", "320x", "--int8",
                             "--calibration-images", calib, "--val-ann-files", ann, "--val-data-roots",
                             str(tmp_path / "data"), "--max-drop", "0"], stderr=subprocess.PIPE, text=True,
                            cwd=str(work_dir_0200), env=dict(os.environ, PYTHONUNBUFFERED="1"))
    seen, deadline = [], time.time() + 400
    try:
        for line in proc.stderr:
            seen.append(line)
            if "PTQ accuracy control: the INT8 drop exceeds 0 AP points" in line or time.time() > deadline:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    text = "".join(seen)
    assert "INT8 accuracy control:" in text and "validation" in text, text[-2000:]
    estimate = [ln for ln in text.splitlines() if "PTQ accuracy control: the INT8 drop exceeds 0 AP points" in ln]
    assert estimate and "ranking 60 layer groups" in estimate[0] and "more validations of" in estimate[0], text[-2000:]
    assert not (tmp_path / "int8").exists()


def test_calibration_folder_with_a_symlink_loop_lists_each_file_once(tmp_path):
    from ote_detection.compression.ptq import calibration_paths
    need_shared("data", "airport")
    folder = tmp_path / "calib"
    (folder / "sub").mkdir(parents=True)
    names = sorted(os.listdir(os.path.join(AIRPORT_ROOT, "train")))[:3]
    for name in names[:2]:
        (folder / name).write_bytes(open(os.path.join(AIRPORT_ROOT, "train", name), "rb").read())
    (folder / "sub" / names[2]).write_bytes(open(os.path.join(AIRPORT_ROOT, "train", names[2]), "rb").read())
    os.symlink(".", folder / "self")
    os.symlink(folder / names[0], folder / "sub" / "link.jpg")  # a second name of the same file
    assert len(calibration_paths(str(folder))) == 3


@pytest.mark.slow
def test_export_int8_calibrates_on_each_real_file_once(work_dir_0200, tmp_path, one_torch_thread):
    need_shared("data", "airport")
    folder = tmp_path / "calib"
    folder.mkdir()
    for name in sorted(os.listdir(os.path.join(AIRPORT_ROOT, "train")))[:3]:
        (folder / name).write_bytes(open(os.path.join(AIRPORT_ROOT, "train", name), "rb").read())
    os.symlink(".", folder / "self")
    r = _export(work_dir_0200, tmp_path / "int8", "--input-size", "128x", "--int8", "--calibration-images", folder)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"INT8 calibration images: 3 from {folder}" in r.stderr
    int8 = yaml.safe_load((tmp_path / "int8" / "export_info.yaml").read_text())["int8"]
    assert int8["calibration_images"] == 3
    assert int8["bias_correction"] == "full"  # few calibration images: NNCF's full bias correction


@pytest.mark.parametrize("what", ["empty", "missing"])
def test_export_int8_refuses_an_empty_or_missing_calibration_folder_before_any_work(work_dir_0200, tmp_path, what):
    folder = tmp_path / "calib"
    if what == "empty":
        folder.mkdir()
        (folder / "notes.txt").write_text("no images here")
    start = time.time()
    r = _export(work_dir_0200, tmp_path / "int8", "--int8", "--calibration-images", folder)
    assert r.returncode == 2, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(folder) in lines[0], r.stderr
    assert ("no image files for INT8 calibration" if what == "empty" else "calibration images not found") in lines[0]
    assert not (tmp_path / "int8").exists() and time.time() - start < 30  # the FP32 export was not started
