"""The README's main job on the generated synthetic sample: instantiate, train, eval, export, eval the IR."""

import os

import pytest
import yaml

from conftest import REPO, run_tool


@pytest.mark.slow
def test_end_to_end_job_on_synthetic_sample(tmp_path):
    work = tmp_path / "e2e"
    r = run_tool([os.path.join(REPO, "tools", "run_end_to_end.py"), "--work-dir", str(work), "--epochs", "1",
                  "--batch-size", "4", "--input-size", "96", "--do-not-load-snapshot"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "SYNTHETIC sample" in r.stderr
    for path in ("synthetic_sample/annotations.json", "outputs/latest.pth", "export/model.xml", "export/model.bin",
                 "train.py", "eval.py", "export.py"):
        assert (work / path).exists(), path
    pth = {e["key"]: e["value"] for e in yaml.safe_load((work / "metrics.yaml").read_text())["metrics"]}
    ir = {e["key"]: e["value"] for e in yaml.safe_load((work / "metrics_ir.yaml").read_text())["metrics"]}
    # the IR (f32) gives the snapshot's AP
    assert abs(pth["ap"] - ir["ap"]) <= 0.1, (pth["ap"], ir["ap"])
    assert "OpenVINO IR (f32) AP" in r.stdout
