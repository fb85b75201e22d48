"""Issue 15 (items 2, 4, 5, 9, 13): what training leaves out is said, too little data keeps the template's
anchors, no batch of one reaches BatchNorm, derived sizes are bounded, and smaller rough edges -- each
on the real tools with the inputs of ../shared/cases."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import (AIRPORT_ANN, AIRPORT_ROOT, REPO, SHARED, need_shared, run_here, run_tool, template_path,
                      write_json)
from ote_detection.apis.task import Task
from ote_detection.artefacts.checkpoint import save_checkpoint

CASES = os.path.join(SHARED, "cases")


def make_case(script, out):
    """Build the input of ../shared/cases/<script> into ``out`` (as its header says)."""
    need_shared("cases", script)
    env = dict(os.environ, SHARED=SHARED, PROJECT=REPO)
    r = subprocess.run([sys.executable, os.path.join(CASES, script), str(out)], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return str(out)


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def random_snapshot(work_dir_0200, tmp_path_factory):
    """A seeded, randomly initialised 0200 snapshot (export and eval paths only need a valid one)."""
    torch.manual_seed(0)
    task = Task(os.path.join(work_dir_0200, "template.yaml"))
    path = tmp_path_factory.mktemp("snap") / "random.pth"
    save_checkpoint(str(path), task.build_detector(), meta=task.checkpoint_meta())
    return str(path)


# -- 15.2: training says what it leaves out -----------------------------------------------------------------

@pytest.mark.slow
def test_training_says_what_it_leaves_out_and_keeps_negatives(work_dir_0200, tmp_path):
    """cases/01: 13 images (3 face-less floor crops), 41 faces of which 4 are under 0200's min_size 17:
    one line with both counts and reasons; filter_empty_gt=False keeps the 3 images as negatives."""
    data = make_case("01-empty-val-images.py", tmp_path / "data")
    ann = os.path.join(data, "ann.json")
    common = ["--train-ann-files", ann, "--train-data-roots", data, "--epochs", "1", "--input-size", "64",
              "--batch-size", "8", "--gpu-num", "0", "--workers", "0"]
    r = run_here([os.path.join(work_dir_0200, "train.py"), *common, "--save-checkpoints-to", str(tmp_path / "a")])
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [line for line in r.stderr.splitlines() if line.startswith("training data")]
    assert len(lines) == 1, r.stderr[-3000:]
    line = lines[0]
    assert "10 of 13 image(s) and 37 of 41 face(s) used" in line, line
    assert "3 image(s) (3 without a face; filter_empty_gt=True" in line and "filter_empty_gt=False" in line, line
    assert "4 face(s) under min_size=17 px" in line, line

    # the documented switch: face-less images kept as negatives
    work = tmp_path / "wd_neg"
    shutil.copytree(work_dir_0200, work)
    model_py = work / "model.py"
    text = model_py.read_text()
    switch = "train=dict(dataset=dict(filter_empty_gt=False))"
    text = text.replace("data = dict(", f"data = dict({switch}, ", 1) if "\ndata = dict(" in text \
        else text + f"\ndata = dict({switch})\n"
    model_py.write_text(text)
    r = run_here([os.path.join(work, "train.py"), *common, "--save-checkpoints-to", str(tmp_path / "b")])
    assert r.returncode == 0, r.stderr[-3000:]
    line = next(line for line in r.stderr.splitlines() if line.startswith("training data"))
    assert "13 of 13 image(s) and 37 of 41 face(s) used (3 without a usable face kept as negatives" in line, line
    assert os.path.isfile(tmp_path / "b" / "epoch_1.pth")


# -- 15.4: anchors from too little data ---------------------------------------------------------------------

def _cluster(model_py, ann, *extra):
    return run_here([os.path.join(REPO, "tools", "cluster_anchors.py"), str(model_py), "--train-ann-files", ann,
                     "--train-data-roots", AIRPORT_ROOT, *extra])


@pytest.mark.slow
def test_cluster_anchors_keeps_the_template_anchors_on_too_little_data(work_dir_0200, tmp_path):
    data = make_case("06-few-boxes-anchor-clustering.py", tmp_path / "data")
    work = tmp_path / "wd"
    shutil.copytree(work_dir_0200, work)
    model_py = work / "model.py"
    original = model_py.read_text()
    for name, boxes, shapes in (("few3.json", 2, 2), ("same12.json", 12, 1)):  # 1 of few3's 3 is under 17 px
        r = _cluster(model_py, os.path.join(data, name), "--write")
        assert r.returncode == 2, r.stdout + r.stderr
        lines = error_lines(r.stderr)
        assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
        assert f"{boxes} face box(es) of {shapes} distinct shape(s)" in lines[0] and "9 anchors" in lines[0]
        assert "--force" in lines[0] and "nothing written" in lines[0]
        assert model_py.read_text() == original and not os.path.exists(str(model_py) + ".orig")

    # coverage that does not improve: 9 faces exactly of the template's 9 anchor shapes (100% already)
    task = Task(os.path.join(work, "template.yaml"))
    gen = task.cfg.model.bbox_head.anchor_generator
    images = json.load(open(AIRPORT_ANN))["images"][:9]  # one face each (the biggest is 915x819 px)
    sx, sy = images[0]["width"] / 256, images[0]["height"] / 256
    anns = [{"id": k + 1, "image_id": img["id"], "category_id": 1, "iscrowd": 0,
             "bbox": [10, 10, w * sx, h * sy], "area": w * sx * h * sy}
            for k, (img, w, h) in enumerate(zip(images, sum(map(list, gen.widths), []),
                                                sum(map(list, gen.heights), [])))]
    exact = write_json(tmp_path / "exact.json", {"images": images, "annotations": anns,
                                                 "categories": [{"id": 1, "name": "face"}]})
    r = _cluster(model_py, exact, "--write")
    assert r.returncode == 2 and "do not improve the coverage (100.0% -> " in r.stderr, r.stdout + r.stderr
    assert model_py.read_text() == original

    # --force overrides
    r = _cluster(model_py, os.path.join(data, "same12.json"), "--write", "--force")
    assert r.returncode == 0, r.stderr
    assert model_py.read_text() != original and os.path.isfile(str(model_py) + ".orig")


# -- 15.5: a trailing batch of one ---------------------------------------------------------------------------

def test_no_batch_of_one_from_the_sampler_also_under_ddp():
    """6 items, batch 5 -> 5 + 1: the trailing 1 gets a second index; DistributedSampler's shares too
    (2 processes, 3 items each, batch 2 -> 2 + 1)."""
    from torch.utils.data import DistributedSampler, SequentialSampler
    from ote_detection.engine.trainer import NoSingletonBatchSampler
    batches = list(NoSingletonBatchSampler(SequentialSampler(range(6)), 5))
    assert [len(b) for b in batches] == [5, 2] and batches[1] == [5, 0]
    assert len(NoSingletonBatchSampler(SequentialSampler(range(6)), 5)) == 2
    for rank in (0, 1):
        sampler = DistributedSampler(range(6), num_replicas=2, rank=rank, shuffle=True, seed=0)
        sizes = [len(b) for b in NoSingletonBatchSampler(sampler, 2)]
        assert sizes == [2, 2]
    assert [len(b) for b in NoSingletonBatchSampler(SequentialSampler(range(1)), 4)] == [2]  # a set of one
    assert [len(b) for b in NoSingletonBatchSampler(SequentialSampler(range(3)), 1)] == [1, 1, 1]


@pytest.mark.slow
def test_last_batch_of_one_trains_and_batch_one_at_a_1x1_map_is_refused(work_dir_0200, tmp_path, capfd):
    data = make_case("13-last-batch-of-one.py", tmp_path / "data")
    base = [os.path.join(work_dir_0200, "train.py"), "--train-ann-files", os.path.join(data, "three.json"),
            "--train-data-roots", AIRPORT_ROOT, "--epochs", "1", "--input-size", "32", "--workers", "0"]
    r = run_here([*base, "--gpu-num", "0", "--batch-size", "5", "--save-checkpoints-to", str(tmp_path / "a")])
    assert r.returncode == 0, r.stderr[-3000:]
    assert os.path.isfile(tmp_path / "a" / "epoch_1.pth")

    r = run_here([*base, "--gpu-num", "0", "--batch-size", "1", "--save-checkpoints-to", str(tmp_path / "b")])
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = error_lines(r.stderr)
    assert len(lines) == 1 and "--batch-size 1 at input 32x32" in lines[0] and "1x1" in lines[0], r.stderr

    # DDP (2 CPU processes, gloo): 6 items -> 3 per process, batch 2 -> 2 + 1 in each; the ImageNet line
    # (offline) is said once, not once per process (the ranks' lines come on file descriptor 2)
    capfd.readouterr()
    r = run_here([*base, "--gpu-num", "2", "--batch-size", "2", "--save-checkpoints-to", str(tmp_path / "c")])
    said = r.stderr + capfd.readouterr().err
    assert r.returncode == 0, said[-3000:]
    assert said.count("ImageNet weights of") <= 1, said
    assert said.count("training data (") == 1, said
    assert os.path.isfile(tmp_path / "c" / "epoch_1.pth")


@pytest.mark.slow
def test_gpu_num_over_the_cores_is_warned(work_dir_0200, tmp_path):
    """--gpu-num N on fewer CPU cores: one line says they oversubscribe (here the run then stops at the
    batch-of-one check, before any process starts)."""
    data = make_case("13-last-batch-of-one.py", tmp_path / "data")
    n = (os.cpu_count() or 1) + 2
    r = run_here([os.path.join(work_dir_0200, "train.py"), "--train-ann-files", os.path.join(data, "three.json"),
                  "--train-data-roots", AIRPORT_ROOT, "--input-size", "32", "--batch-size", "1", "--gpu-num", str(n),
                  "--save-checkpoints-to", str(tmp_path / "out")])
    if "GPU(s) are visible" in r.stderr:
        pytest.skip("CUDA machine: --gpu-num means GPUs there")
    assert r.stderr.count("oversubscribe") == 1, r.stderr
    assert f"--gpu-num {n} runs {n} CPU training processes on {os.cpu_count()} CPU core(s)" in r.stderr
    # far over the cores: refused (bounded), like --workers and visualize --jobs / --threads
    n = 4 * (os.cpu_count() or 1) + 1
    r = run_here([os.path.join(work_dir_0200, "train.py"), "--train-ann-files", os.path.join(data, "three.json"),
                  "--train-data-roots", AIRPORT_ROOT, "--gpu-num", str(n), "--save-checkpoints-to", str(tmp_path / "o")])
    assert r.returncode == 2 and len(error_lines(r.stderr)) == 1 and "bound of 4 per core" in r.stderr, r.stderr
    for tool, flag, value in (("train.py", "--workers", "100000"), ("visualize.py", "--jobs", "100000"),
                              ("visualize.py", "--threads", "100000")):
        r = run_here([os.path.join(work_dir_0200, tool), flag, value])
        assert r.returncode == 2 and f"argument {flag}: '{value}': must be between" in r.stderr, r.stderr


# -- 15.9 and 13: bounded sizes, refused flag combinations ------------------------------------------------------

@pytest.mark.slow
def test_export_bounds_derived_sizes_and_refuses_an_unused_aspect(work_dir_0200, random_snapshot, tmp_path):
    export = os.path.join(work_dir_0200, "export.py")
    out = str(tmp_path / "ir")
    for size, aspect, wanted in (("640x", "1:1000", "640x640000"), ("1000x", "1:9", "1000x9024")):
        r = run_here([export, "--load-weights", random_snapshot, "--save-model-to", out, "--input-size", size,
                      "--aspect", aspect])
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
        lines = error_lines(r.stderr)
        assert len(lines) == 1 and wanted in lines[0] and "8192" in lines[0], r.stderr
        assert not os.path.exists(out)
    r = run_here([export, "--load-weights", random_snapshot, "--save-model-to", out, "--input-size", "640",
                  "--aspect", "4:3"])
    assert r.returncode == 2 and "--aspect 4:3 is only for --input-size Wx" in r.stderr, r.stderr[-2000:]
    assert len(error_lines(r.stderr)) == 1 and not os.path.exists(out)


def test_deployment_sizes_from_frames_are_bounded():
    """The same bound where the height comes from the frames (eval.py / cluster_anchors --input-size Wx)."""
    from ote_detection.inference.deploy import deployment_input_size
    from ote_detection.utils.errors import OteError
    assert deployment_input_size((1280, None), frame_hw=(1080, 1920)) == (1280, 736)
    with pytest.raises(OteError, match="8192"):
        deployment_input_size((1280, None), frame_hw=(10000, 100))
    with pytest.raises(OteError, match="between 32 and 8192"):
        deployment_input_size((9000, 9000))


@pytest.mark.slow
def test_choose_input_size_without_sizes_is_one_line(random_snapshot, tmp_path):
    for run, sizes in ((run_tool, ","), (run_here, " , "), (run_here, ",".join(["256"] * 33))):
        r = run([os.path.join(REPO, "tools", "choose_input_size.py"), template_path(), random_snapshot,
                 "--val-ann-files", AIRPORT_ANN, "--val-data-roots", AIRPORT_ROOT, "--sizes", sizes])
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
        lines = error_lines(r.stderr)
        assert len(lines) == 1 and "--sizes" in lines[0], r.stderr


# -- 13: a path with a comma, repeated flags; AP > 64 px that is undefined ----------------------------------------

@pytest.mark.slow
def test_paths_with_commas_repeated_flags_and_undefined_ap64(work_dir_0200, random_snapshot, tmp_path):
    """eval.py: a data folder whose name holds a comma, given whole; the flag repeated (two files, the
    second in the comma folder); airport has no face > 64 px: the table says so, metrics.yaml keeps .nan."""
    need_shared("data", "airport")
    from conftest import copy_airport_subset
    comma = tmp_path / "cam 1,2"
    ann_a, _ = copy_airport_subset(str(comma), n=2)
    plain = tmp_path / "plain"
    src = json.load(open(AIRPORT_ANN))
    img = src["images"][5]
    os.makedirs(plain / "train")
    shutil.copyfile(os.path.join(AIRPORT_ROOT, img["file_name"]), plain / img["file_name"])
    ann_b = write_json(plain / "ann.json", dict(src, images=[img], annotations=[
        a for a in src["annotations"] if a["image_id"] == img["id"]]))
    metrics = tmp_path / "metrics.yaml"
    r = run_here([os.path.join(work_dir_0200, "eval.py"), "--load-weights", random_snapshot,
                  "--test-ann-files", ann_b, "--test-ann-files", ann_a,
                  "--test-data-roots", str(plain), "--test-data-roots", str(comma),
                  "--save-metrics-to", str(metrics), "--cache-dir", ""])
    assert r.returncode == 0, r.stderr[-3000:]
    row = next(line for line in r.stdout.splitlines() if line.startswith("AP for faces > 64x64"))
    assert "n/a (no face > 64 px)" in row and "nan" not in row, row
    entries = {e["key"]: e["value"] for e in yaml.safe_load(metrics.read_text())["metrics"]}
    assert entries["ap_64x64"] != entries["ap_64x64"]  # .nan kept
    faces = len(json.load(open(ann_a))["annotations"]) + len(json.load(open(ann_b))["annotations"])
    all_row = next(line for line in r.stdout.splitlines() if line.startswith("all "))
    assert all_row.split()[1] == str(faces), r.stdout  # both files were read
    # the comma form still works next to the repeated form: the same file twice, comma-separated, is read
    # twice (its image is then listed twice: one line)
    r = run_here([os.path.join(work_dir_0200, "eval.py"), "--load-weights", random_snapshot,
                  "--test-ann-files", f"{ann_b},{ann_b}", "--test-data-roots", f"{plain},{plain}", "--cache-dir", ""])
    assert r.returncode == 2 and "listed more than once" in r.stderr, r.stderr[-2000:]


@pytest.mark.slow
def test_batch_pixels_are_bounded_before_work(work_dir_0200, random_snapshot, tmp_path):
    """A batch of input pixels that would exhaust the machine: one line, before training or inference
    (the bound applies to the batch really formed: at most the data set's size)."""
    need_shared("data", "airport")
    r = run_here([os.path.join(work_dir_0200, "train.py"), "--train-ann-files", AIRPORT_ANN, "--train-data-roots",
                  AIRPORT_ROOT, "--save-checkpoints-to", str(tmp_path / "t"), "--input-size", "4096",
                  "--batch-size", "1000", "--gpu-num", "0"])
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    line = error_lines(r.stderr)[-1]
    assert "--batch-size 1000 (20 images a batch here) at input 4096x4096" in line and "128 Mpx" in line, line
    assert not os.path.exists(tmp_path / "t" / "epoch_1.pth")
    r = run_here([os.path.join(work_dir_0200, "eval.py"), "--load-weights", random_snapshot, "--test-ann-files",
                  AIRPORT_ANN, "--test-data-roots", AIRPORT_ROOT, "--input-size", "8192", "--batch-size", "4",
                  "--cache-dir", ""])
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "--batch-size 4 at input 8192x8192 is 268 Mpx a batch" in error_lines(r.stderr)[-1], r.stderr[-2000:]
