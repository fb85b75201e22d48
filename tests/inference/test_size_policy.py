"""One inference-size policy (issue 25): training, eval, the demo, export and the size sweep decide the network
input size and letterbox-or-stretch alike for the same request and artefact, because each goes through
``inference.deploy.deployment_geometry``. Each entry point is run for real (its own code path, tiny
settings: one 1920x1080 airport frame, a random face-detection-0200 at 160 px wide) and its decision is read
from what it says or writes: eval's log line, the demo's first line, export_info.yaml and the IR's Model API
model_info, the sweep's rows and IR folders, the training config."""

import logging
import os
import re
import shutil

import pytest
import torch
import yaml

from conftest import REPO, copy_airport_subset, need_shared, template_path
from ote_detection.apis.task import Task
from ote_detection.artefacts.checkpoint import save_checkpoint
from ote_detection.inference.deploy import common_frame_hw

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# the frames are 1920x1080 (16:9); the model's stride is 32
STRETCHED_160x96 = ((160, 96), False)
LETTERBOXED_160x96 = ((160, 96), True)  # 160x: 160 / (16/9) = 90, rounded up to 96
LETTERBOXED_160x128 = ((160, 128), True)  # 160x --aspect 4:3: 120, rounded up to 128


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """One airport frame (COCO), and two random snapshots: stretched at 128x96 (the templates' way) and
    letterboxed at 160x96 (as ``train.py --input-size 160x`` writes it)."""
    tmp = tmp_path_factory.mktemp("size_policy")
    ann, data = copy_airport_subset(str(tmp / "air"), n=1)
    torch.manual_seed(0)
    task = Task(template_path())
    detector = task.build_detector()
    snaps = {}
    for name, size, keep in (("stretched", (128, 96), False), ("letterboxed", (160, 96), True)):
        snaps[name] = str(tmp / f"{name}.pth")
        meta = dict(task.checkpoint_meta().to_dict(), input_size=list(size), keep_ratio=keep)
        save_checkpoint(snaps[name], detector, meta=meta)
    return {"tmp": tmp, "ann": ann, "root": str(tmp / "air"), "frame": os.path.join(str(tmp / "air"),
            data["images"][0]["file_name"]), "frame_hw": common_frame_hw(data["images"]), **snaps}


def _geometry(w, h, fit):
    return (int(w), int(h)), fit == "letterboxed"


def eval_geometry(s, weights, caplog, input_size=None, keep_ratio=None):
    """eval.py's decision: ``apis.evaluate.evaluate`` run on the frame, read from its log line."""
    from ote_detection.apis.evaluate import evaluate
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ote_detection.apis.evaluate"):
        evaluate(template_path(), weights, [s["ann"]], [s["root"]], cache_dir=None, batch_size=1,
                 input_size=input_size, keep_ratio=keep_ratio)
    said = [m for m in caplog.messages if m.startswith("evaluating at input")]
    assert len(said) == 1, caplog.messages
    return _geometry(*re.match(r"evaluating at input (\d+)x(\d+) \((letterboxed|stretched)", said[0]).groups())


def demo_geometry(s, weights, input_size=None, keep_ratio=None):
    """visualize.py's decision: ``apis.visualize.run_demo`` on the frame, read from its first line."""
    from ote_detection.apis.visualize import run_demo
    lines = []
    run_demo(template_path(), weights, s["frame"], show=False, max_frames=1, input_size=input_size,
             keep_ratio=keep_ratio, precision="f32", log=lines.append)
    return _geometry(*re.search(r"input (\d+)x(\d+) (letterboxed|stretched)", lines[0]).groups())


def ir_geometry(xml):
    """What an IR folder records: export_info.yaml's input, checked against the IR's own model_info and shape."""
    import openvino as ov

    from ote_detection.export.model_info import get_model_info
    info = yaml.safe_load(open(os.path.join(os.path.dirname(xml), "export_info.yaml"), encoding="utf-8"))["input"]
    model = ov.Core().read_model(xml)
    _, _, h, w = (int(d) for d in model.inputs[0].get_shape())
    keep = bool(info["keep_ratio"])
    assert tuple(info["input_size"]) == (w, h)
    assert get_model_info(model)["resize_type"] == ("fit_to_window" if keep else "standard")
    return (w, h), keep


def export_geometry(s, weights, out, input_size=None, aspect=None):
    """export.py's decision: ``apis.export.export``, read from the IR folder it writes."""
    from ote_detection.apis.export import export
    return ir_geometry(export(template_path(), weights, str(s["tmp"] / out), input_size=input_size, aspect=aspect))


def sweep_geometry(s, input_size, keep_ratio=None):
    """tools/choose_input_size.py's decision: the sweep at one size, read from its row and its IR folder."""
    from ote_detection.apis.choose_input_size import choose_input_size
    rows, _ = choose_input_size(template_path(), s["stretched"], [s["ann"]], [s["root"]], [input_size],
                                precision="f32", keep_ratio=keep_ratio, all_threads=False, progress=False,
                                save_irs_to=str(s["tmp"] / "sweep"))
    assert len(rows) == 1
    row = ((tuple(rows[0]["size"]), rows[0]["keep_ratio"]))
    assert ir_geometry(rows[0]["xml"]) == row  # its IR says what it was run with
    return row


def train_geometry(s, input_size=None, aspect=None, resume=None):
    """train.py's decision: ``Task.resolve_geometry`` with what ``apis.train`` gives it (the training frames'
    (h, w) for 'Wx' without --aspect; the resumed checkpoint's meta)."""
    from ote_detection.artefacts.checkpoint import load_checkpoint_file
    from ote_detection.artefacts.formats import CheckpointMeta
    task = Task(template_path())
    frame_hw = s["frame_hw"] if input_size is not None and input_size[1] is None and aspect is None else None
    meta = CheckpointMeta.of(load_checkpoint_file(resume), resume) if resume else None
    size, keep = task.resolve_geometry(input_size, meta, resume, frame_hw, aspect)
    assert (tuple(task.input_size), task.keep_ratio) == (tuple(size), keep)  # what the run's config holds
    return tuple(size), keep


def test_snapshot_requests_agree_across_train_eval_and_demo(setup, caplog):
    """The same request on a snapshot gives one geometry in training, eval and the demo: WxH stretched, Wx
    letterboxed (the height from the frames), an explicit keep_ratio=False stretches a Wx (the issue's
    eval letterboxed it), and a letterboxed snapshot without a flag is run letterboxed at its own size."""
    s = setup
    cases = [
        ("WxH", s["stretched"], (160, 96), None, STRETCHED_160x96),
        ("Wx", s["stretched"], (160, None), None, LETTERBOXED_160x96),
        ("Wx, keep_ratio=False", s["stretched"], (160, None), False, STRETCHED_160x96),
        ("WxH, keep_ratio=True", s["stretched"], (160, 96), True, LETTERBOXED_160x96),
        ("stretched snapshot, no flag", s["stretched"], None, None, ((128, 96), False)),
        ("letterboxed snapshot, no flag", s["letterboxed"], None, None, LETTERBOXED_160x96),
    ]
    for what, weights, size, keep, want in cases:
        got = {"eval": eval_geometry(s, weights, caplog, size, keep), "demo": demo_geometry(s, weights, size, keep)}
        if keep is None:  # train.py has no --keep-ratio
            got["train"] = train_geometry(s, size, resume=None if size is not None else weights)
        assert set(got.values()) == {want}, (what, got)


def test_sweep_choice_flags_give_its_geometry(setup):
    """The sweep's choice line gives the export.py flags of the geometry it measured; --input-size and
    --aspect of export.py and train.py (the same rule) turn them back into that geometry."""
    from ote_detection.apis.choose_input_size import export_flags, sweep_geometries
    s = setup
    specs = [(160, 96), (160, None), (160, None), (96, 96)]
    geometries = sweep_geometries(specs, s["frame_hw"], 32)
    assert geometries == [STRETCHED_160x96, LETTERBOXED_160x96, ((96, 96), False)]  # each once
    assert sweep_geometries(specs, s["frame_hw"], 32, keep_ratio=True)[0] == LETTERBOXED_160x96
    for size, keep in geometries + [LETTERBOXED_160x128, ((160, 100), True)]:
        flags = export_flags(size, keep, s["frame_hw"], 32)
        if size == (160, 100):  # not a multiple of the stride: export.py cannot letterbox it
            assert flags is None
            continue
        m = re.fullmatch(r"--input-size (\d+)x(\d*)(?: --aspect (\S+))?", flags)
        spec = (int(m.group(1)), int(m.group(2)) if m.group(2) else None)
        assert train_geometry(s, spec, aspect=m.group(3)) == (size, keep), flags


@pytest.mark.slow
def test_export_sweep_and_irs_agree_with_eval_and_demo(setup, caplog):
    """export.py and the size sweep write what eval and the demo decide for the same request; the IRs they
    write (with export_info.yaml, or without it: its Model API model_info) are then run by eval and the demo
    as they were exported; --aspect gives export and training the same height; an IR of another tool
    (Open Model Zoo's, neither record) is stretched at its own size."""
    s = setup
    for what, size, keep, want in (("WxH", (160, 96), None, STRETCHED_160x96),
                                   ("Wx", (160, None), None, LETTERBOXED_160x96),
                                   ("Wx, --stretch", (160, None), False, STRETCHED_160x96)):
        got = {"sweep": sweep_geometry(s, size, keep), "eval": eval_geometry(s, s["stretched"], caplog, size, keep),
               "demo": demo_geometry(s, s["stretched"], size, keep)}
        if keep is None:  # export.py letterboxes only Wx, without a flag
            got["export"] = export_geometry(s, s["stretched"], f"export_{what}", size)
        assert set(got.values()) == {want}, (what, got)
    assert export_geometry(s, s["letterboxed"], "export_own") == LETTERBOXED_160x96  # the snapshot's own
    aspect = export_geometry(s, s["stretched"], "export_aspect", (160, None), aspect="4:3")
    assert aspect == train_geometry(s, (160, None), aspect="4:3") == LETTERBOXED_160x128
    ir = str(s["tmp"] / "export_aspect" / "model.xml")
    bare = s["tmp"] / "bare"  # the same IR without export_info.yaml: its model_info says fit_to_window
    bare.mkdir()
    for name in ("model.xml", "model.bin"):
        shutil.copyfile(str(s["tmp"] / "export_aspect" / name), str(bare / name))
    for weights in (ir, str(bare / "model.xml")):
        got = {"eval": eval_geometry(s, weights, caplog), "demo": demo_geometry(s, weights)}
        assert set(got.values()) == {LETTERBOXED_160x128}, (weights, got)
    omz = need_shared("models", "omz", "face-detection-0200", "FP16", "face-detection-0200.xml")
    got = {"eval": eval_geometry(s, omz, caplog), "demo": demo_geometry(s, omz)}
    assert set(got.values()) == {((256, 256), False)}, got


def test_one_letterbox_decision():
    """Grep finds one definition of the letterbox decision, in ``deployment_geometry``: no entry point, tool or
    benchmark derives keep_ratio from a width-only size ('[1] is None') or calls the size rule past it."""
    deciding = re.compile(r"keep(_ratio)?\s*=.*\[1\]\s+is\s+None|keep_ratio\s*=\s*keep_ratio\s+or")
    found, definitions = [], []
    for top in ("ote_detection", "tools", "benchmarks"):
        for folder, _, files in os.walk(os.path.join(REPO, top)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, REPO)
                text = open(path, encoding="utf-8").read()
                definitions += [rel for _ in re.finditer(r"^def deployment_geometry\(", text, re.M)]
                found += [f"{rel}: {m.group(0)}" for m in deciding.finditer(text)]
                if rel != os.path.join("ote_detection", "inference", "deploy.py") and \
                        re.search(r"\bdeployment_input_size\(", text):
                    found.append(f"{rel}: deployment_input_size() outside deployment_geometry")
    deploy = os.path.join("ote_detection", "inference", "deploy.py")
    assert definitions == [deploy]
    assert len(found) == 1 and found[0].startswith(deploy + ": keep_ratio = "), found  # in deployment_geometry
