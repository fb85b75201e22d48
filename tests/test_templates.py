"""Templates load, build, and match the seed's size and complexity (as OTE counted them)."""

import os

import pytest
import yaml

from conftest import TEMPLATES, run_tool, template_path
from ote_detection.apis.task import Task
from ote_detection.config import load_template
from ote_detection.utils.complexity import model_complexity
from ote_detection.utils.errors import OteError

SSD = ["face-detection-0200", "face-detection-0202", "face-detection-0204", "face-detection-0207"]
# FCOS + MobileNetV2-FPN at 416; ATSS + ResNet-152 + RSSH-FPN at 640 (its ptflops count takes ~10 s on one
# thread: 340 GFLOPs)
ALL = SSD + ["face-detection-0205", "face-detection-0206"]


def test_all_six_templates_load():
    names = sorted(os.listdir(TEMPLATES))
    for name in ["face-detection-0200", "face-detection-0202", "face-detection-0204", "face-detection-0205",
                 "face-detection-0206", "face-detection-0207"]:
        assert name in names
        task = Task(template_path(name))
        assert task.name == name
        assert {m["key"] for m in task.template["metrics"]} >= {"ap", "ap_64x64", "widerface_e", "size", "complexity"}


@pytest.mark.parametrize("name", ALL)
def test_size_and_complexity_match_seed(name, one_torch_thread):
    task = Task(template_path(name))
    ref = {m["key"]: m["value"] for m in task.template["metrics"]}
    gflops, mparams = model_complexity(task.build_detector(), task.input_size)
    assert abs(gflops - ref["complexity"]) / ref["complexity"] < 0.01, (gflops, ref["complexity"])
    assert abs(mparams - ref["size"]) / ref["size"] < 0.01, (mparams, ref["size"])


def test_complexity_tool_prints_table():
    r = run_tool([os.path.join(os.path.dirname(TEMPLATES), "..", "tools", "get_complexity.py"), template_path()])
    assert r.returncode == 0, r.stderr
    assert "face-detection-0200" in r.stdout and "0.82" in r.stdout and "1.83" in r.stdout


def _write_template(tmp_path, mutate):
    with open(template_path(), encoding="utf-8") as f:
        data = yaml.safe_load(f)
    mutate(data)
    path = tmp_path / "template.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_unknown_template_key_is_named(tmp_path):
    path = _write_template(tmp_path, lambda d: d.update(bogus_key=1))
    with pytest.raises(OteError, match="unknown template key 'bogus_key'"):
        load_template(path)


def test_missing_template_field_is_named(tmp_path):
    path = _write_template(tmp_path, lambda d: d["hyper_parameters"]["basic"].pop("epochs"))
    with pytest.raises(OteError, match="hyper_parameters.basic.epochs"):
        load_template(path)


def test_instantiate_cli_bad_template_one_line(tmp_path):
    path = _write_template(tmp_path, lambda d: d.pop("config"))
    r = run_tool([os.path.join(os.path.dirname(TEMPLATES), "..", "tools", "instantiate_template.py"), path,
                  str(tmp_path / "wd")])
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "has no 'config' field" in r.stderr
    assert "Traceback" not in r.stderr
