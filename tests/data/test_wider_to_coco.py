"""tools/wider_to_coco.py: official WIDER text annotation -> COCO json (real files, real CLI)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import conftest

REPO = Path(conftest.REPO)
TOOL = REPO / "tools" / "wider_to_coco.py"
DATA = REPO.parent / "shared" / "data"
VAL_TXT = DATA / "wider_val_gt" / "wider_face_val_bbx_gt.txt"
VAL5 = DATA / "wider_val5"
needs_shared = pytest.mark.skipif(
    not DATA.is_dir(), reason=f"shared data not found at {DATA} (../shared next to the repo)")


def run_tool(*args):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, timeout=120)


def error_line(proc):
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def write_jpg(path, width, height):
    import cv2
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((height, width, 3), 127, np.uint8))


@pytest.mark.slow
@needs_shared
def test_val5_images_match_shared_coco(tmp_path):
    out = tmp_path / "val5.json"
    proc = run_tool(VAL_TXT, VAL5 / "images", out, "--skip-missing")
    assert proc.returncode == 0, proc.stderr
    assert "missing images skipped: 3221" in proc.stderr
    coco = json.loads(out.read_text())
    with open(VAL5 / "annotations_coco.json") as f:
        ref = json.load(f)
    assert coco["categories"] == [{"id": 1, "name": "face", "supercategory": "face"}]
    by_name = {os.path.basename(im["file_name"]): im for im in coco["images"]}
    ref_by_name = {os.path.basename(im["file_name"]): im for im in ref["images"]}
    assert sorted(by_name) == sorted(ref_by_name)
    for name, im in by_name.items():
        rim = ref_by_name[name]
        assert (im["width"], im["height"]) == (rim["width"], rim["height"])
        assert im["file_name"] == name  # flat folder: relative to IMAGES_DIR
        assert im["wider_event"] == rim["wider_event"]
        got = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
        exp = [a for a in ref["annotations"] if a["image_id"] == rim["id"]]
        assert [a["bbox"] for a in got] == [a["bbox"] for a in exp]
        for key in ("area", "blur", "expression", "illumination", "invalid", "occlusion", "pose"):
            assert [a[key] for a in got] == [a[key] for a in exp], key
        assert all(a["iscrowd"] == 0 and a["category_id"] == 1 for a in got)
    assert len(coco["annotations"]) == 352
    ids = [a["id"] for a in coco["annotations"]]
    assert ids == list(range(1, 353))


@pytest.mark.slow
@needs_shared
def test_missing_image_is_one_line_error(tmp_path):
    line = error_line(run_tool(VAL_TXT, VAL5 / "images", tmp_path / "x.json"))
    assert "0--Parade/0_Parade_marchingband_1_465.jpg" in line and "--skip-missing" in line
    assert not (tmp_path / "x.json").exists()


@pytest.mark.slow
@needs_shared
def test_truncated_and_non_numeric_input(tmp_path):
    lines = VAL_TXT.read_text().splitlines()
    # the first image announces 126 boxes (lines 3..128): cut after line 50
    truncated = tmp_path / "truncated.txt"
    truncated.write_text("\n".join(lines[:50]) + "\n")
    line = error_line(run_tool(truncated, VAL5 / "images", tmp_path / "o.json"))
    assert line.startswith(f"error: {truncated}:51: unexpected end of file")
    assert "126" in line

    bad = list(lines[:200])
    bad[9] = "345 211 four 4 2 0 0 0 2 0"
    broken = tmp_path / "broken.txt"
    broken.write_text("\n".join(bad) + "\n")
    line = error_line(run_tool(broken, VAL5 / "images", tmp_path / "o.json"))
    assert line.startswith(f"error: {broken}:10: expected 10 numbers")

    bad = list(lines[:200])
    bad[1] = "many"
    broken.write_text("\n".join(bad) + "\n")
    line = error_line(run_tool(broken, VAL5 / "images", tmp_path / "o.json"))
    assert line.startswith(f"error: {broken}:2: expected the number of boxes")


@pytest.mark.slow
def test_zero_face_images_negative_and_invalid_boxes(tmp_path):
    images = tmp_path / "WIDER_val" / "images"
    write_jpg(images / "1--Ev" / "1_a.jpg", 64, 48)
    write_jpg(images / "1--Ev" / "1_b.jpg", 32, 40)
    write_jpg(images / "2--Ev" / "2_c.jpg", 50, 50)
    txt = tmp_path / "gt.txt"
    txt.write_text(
        "1--Ev/1_a.jpg\n3\n"
        "1 2 10 12 0 0 0 0 0 0 \n"      # normal
        "5 5 0 3 2 0 0 0 1 0 \n"        # zero width: kept (as OTE), area 0
        "20 20 -2 7 2 0 0 0 2 0 \n"     # negative width: dropped (as OTE)
        "1--Ev/1_b.jpg\n0\n0 0 0 0 0 0 0 0 0 0 \n"   # no face: one placeholder line
        "2--Ev/2_c.jpg\n1\n3 4 20 20 1 1 1 1 1 1 \n")  # invalid: kept unless --drop-invalid
    out = tmp_path / "o.json"
    proc = run_tool(txt, images, out)
    assert proc.returncode == 0, proc.stderr
    assert "negative-size boxes dropped: 1" in proc.stderr
    coco = json.loads(out.read_text())
    assert [(im["id"], im["file_name"], im["width"], im["height"]) for im in coco["images"]] == [
        (1, "1--Ev/1_a.jpg", 64, 48), (2, "1--Ev/1_b.jpg", 32, 40), (3, "2--Ev/2_c.jpg", 50, 50)]
    assert [(a["image_id"], a["bbox"], a["area"]) for a in coco["annotations"]] == [
        (1, [1, 2, 10, 12], 120), (1, [5, 5, 0, 3], 0), (3, [3, 4, 20, 20], 400)]
    assert coco["annotations"][2]["invalid"] == 1 and coco["annotations"][1]["occlusion"] == 1

    proc = run_tool(txt, images, out, "--drop-invalid", "--relative-to", tmp_path)
    assert proc.returncode == 0, proc.stderr
    coco = json.loads(out.read_text())
    assert len(coco["annotations"]) == 2
    assert coco["images"][0]["file_name"] == "WIDER_val/images/1--Ev/1_a.jpg"


@pytest.mark.slow
def test_help_describes_flags():
    proc = run_tool("--help")
    assert proc.returncode == 0
    for flag in ("--skip-missing", "--drop-invalid", "--relative-to", "IMAGES_DIR", "OUT.json"):
        assert flag in proc.stdout
