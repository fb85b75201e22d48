"""IRs saved with dynamic input dimensions ([1, 3, ?, ?], [?, 3, 256, 256], or a batch of 2), as a converter run
without a fixed shape writes them (../shared/cases/formats/07-dynamic-shape-ir.py): eval.py, visualize.py and
import_openvino_weights.py reshape them to a static [1, 3, H, W] (--input-size, else the template's) and say so.
The right AP is the static Open Model Zoo IR's on airport: 13.840."""

import os
import subprocess
import sys

import pytest
import yaml

from conftest import AIRPORT_ANN, AIRPORT_ROOT, REPO, SHARED, need_shared, run_here


@pytest.fixture(scope="module")
def dynamic_irs(tmp_path_factory):
    need_shared("models", "omz", "face-detection-0200")
    builder = need_shared("cases", "formats", "07-dynamic-shape-ir.py")
    out = tmp_path_factory.mktemp("dynamic_irs")
    env = dict(os.environ, SHARED=SHARED, PROJECT=REPO)
    r = subprocess.run([sys.executable, builder, str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.parametrize("name, shape, why", [
    ("dyn_hw", "[1, 3, ?, ?]", "(the template's input size 256x256"),
    ("dyn_batch", "[?, 3, 256, 256]", "(one image at a time)"),
    ("batch2", "[2, 3, 256, 256]", "(one image at a time)"),
])
def test_eval_reshapes_a_dynamic_ir_to_a_static_size(work_dir_0200, dynamic_irs, tmp_path, name, shape, why):
    need_shared("data", "airport")
    xml = dynamic_irs / f"{name}.xml"
    r = run_here([work_dir_0200 / "eval.py", "--load-weights", xml, "--test-ann-files", AIRPORT_ANN,
                  "--test-data-roots", AIRPORT_ROOT, "--cache-dir", "", "--save-metrics-to", tmp_path / "m.yaml"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"{xml}: input {shape} is not a static [1, 3, H, W]: reshaped to [1, 3, 256, 256] {why}" in r.stderr
    metrics = {m["key"]: m["value"] for m in yaml.safe_load(open(tmp_path / "m.yaml"))["metrics"]}
    assert abs(metrics["ap"] - 13.840) < 0.0005, metrics["ap"]


def test_visualize_runs_a_dynamic_ir_at_the_input_size_given(work_dir_0200, dynamic_irs, tmp_path):
    need_shared("data", "airport")
    xml = dynamic_irs / "dyn_hw.xml"
    r = run_here([work_dir_0200 / "visualize.py", "--load-weights", xml, "--video", os.path.join(AIRPORT_ROOT, "train"),
                  "--input-size", "320x", "--output", tmp_path / "out", "--max-frames", "1", "--precision", "f32"])
    assert r.returncode == 0, r.stderr[-2000:]
    said = r.stdout + r.stderr
    assert f"{xml}: input [1, 3, ?, ?] is not a static [1, 3, H, W]: reshaped to [1, 3, 192, 320] " \
           f"(--input-size 320x192)" in said
    assert "input 320x192 letterboxed" in said and len(os.listdir(tmp_path / "out")) == 1
    # a static IR keeps its size: --input-size is refused in one line
    static = os.path.join(SHARED, "models", "omz", "face-detection-0200", "FP16", "face-detection-0200.xml")
    r = run_here([work_dir_0200 / "visualize.py", "--load-weights", static, "--video",
                  os.path.join(AIRPORT_ROOT, "train"), "--input-size", "320x", "--output", tmp_path / "out2"])
    assert r.returncode == 2 and "--input-size is for snapshots and IRs with a dynamic input" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_import_weights_reads_a_dynamic_ir(dynamic_irs, tmp_path):
    from conftest import template_path
    r = run_here([os.path.join(REPO, "tools", "import_openvino_weights.py"), template_path(),
                  dynamic_irs / "dyn_hw.xml", tmp_path / "s.pth"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "reshaped to [1, 3, 256, 256]" in r.stderr and (tmp_path / "s.pth").is_file()
