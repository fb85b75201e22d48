"""instantiate_template.py offline: --omz-weights on a template without Open Model Zoo weights is one line
naming those that have them; a failed download leaves no work dir (or an existing one as it was), never one
without train.py/eval.py. Offline = the closed port 9 on 127.0.0.1 for the snapshot and the OMZ storage."""

import os
import shutil

import yaml

from conftest import REPO, TEMPLATES, run_here, template_path

TOOL = os.path.join(REPO, "tools", "instantiate_template.py")


def test_omz_weights_for_a_template_without_them_is_one_line(tmp_path):
    r = run_here([TOOL, template_path("face-detection-0205"), tmp_path / "wd", "--omz-weights"])
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines == ["error: --omz-weights: face-detection-0205 has no Open Model Zoo weights; the templates that "
                     "have them: face-detection-0200, face-detection-0202, face-detection-0204"], r.stderr
    assert not (tmp_path / "wd").exists()


def _offline_template(tmp_path, name="face-detection-0200"):
    """A copy of the template whose snapshot URL is the closed port 9 (scripts from tools/workdir)."""
    src = os.path.dirname(template_path(name))
    folder = tmp_path / "tpl" / name
    shutil.copytree(src, folder)
    shutil.copytree(os.path.join(TEMPLATES, "_base_"), tmp_path / "tpl" / "_base_")
    data = yaml.safe_load(open(template_path(name)))
    data["dependencies"][0]["source"] = f"http://127.0.0.1:9/{name}.pth"
    for dep in data["dependencies"][1:]:
        dep["source"] = os.path.join(REPO, "tools", "workdir", os.path.basename(dep["source"]))
    (folder / "template.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return str(folder / "template.yaml")


def test_offline_instantiation_makes_a_complete_work_dir_or_none(tmp_path, monkeypatch):
    monkeypatch.setenv("OTE_FACE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OTE_FACE_OMZ_URL", "http://127.0.0.1:9")
    tpl = _offline_template(tmp_path)
    for flags in ([], ["--omz-weights"]):  # the snapshot, then the OMZ IR too, cannot be fetched
        r = run_here([TOOL, tpl, tmp_path / "wd", *flags])
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.strip().splitlines()[-1].startswith("error: cannot download http://127.0.0.1:9/"), r.stderr
        assert not (tmp_path / "wd").exists(), os.listdir(tmp_path / "wd")
    assert not [n for n in os.listdir(tmp_path) if ".instantiate." in n]  # no build folder left behind
    # an existing work dir keeps what it had, and gets nothing half-made
    (tmp_path / "wd").mkdir()
    (tmp_path / "wd" / "notes.txt").write_text("mine")
    r = run_here([TOOL, tpl, tmp_path / "wd", "--omz-weights"])
    assert r.returncode == 2, r.stderr
    assert os.listdir(tmp_path / "wd") == ["notes.txt"]
    # the same without the snapshot: complete, beside the user's file
    r = run_here([TOOL, tpl, tmp_path / "wd", "--do-not-load-snapshot"])
    assert r.returncode == 0, r.stderr
    assert {"notes.txt", "train.py", "eval.py", "export.py", "model.py", "template.yaml", "_base_"} <= \
        set(os.listdir(tmp_path / "wd"))
    r = run_here([TOOL, tpl, tmp_path / "wd2", "--do-not-load-snapshot"])
    assert r.returncode == 0 and os.path.isfile(tmp_path / "wd2" / "train.py"), r.stderr
