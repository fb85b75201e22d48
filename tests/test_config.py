"""config.py: model.py loading (mmcv `_base_` inheritance, `_delete_` merging), the templates' resolved
values, the dead-key warning and the refusals; apis/instantiate.py's copy of the `_base_` tree.

The snapshot ``tests/fixtures/resolved_templates.txt`` holds the resolved config of each of the six templates as
it was BEFORE the templates were split into `_base_/models`, `datasets`, `schedules` and `default_runtime.py`
(commit ea1ecf5), less the keys that nothing reads (``STRIPPED``), which that split removed. It was written by

    git archive ea1ecf5 model_templates | tar -x -C /tmp/old
    python tests/test_config.py --write-snapshot /tmp/old/model_templates/face-detection

A deliberate change of a template value means writing it again from the changed templates (and saying so).
"""

import ast
import os
import pprint
import sys

import pytest

from conftest import REPO, TEMPLATES, run_tool, template_path
from ote_detection.apis.task import Task
from ote_detection.config import load_config, merge_dict
from ote_detection.utils.errors import OteError

NAMES = ["face-detection-0200", "face-detection-0202", "face-detection-0204", "face-detection-0205",
         "face-detection-0206", "face-detection-0207"]
SNAPSHOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "resolved_templates.txt")
BASE = os.path.join(TEMPLATES, "_base_")
SSD_BASES = [os.path.join(BASE, p) for p in ("models/ssd_mobilenetv2.py", "datasets/wider_face.py",
                                             "schedules/sgd_step_40_55_65.py", "default_runtime.py")]
# keys of the old templates that nothing read (config.py now warns about them in a user's config); the
# pipelines' img_scale was overwritten by input_size
STRIPPED = {"top": ("filename", "test_pipeline", "data_root", "dataset_type", "width_mult"),
            "data": ("samples_per_gpu", "val", "test"), "dataset": ("ann_file", "img_prefix", "classes"),
            "log_config": ("hooks",), "step": ("img_scale",)}


def plain(obj):
    """Config -> plain dicts, keeping tuples (``ast.literal_eval`` reads the pprint of it back)."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    return obj


def resolved(model_py, strip=False):
    cfg = plain(load_config(model_py))
    if strip:
        for key in STRIPPED["top"]:
            cfg.pop(key, None)
        for key in STRIPPED["data"]:
            cfg["data"].pop(key, None)
        for key in STRIPPED["dataset"]:
            cfg["data"]["train"]["dataset"].pop(key, None)
        for key in STRIPPED["log_config"]:
            cfg["log_config"].pop(key, None)
        for step in cfg["train_pipeline"] + cfg["data"]["train"]["dataset"]["pipeline"]:
            for key in STRIPPED["step"]:
                step.pop(key, None)
    else:
        cfg.pop("filename")
    return cfg


def write_snapshot(templates_root):
    cfgs = {name: resolved(os.path.join(templates_root, name, "model.py"), strip=True) for name in NAMES}
    with open(SNAPSHOT, "w", encoding="utf-8") as f:
        f.write(pprint.pformat(cfgs, width=120, sort_dicts=True) + "\n")


@pytest.mark.parametrize("name", NAMES)
def test_template_resolves_to_the_values_before_the_split(name, caplog):
    with open(SNAPSHOT, encoding="utf-8") as f:
        before = ast.literal_eval(f.read())[name]
    with caplog.at_level("WARNING"):
        now = resolved(os.path.join(TEMPLATES, name, "model.py"))
    assert now == before  # tuples stay tuples, floats are exact
    assert "ignored key" not in caplog.text  # our templates hold no dead key


def test_each_model_py_shows_only_what_differs():
    lines = {name: len(open(os.path.join(TEMPLATES, name, "model.py")).read().splitlines()) for name in NAMES}
    assert max(lines.values()) <= 20, lines  # 15-153 lines before the split, 12-20 after
    for concern in ("models", "datasets", "schedules"):
        assert os.listdir(os.path.join(BASE, concern))
    assert os.path.isfile(os.path.join(BASE, "default_runtime.py"))


def test_merge_dict_has_mmcv_semantics():
    base = {"a": {"x": 1, "y": {"p": 1}}, "b": [1, 2], "c": 3}
    assert merge_dict(base, {"a": {"y": {"q": 2}}, "b": [9]}) == {"a": {"x": 1, "y": {"p": 1, "q": 2}}, "b": [9],
                                                                   "c": 3}
    assert merge_dict(base, {"a": {"_delete_": True, "z": 0}}) == {"a": {"z": 0}, "b": [1, 2], "c": 3}


def _child(tmp_path, body):
    child = tmp_path / "model.py"
    child.write_text(f"_base_ = {SSD_BASES!r}\ninput_size = (320, 192)\n" + body)
    return str(child)


def test_base_inheritance_delete_and_dead_keys(tmp_path, caplog):
    base = load_config(template_path().replace("template.yaml", "model.py"))
    path = _child(tmp_path, "lr_config = dict(_delete_=True, policy='cosine')\n"
                            "optimizer = dict(type='AdamW', lr=0.001, weight_decay=0.05, _delete_=True)\n"
                            "model = dict(bbox_head=dict(anchor_generator=dict(widths=([8.0] * 4, [64.0] * 5), "
                            "heights=([8.0] * 4, [64.0] * 5))))\n"
                            "workflow = [('train', 1)]\n")
    with caplog.at_level("WARNING"):
        cfg = load_config(path)
    assert cfg.lr_config == {"policy": "cosine"} and cfg.optimizer == {"type": "AdamW", "lr": 0.001, "weight_decay": 0.05}
    assert cfg.model.backbone == base.model.backbone and cfg.input_size == (320, 192)
    assert cfg.model.bbox_head.anchor_generator.widths == ([8.0] * 4, [64.0] * 5)
    assert "ignored key(s) workflow (" in caplog.text


def test_dead_keys_of_a_users_config_are_named_in_one_warning(tmp_path, caplog):
    """An mmdetection 2.x config's keys that ote-face does not read: one warning names them all."""
    path = _child(tmp_path, "data_root = 'data/'\n"
                            "test_pipeline = [dict(type='LoadImageFromFile')]\n"
                            "data = dict(samples_per_gpu=8, val=dict(ann_file='v.json'), test=dict(ann_file='t.json'),"
                            " train=dict(dataset=dict(ann_file='a.json', img_prefix=data_root)))\n"
                            "log_config = dict(hooks=[dict(type='TextLoggerHook')])\n"
                            "model = dict(bbox_head=dict(reg_decoded_bbox=True))\n"
                            "train_pipeline = [dict(type='Resize', img_scale=(300, 300))]\n")
    with caplog.at_level("WARNING"):
        load_config(path)
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    for key in ("data_root", "test_pipeline", "data.samples_per_gpu", "data.val", "data.test",
                "data.train.dataset.ann_file", "data.train.dataset.img_prefix", "log_config.hooks",
                "model.bbox_head.reg_decoded_bbox", "train_pipeline"):
        assert key in text, key
    assert "--batch-size" in text and "--train-ann-files" in text


def test_train_cfg_keys_the_head_does_not_declare_are_named(tmp_path, caplog):
    """The SSD head declares the train_cfg keys it reads (assigner, neg_pos_ratio, smoothl1_beta): others, such
    as ATSS's allowed_border or a typo, are named in the warning; the declared ones are not."""
    path = _child(tmp_path, "model = dict(train_cfg=dict(allowed_border=-1, neg_ratio=3))\n")
    with caplog.at_level("WARNING"):
        load_config(path)
    assert "model.train_cfg.allowed_border" in caplog.text and "model.train_cfg.neg_ratio" in caplog.text
    assert "model.train_cfg.assigner" not in caplog.text and "neg_pos_ratio" not in caplog.text


def test_resize_img_scale_in_a_users_pipeline_is_named(tmp_path, caplog):
    path = _child(tmp_path, "data = dict(train=dict(dataset=dict(pipeline=[dict(type='Resize', img_scale=(300, 300)),"
                            " dict(type='Normalize')])))\ntrain_pipeline = data['train']['dataset']['pipeline']\n")
    with caplog.at_level("WARNING"):
        load_config(path)
    assert "train_pipeline Resize.img_scale: input_size sets the size" in caplog.text


def test_normalize_takes_img_norm_cfg():
    """The dataset base's Normalize has no values: 0206 trains with its own ImageNet mean/std, the others [0, 1]."""
    for name, mean in (("face-detection-0206", [123.675, 116.28, 103.53]), ("face-detection-0205", [0, 0, 0])):
        cfg = Task(template_path(name)).cfg
        for pipeline in (cfg.train_pipeline, cfg.data.train.dataset.pipeline):
            norm = [s for s in pipeline if s["type"] == "Normalize"][0]
            assert norm["mean"] == mean and dict(norm, type=None) == dict(cfg.img_norm_cfg, type=None)


@pytest.mark.parametrize("body, message", [
    ("model = dict(pretrained='torchvision://resnet50')\n", "model.pretrained='torchvision://resnet50' is not supported"),
    ("img_norm_cfg = dict(mean=[1, 2, 3], std=[4, 5, 6], to_rgb=True)\n"
     "train_pipeline = [dict(type='Normalize', mean=[0, 0, 0], std=[255, 255, 255], to_rgb=True)]\n"
     "data = dict(train=dict(dataset=dict(pipeline=train_pipeline)))\n", "differs from img_norm_cfg"),
    ("data = dict(train=dict(dataset=dict(type='VOCDataset')))\n", "dataset type 'VOCDataset' is not supported"),
    ("img_norm_cfg = dict(_delete_=True)\n", "Normalize has no values and the config no img_norm_cfg"),
])
def test_values_that_cannot_be_honoured_are_refused(tmp_path, body, message):
    with pytest.raises(OteError, match=message) as err:
        load_config(_child(tmp_path, body))
    assert "\n" not in str(err.value) and str(tmp_path) in str(err.value)


@pytest.mark.slow
def test_instantiated_work_dir_is_self_contained(tmp_path):
    work = tmp_path / "wd"
    r = run_tool([os.path.join(REPO, "tools", "instantiate_template.py"), template_path("face-detection-0206"),
                  str(work), "--do-not-load-snapshot"])
    assert r.returncode == 0, r.stderr
    moved = tmp_path / "elsewhere"
    os.rename(work, moved)  # nothing points back into the repository
    for rel in ("models/ssd_mobilenetv2.py", "models/atss_resnet152_rssh_fpn.py", "datasets/wider_face.py",
                "schedules/sgd_step_40_55_65.py", "default_runtime.py"):  # the whole _base_ tree
        assert (moved / "_base_" / rel).is_file(), rel
    assert resolved(str(moved / "model.py")) == resolved(os.path.join(TEMPLATES, "face-detection-0206", "model.py"))


def test_copy_config_keeps_nested_bases(tmp_path):
    """A base that inherits another base: the copies keep the layout and point at each other."""
    from ote_detection.apis.instantiate import copy_config
    src = tmp_path / "tpl"
    (src / "_base_" / "models").mkdir(parents=True)
    (src / "t").mkdir()
    (src / "_base_" / "models" / "ssd.py").write_text(f"_base_ = {SSD_BASES[0]!r}\n")
    (src / "_base_" / "data.py").write_text(f"_base_ = {SSD_BASES[1:]!r}\ninput_size = 256\n")
    (src / "t" / "model.py").write_text("_base_ = ['../_base_/models/ssd.py', '../_base_/data.py']\n"
                                        "model = dict(bbox_head=dict(anchor_generator=dict(widths=([8.0] * 4, "
                                        "[64.0] * 5), heights=([8.0] * 4, [64.0] * 5))))\n")
    work = tmp_path / "wd"
    copy_config(str(src / "t" / "model.py"), str(work / "model.py"), str(work / "_base_"))
    before = resolved(str(src / "t" / "model.py"))
    os.rename(src, tmp_path / "gone")
    assert resolved(str(work / "model.py")) == before


if __name__ == "__main__":
    if sys.argv[1:2] != ["--write-snapshot"] or len(sys.argv) != 3:
        sys.exit("usage: python tests/test_config.py --write-snapshot TEMPLATES_ROOT")
    write_snapshot(sys.argv[2])
