"""Numbers that describe what was evaluated: a detection cache that follows the work dir's model.py
(issue 15.1), size and complexity of the artefact itself, foreign IRs reported as such (15.6, 15.8),
and the typed checkpoint meta / export_info.yaml (issue 16.2)."""

import os
import re
import shutil

import pytest

from conftest import AIRPORT_ANN, AIRPORT_ROOT, REPO, SHARED, need_shared, run_tool, template_path

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
    r = run_tool([os.path.join(REPO, "tools", "import_openvino_weights.py"), "template.yaml", xml, "snapshot.pth",
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
        r = run_tool(ev + ["--cache-dir", cache, *extra], cwd=work)
        assert r.returncode == 0, r.stderr[-3000:]
        return _ap(r.stdout), "taken from the cache" in r.stderr

    assert ap() == (13.84, False)
    assert ap() == (13.84, True)  # the same model.py: served from the cache
    model_py = work / "model.py"
    original = model_py.read_text()
    model_py.write_text(original + "\nmodel = dict(test_cfg=dict(nms=dict(type='nms', iou_threshold=0.3), "
                                   "max_per_img=5))\n")
    assert ap() == (13.61, False)
    model_py.write_text(original)
    assert ap() == (13.84, True)
    cluster = [os.path.join(REPO, "tools", "cluster_anchors.py"), "model.py", "--train-ann-files", AIRPORT_ANN,
               "--write"]
    r = run_tool(cluster, cwd=work)
    if r.returncode != 0 and "--force" in r.stderr:  # the tool keeps the template's anchors unless forced
        r = run_tool(cluster + ["--force"], cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    assert model_py.read_text() != original
    assert ap() == (0.0, False)
