"""Issue 15.11 / 15.13: one line where a traceback was, run on the real tools.

* every output writer under a read-only folder or a full disk: the demo's video, image and folder sinks,
  export.py's IR, eval.py's PR charts, train.py's TensorBoard logs (a by-product: training goes on);
* train.py / compress.py given the other tool's checkpoint;
* compression_config.json: the whole file checked against its schema before any work;
* tiles of 0 pixels (eval.py --tile --tile-scale 1000);
* compression's console: no torch "No CUDA runtime" notice, the real range-initialisation image count;
  export.py --onnx without the ONNX optimizer's INFO lines.

Read-only folders and full disks are real tmpfs mounts (tests run as root, where chmod does not stop
writes); they skip with a message where mounting is not allowed.
"""

import contextlib
import copy
import hashlib
import json
import os
import runpy
import shutil

import cv2
import pytest

from conftest import AIRPORT_ROOT, copy_airport_subset, need_shared, run_here, run_tool, template_path, tmpfs
from ote_detection.utils.errors import OteError, run_cli

OMZ_0200 = ("models", "omz", "face-detection-0200", "FP16", "face-detection-0200.xml")




def fill(folder, leave=0):
    """Fill the tmpfs at ``folder`` up to ``leave`` bytes."""
    st = os.statvfs(folder)
    with open(os.path.join(folder, "filler"), "wb") as f, contextlib.suppress(OSError):
        f.write(b"\0" * max(0, st.f_bfree * st.f_frsize - leave))


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def in_process(work, tool, args, capfd):
    """A work dir script's ``main`` through ``run_cli``: (exit code, stdout, stderr)."""
    main = runpy.run_path(os.path.join(str(work), tool))["main"]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, [str(a) for a in args])
    out, err = capfd.readouterr()
    return exit_info.value.code or 0, out, err


def one_line(rc, err, *expected):
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert rc == 2 and "Traceback" not in err, err[-3000:]
    assert lines and lines[-1].startswith("error: "), err[-3000:]
    for text in expected:
        assert text in lines[-1], lines[-1]
    return lines[-1]


@pytest.fixture(scope="module")
def random_snapshot(tmp_path_factory):
    """A random-initialised 0200 snapshot at 64x64 (export and compression only need its structure)."""
    from ote_detection.apis.task import Task
    from ote_detection.artefacts.checkpoint import save_checkpoint
    task = Task(template_path())
    path = tmp_path_factory.mktemp("snap") / "random.pth"
    save_checkpoint(str(path), task.build_detector(), meta=dict(task.checkpoint_meta(), input_size=[64, 64]))
    return str(path)


@pytest.fixture(scope="module")
def frames3(tmp_path_factory):
    """3 airport frames (1920x1080 JPEG) in a folder, and one of them alone."""
    need_shared("data", "airport")
    folder = tmp_path_factory.mktemp("frames3")
    names = sorted(os.listdir(os.path.join(AIRPORT_ROOT, "val")))[:3]
    for name in names:
        shutil.copyfile(os.path.join(AIRPORT_ROOT, "val", name), folder / name)
    return folder, str(folder / names[0])


# --- the demo's outputs ---------------------------------------------------------------------------------

@pytest.mark.parametrize("output", ["video.mp4", "one.jpg", "folder"])
def test_demo_output_into_read_only_folder_is_one_line(output, work_dir_0200, frames3, tmp_path, capfd):
    folder, image = frames3
    with tmpfs(tmp_path / "ro", "size=1m,ro") as ro:
        video = image if output.endswith(".jpg") else folder
        rc, _, err = in_process(work_dir_0200, "visualize.py", [
            "--load-weights", need_shared(*OMZ_0200), "--video", video, "--output", os.path.join(ro, output),
            "--threads", "1", "--no-show"], capfd)
        line = one_line(rc, err, ro, "Read-only file system")
        assert output in line or "folder of the --output image" in line, line
        assert os.listdir(ro) == []


@pytest.mark.parametrize("output", ["video.mp4", "folder"])
def test_demo_output_onto_full_disk_is_one_line(output, work_dir_0200, frames3, tmp_path, capfd):
    """The video's writer (OpenCV) never reports a failed write: the finished file is read back; a folder
    keeps the frames written before the disk filled."""
    folder, _ = frames3
    with tmpfs(tmp_path / "small", "size=2m") as small:
        fill(small, leave=300 << 10)
        rc, _, err = in_process(work_dir_0200, "visualize.py", [
            "--load-weights", need_shared(*OMZ_0200), "--video", folder, "--output", os.path.join(small, output),
            "--threads", "1", "--no-show"], capfd)
        one_line(rc, err, "disk full while writing", os.path.join(small, output))
        left = sorted(set(os.listdir(small)) - {"filler"})
        if output == "video.mp4":
            assert left == [], left  # no half-written video, no temporary file
        else:
            written = os.listdir(os.path.join(small, output))
            assert len(written) < 3 and all(cv2.imread(os.path.join(small, output, n)) is not None for n in written)


# --- export.py ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_export_onnx_is_quiet_and_full_disk_keeps_the_old_ir(work_dir_0200, random_snapshot, tmp_path):
    """export.py --onnx prints no ONNX optimizer lines; onto a disk without room for the new IR it ends
    with one line (OpenVINO's 'basic_ios::clear: iostream error' named as a full disk), the old IR intact."""
    out = tmp_path / "exp"
    r = run_tool([str(work_dir_0200 / "export.py"), "--load-weights", random_snapshot, "--save-model-to", str(out),
                  "--onnx"])
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert len(lines) <= 2 and not any("unused nodes" in ln or "initializer" in ln for ln in lines), lines
    assert os.path.isfile(out / "model.onnx")
    size = sum(os.path.getsize(out / n) for n in ("model.xml", "model.bin", "export_info.yaml"))
    with tmpfs(tmp_path / "small", f"size={(size >> 20) + 3}m") as small:
        old = os.path.join(small, "exp")
        os.makedirs(old)
        for name in ("model.xml", "model.bin", "export_info.yaml"):
            shutil.copyfile(out / name, os.path.join(old, name))
        before = {n: sha(os.path.join(old, n)) for n in os.listdir(old)}
        r = run_here([str(work_dir_0200 / "export.py"), "--load-weights", random_snapshot, "--save-model-to", old])
        one_line(r.returncode, r.stderr, "disk full while writing", os.path.join(old, "model.xml"))
        assert {n: sha(os.path.join(old, n)) for n in os.listdir(old)} == before
        assert os.listdir(small) == ["exp"]


# --- eval.py: PR charts onto a full disk, 0-pixel tiles ---------------------------------------------------

def test_eval_pr_curves_onto_full_disk_and_tiny_tiles(work_dir_0200, tmp_path, capfd):
    ann, _ = copy_airport_subset(str(tmp_path / "d"), n=1)
    ev = ["--load-weights", need_shared(*OMZ_0200), "--test-ann-files", ann, "--test-data-roots", str(tmp_path / "d"),
          "--cache-dir", ""]
    rc, _, err = in_process(work_dir_0200, "eval.py", [*ev, "--tile", "--tile-scale", "1000"], capfd)
    one_line(rc, err, "--tile-scale 1000", "at least 8 px", "at most 32")
    with tmpfs(tmp_path / "small", "size=1m") as small:
        fill(small, leave=4 << 10)
        rc, _, err = in_process(work_dir_0200, "eval.py", [*ev, "--save-pr-curves", os.path.join(small, "pr")],
                                capfd)
        one_line(rc, err, "disk full while writing", ".png")
        assert os.listdir(os.path.join(small, "pr")) == []


# --- train.py / compress.py --------------------------------------------------------------------------------

def _train_args(data, out):
    ann, root = data
    return ["--train-ann-files", ann, "--train-data-roots", root, "--save-checkpoints-to", str(out),
            "--batch-size", "2", "--workers", "0", "--input-size", "64", "--epochs", "1"]


@pytest.fixture(scope="module")
def airport1(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("airport1"))
    ann, _ = copy_airport_subset(root, n=1)
    return ann, root


@pytest.mark.slow
def test_tensorboard_on_full_disk_costs_only_the_logs(work_dir_0200, airport1, tmp_path):
    with tmpfs(tmp_path / "small", "size=256k") as small:
        fill(small, leave=2 << 10)
        r = run_here([str(work_dir_0200 / "train.py"), *_train_args(airport1, tmp_path / "out"), "--epochs", "2",
                      "--tensorboard-dir", os.path.join(small, "tb")])
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    warned = [ln for ln in r.stderr.splitlines() if ln.startswith("tensorboard:")]
    assert len(warned) == 1 and "training goes on" in warned[0], r.stderr[-3000:]
    assert "epoch 2/2" in r.stderr and os.path.isfile(tmp_path / "out" / "epoch_2.pth")


@pytest.mark.slow
def test_compression_console_and_checkpoint_kinds(work_dir_0200, airport1, random_snapshot, tmp_path):
    """Quantization and sparsity on a 1-image set: no torch 'No CUDA runtime' line, range initialisation on
    the 1 real image (a warning below the config's 10); then each tool refuses the other's checkpoint with
    one line saying which command continues it."""
    cfg = tmp_path / "cc.json"
    with open(os.path.join(work_dir_0200, "compression_config.json"), encoding="utf-8") as f:
        data = json.load(f)
    data["nncf_sparsity"]["total_epochs"] = 1
    cfg.write_text(json.dumps(data))
    outs = {}
    # torch's 'No CUDA runtime' line is logged when a new process first loads NNCF's extension: the first run
    # in a process of its own
    for part, run in (("quantization", run_tool), ("sparsity", run_here)):
        out = tmp_path / part
        r = run([str(work_dir_0200 / "compress.py"), *_train_args(airport1, out), "--load-weights",
                 random_snapshot, f"--nncf-{part}", "--compression-config", str(cfg)])
        assert r.returncode == 0, r.stderr[-3000:]
        assert "No CUDA runtime" not in r.stderr + r.stdout, r.stderr[-3000:]
        outs[part] = out
        if part == "quantization":
            assert "range initialisation on 1 training image(s)" in r.stderr, r.stderr[-3000:]
            assert "gives 1 image(s) for range initialisation, fewer than num_init_samples 10" in r.stderr
    latest = str(outs["quantization"] / "latest.pth")
    r = run_here([str(work_dir_0200 / "train.py"), *_train_args(airport1, tmp_path / "t"), "--resume-from", latest])
    one_line(r.returncode, r.stderr, "a compress.py checkpoint", f"compress.py --resume-from {latest} "
             "--nncf-quantization")
    r = run_here([str(work_dir_0200 / "train.py"), *_train_args(airport1, tmp_path / "t2"), "--load-weights",
                  str(outs["sparsity"] / "latest.pth")])
    one_line(r.returncode, r.stderr, "a compress.py checkpoint", "--nncf-sparsity")
    r = run_here([str(work_dir_0200 / "compress.py"), *_train_args(airport1, tmp_path / "c"), "--nncf-quantization",
                  "--resume-from", random_snapshot])
    one_line(r.returncode, r.stderr, "not a compress.py checkpoint", f"--load-weights {random_snapshot}")


BAD_VALUES = [
    ("nncf_quantization.total_epochs", lambda c: c["nncf_quantization"].update(total_epochs="two"),
     'nncf_quantization.total_epochs = "two": must be an integer >= 1'),
    ("nncf_quantization.optimizer.lr", lambda c: c["nncf_quantization"]["optimizer"].update(lr=-1),
     "nncf_quantization.optimizer.lr = -1: must be a number > 0"),
    ("pruning_target", lambda c: c["nncf_pruning"]["nncf_config"]["compression"][0]["params"].update(
        pruning_target=1.5), "params.pruning_target = 1.5: must be a number >= 0 and < 1"),
    ("misspelt key", lambda c: c["nncf_pruning"]["nncf_config"]["compression"][0]["params"].update(
        pruning_targt=0.5), "params.pruning_targt: not a key this tool reads"),
    ("lr_config.step", lambda c: c["nncf_pruning"]["lr_config"].update(step=[40, "60"]),
     'nncf_pruning.lr_config.step[1] = "60": must be an integer >= 1'),
    ("sparsity levels", lambda c: c["nncf_sparsity"]["nncf_config"]["compression"][0]["params"].update(
        multistep_steps=[10]), "needs one entry more than multistep_steps"),
    ("sample_size", lambda c: c["base"]["nncf_config"]["input_info"].update(sample_size=[1, 3, 0, 256]),
     "sample_size[2] = 0: must be an integer >= 1"),
    ("bn samples", lambda c: c["nncf_quantization"]["nncf_config"]["compression"][0]["initializer"][
        "batchnorm_adaptation"].update(num_bn_adaptation_samples=-3), "must be an integer >= 0"),
]


@pytest.mark.parametrize("name,change,expected", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_compression_config_is_checked_whole_before_any_work(name, change, expected, work_dir_0200, airport1,
                                                            tmp_path):
    """A bad value anywhere in the file, also in a part that is not enabled and under a given --epochs, is one
    line naming the file and the key, before the weights are even read (--load-weights names a missing
    file: that error would come first otherwise)."""
    from ote_detection.apis.compress import compress
    with open(os.path.join(work_dir_0200, "compression_config.json"), encoding="utf-8") as f:
        data = json.load(f)
    bad = copy.deepcopy(data)
    change(bad)
    cfg = tmp_path / "cc.json"
    cfg.write_text(json.dumps(bad))
    ann, root = airport1
    with pytest.raises(OteError) as err:
        compress(str(work_dir_0200 / "template.yaml"), ann, root, str(tmp_path / "out"), nncf_quantization=True,
                 load_weights=str(tmp_path / "missing.pth"), compression_config=str(cfg), epochs=1)
    assert str(err.value).startswith(f"{cfg}: ") and expected in str(err.value), str(err.value)


@pytest.mark.slow
def test_compression_config_error_from_the_tool(work_dir_0200, airport1, random_snapshot, tmp_path):
    """compress.py itself, with --epochs given: 'two' used to pass unnoticed there."""
    with open(os.path.join(work_dir_0200, "compression_config.json"), encoding="utf-8") as f:
        data = json.load(f)
    data["nncf_quantization"]["total_epochs"] = "two"
    cfg = tmp_path / "cc.json"
    cfg.write_text(json.dumps(data))
    r = run_here([str(work_dir_0200 / "compress.py"), *_train_args(airport1, tmp_path / "o"), "--load-weights",
                  random_snapshot, "--nncf-quantization", "--compression-config", str(cfg)])
    one_line(r.returncode, r.stderr, str(cfg), "nncf_quantization.total_epochs")
    assert not os.path.exists(tmp_path / "o" / "latest.pth")


def test_every_template_config_passes_the_schema():
    from ote_detection.compression.config import read_compression_config
    folder = os.path.dirname(os.path.dirname(template_path()))
    names = sorted(n for n in os.listdir(folder) if os.path.isfile(os.path.join(folder, n, "compression_config.json")))
    assert len(names) >= 6
    for name in names:
        read_compression_config(os.path.join(folder, name, "compression_config.json"))


@pytest.mark.slow
def test_instantiate_into_read_only_or_full_disk_is_one_line(tmp_path):
    from conftest import REPO
    tool = os.path.join(REPO, "tools", "instantiate_template.py")
    with tmpfs(tmp_path / "ro", "size=1m,ro") as ro:
        r = run_tool([tool, template_path(), os.path.join(ro, "wd"), "--do-not-load-snapshot"])
        one_line(r.returncode, r.stderr, os.path.join(ro, "wd"), "not writable (Read-only file system)")
    with tmpfs(tmp_path / "small", "size=20k") as small:
        r = run_tool([tool, template_path(), os.path.join(small, "wd"), "--do-not-load-snapshot"])
        one_line(r.returncode, r.stderr, os.path.join(small, "wd"), "disk full while writing")


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_metrics_into_a_folder_that_refuses_files_names_the_problem():
    """``--save-metrics-to /proc/m.yaml``: /proc exists but takes no new files (ENOENT on create); the line
    says so instead of 'No such file or directory' about a folder that is there."""
    from ote_detection.utils.fileio import check_writable_file
    with pytest.raises(OteError) as exc:
        check_writable_file("/proc/m.yaml", "--save-metrics-to file")
    text = str(exc.value)
    assert text.startswith("/proc: folder of the --save-metrics-to file is not writable") and "\n" not in text
    assert "No such file" not in text and "the folder exists, but its file system allows no new files" in text
