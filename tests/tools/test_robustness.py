"""Nothing lost, nothing silently wrong (issue 8, and 7.7 / 7.8): the real tools on real files.

Each rule runs the work dir's own scripts (in this process through ``run_cli`` where that is enough,
as separate processes where a second process, a lock or ``kill -9`` is the point) on real airport and
WIDER FACE images at 64x64, one epoch. Read-only folders and full disks are real tmpfs mounts (tests
run as root, where chmod does not stop writes); they skip with a message where mounting is not allowed.
"""

import contextlib
import hashlib
import io
import json
import logging
import os
import random
import runpy
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
import yaml

from conftest import REPO, copy_airport_subset, need_shared, run_tool, tmpfs, write_json
from ote_detection.data.coco import load_coco_files
from ote_detection.artefacts.checkpoint import load_checkpoint_file, save_checkpoint
from ote_detection.inference.detection_cache import DetectionCache
from ote_detection.artefacts.formats import check_ir_belongs, read_ir_files
from ote_detection.utils.errors import OteError, run_cli
from ote_detection.utils.fileio import atomic_torch_save, atomic_write_text, file_mode, recover_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = ["--input-size", "64", "--workers", "0"]
WIDER_TXT = ("data", "wider_val_gt", "wider_face_val_bbx_gt.txt")
# WIDER val images whose only box in the official text has zero size: our converter keeps it
ZERO_BOX_IMAGES = ["0_Parade_Parade_0_275.jpg", "37_Soccer_soccer_ball_37_281.jpg",
                   "50_Celebration_Or_Party_houseparty_50_715.jpg", "7_Cheering_Cheering_7_426.jpg"]


def cli(work, tool, args, capsys, caplog=None):
    """Run a work-dir script's ``main`` here through ``run_cli``: (exit code, stdout, stderr + log)."""
    main = runpy.run_path(os.path.join(work, tool))["main"]
    if caplog is not None:
        caplog.set_level(logging.INFO)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, [str(a) for a in args])
    out = capsys.readouterr()
    logs = caplog.text if caplog is not None else ""
    if caplog is not None:
        caplog.clear()
    return exit_info.value.code or 0, out.out, out.err + logs


def one_line_error(rc, err, *expected):
    assert rc == 2, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert "error:" in last, err[-2000:]
    for text in expected:
        assert text in last, last
    return last


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def folder_state(folder):
    return {n: sha(os.path.join(folder, n)) for n in sorted(os.listdir(folder)) if not n.startswith(".")}




@contextlib.contextmanager
def read_only_dir(path):
    """A folder that refuses writes, also to root: a read-only tmpfs (or chmod 555 when not root)."""
    if os.geteuid() != 0:
        os.makedirs(path, exist_ok=True)
        os.chmod(path, 0o555)
        try:
            yield str(path)
        finally:
            os.chmod(path, 0o755)
        return
    with tmpfs(path, "size=1m,ro") as p:
        yield p


# --- data: WIDER FACE converted by our own tool (with zero-size boxes) -------------------------------

@pytest.fixture(scope="module")
def wider9(tmp_path_factory):
    """tools/wider_to_coco.py on the official val text, restricted to the shared images: 5 real WIDER
    images + 4 names whose only official box has zero size (linked to real airport frames)."""
    txt = need_shared(*WIDER_TXT)
    val5 = need_shared("data", "wider_val5", "images")
    root = tmp_path_factory.mktemp("wider9")
    images = root / "images"
    images.mkdir()
    for name in os.listdir(val5):
        os.symlink(os.path.join(val5, name), images / name)
    for i, name in enumerate(ZERO_BOX_IMAGES):
        os.symlink(os.path.join(need_shared("data", "airport"), "train", f"image_00000{i}.jpg"), images / name)
    out = root / "wider9.json"
    r = run_tool([os.path.join(REPO, "tools", "wider_to_coco.py"), txt, str(images), str(out), "--skip-missing"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "zero-size kept: 4" in r.stderr
    return str(out), str(images)


@pytest.fixture(scope="module")
def trained(work_dir_0200, wider9, tmp_path_factory):
    """A real train.py process (train and val on wider9, 1 epoch) and, while it holds its output folder, a
    second training into the same folder (the work dir's train.py, run here): it must get the lock error."""
    ann, root = wider9
    out = str(tmp_path_factory.mktemp("run") / "out")
    args = ["--train-ann-files", ann, "--train-data-roots", root, "--val-ann-files", ann, "--val-data-roots", root,
            "--save-checkpoints-to", out, "--epochs", "1", "--batch-size", "4", *FAST]
    first = subprocess.Popen([sys.executable, os.path.join(work_dir_0200, "train.py"), *args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = os.path.join(out, ".ote.lock")
    deadline = time.time() + 300
    while not os.path.exists(lock) and first.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    second = None
    if first.poll() is None:
        main = runpy.run_path(os.path.join(work_dir_0200, "train.py"))["main"]
        err = io.StringIO()
        with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_info:
            run_cli(main, args)
        second = (exit_info.value.code, err.getvalue())
    stdout, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-3000:]
    return {"out": out, "rc": first.returncode, "stderr": stderr, "second": second}


@pytest.mark.slow
def test_two_trainings_into_one_folder(trained):
    assert trained["rc"] == 0, trained["stderr"][-3000:]
    assert trained["second"] is not None, "the first training ended before its lock could be seen"
    one_line_error(*trained["second"], "is being written by process", "(train.py)")
    assert sorted(os.listdir(trained["out"])) == ["epoch_1.pth", "latest.pth"]


@pytest.mark.slow
def test_zero_size_boxes_of_our_converter_train_and_evaluate(trained, wider9):
    """7.7: the official text's zero-size boxes train (skipped, counted, said once) and evaluate."""
    err = trained["stderr"]
    assert "4 box(es) of zero width or height" in err and "not used for training" in err
    assert err.count("of zero width or height") == 1 and "narrower or shorter than 1 pixel" not in err  # once
    ap = load_checkpoint_file(os.path.join(trained["out"], "latest.pth"))["meta"]["metrics"]["ap"]
    assert np.isfinite(ap)
    # COCO AP keeps OTE's semantics (pycocotools on the file as it is): same number as pycocotools directly
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    from ote_detection.evaluation import evaluate_detections
    ann, root = wider9
    coco = load_coco_files(ann, root)
    rng = np.random.default_rng(0)
    dets, rows = {}, []
    by_path = {img["path"]: img for img in coco["images"]}
    raw = json.load(open(ann))
    raw_id = {os.path.join(root, img["file_name"]): img["id"] for img in raw["images"]}
    for path, img in by_path.items():  # each gt box jittered + a zero-area-gt image gets one false positive
        boxes = [a["bbox"] for a in coco["annotations"] if a["image_id"] == img["id"]]
        d = [[x + rng.normal(0, 2), y + rng.normal(0, 2), x + w + rng.normal(0, 2), y + h + rng.normal(0, 2),
              rng.uniform(0.1, 1)] for x, y, w, h in boxes if w >= 1 and h >= 1] or [[10, 10, 60, 60, 0.5]]
        dets[img["id"]] = np.array(d, np.float32)
        rows += [[raw_id[path], r[0], r[1], r[2] - r[0], r[3] - r[1], r[4], 1] for r in d]
    ours = evaluate_detections(coco, dets, ["ap"])["ap"]
    gt = COCO()
    gt.dataset = raw
    with contextlib.redirect_stdout(open(os.devnull, "w")):
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(np.array(rows, np.float64)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ours == pytest.approx(100 * ev.stats[0], abs=1e-6)
    # a negative size stays one line
    bad = json.load(open(ann))
    bad["annotations"][0]["bbox"][2] = -3
    with pytest.raises(OteError, match="negative size"):
        load_coco_files(write_json(os.path.join(os.path.dirname(ann), "neg.json"), bad), root)


@pytest.mark.slow
def test_previous_run_is_never_destroyed(trained, work_dir_0200, wider9, tmp_path, capsys, caplog):
    ann, root = wider9
    out = trained["out"]
    shutil.copyfile(os.path.join(out, "epoch_1.pth"), os.path.join(out, "epoch_6.pth"))  # a longer earlier run
    before = folder_state(out)
    base = ["--train-ann-files", ann, "--train-data-roots", root, "--save-checkpoints-to", out, "--epochs", "1",
            "--batch-size", "4", *FAST]
    rc, _, err = cli(work_dir_0200, "train.py", base, capsys, caplog)
    one_line_error(rc, err, "holds the checkpoints of an earlier run", "--resume-from", "--overwrite")
    # resuming from epoch 1 would overwrite epoch_6 (and latest): refused too
    rc, _, err = cli(work_dir_0200, "train.py", base[:-6] + ["--epochs", "2", "--resume-from",
                                                             os.path.join(out, "epoch_1.pth"), *FAST],
                     capsys, caplog)
    one_line_error(rc, err, "would overwrite", "epoch_6.pth")
    assert folder_state(out) == before
    # another process holds the folder (killed later with -9): lock error, then its stale lock is taken over
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {REPO!r})
        from ote_detection.utils.fileio import OutputLock
        OutputLock({out!r}, "compress.py", inside=True).acquire()
        print("locked", flush=True)
        time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    rc, _, err = cli(work_dir_0200, "train.py", base + ["--overwrite"], capsys, caplog)
    one_line_error(rc, err, f"is being written by process {holder.pid} (compress.py)")
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert folder_state(out) == before
    # --overwrite removes the old run first; an explicit 0 is used as given (learning rate 0)
    rc, _, err = cli(work_dir_0200, "train.py", base + ["--overwrite", "--base-learning-rate", "0"], capsys, caplog)
    assert rc == 0, err[-3000:]
    assert f"taking over the lock left by process {holder.pid}" in err
    assert "removed 3 checkpoint(s)" in err
    assert sorted(os.listdir(out)) == ["epoch_1.pth", "latest.pth"]
    ckpt = load_checkpoint_file(os.path.join(out, "latest.pth"))
    assert ckpt["optimizer"]["param_groups"][0]["initial_lr"] == 0.0
    assert not [n for n in os.listdir(out) if n.startswith(".")]  # no lock, no temporary file left
    # outputs are ordinary files: 0666 minus the umask (not mkstemp's 0600)
    assert os.stat(os.path.join(out, "latest.pth")).st_mode & 0o777 == file_mode()


# --- arguments --------------------------------------------------------------------------------------

def test_arguments_mean_what_they_say(work_dir_0200, tmp_path, capsys):
    ann, _ = copy_airport_subset(str(tmp_path), n=2)
    a_file = str(tmp_path / "ann.json")
    train = ["--train-ann-files", ann, "--train-data-roots", str(tmp_path), "--save-checkpoints-to",
             str(tmp_path / "o")]
    cases = {
        "train.py": [["--epochs", "0"], ["--epochs", "-3"], ["--epochs", "1.5"], ["--batch-size", "0"],
                     ["--batch-size", "-2"], ["--base-learning-rate", "-0.1"], ["--base-learning-rate", "nan"],
                     ["--workers", "-1"], ["--gpu-num", "-1"], ["--input-size", "0x0"], ["--input-size", "-64"],
                     ["--input-size", "1"], ["--input-size", "64x64x64"], ["--seed", "-1"],  # 64x: a width (issue 26)
                     ["--tensorboard-dir", a_file], ["--resume-from", str(tmp_path / "missing.pth")],
                     ["--save-checkpoints-to", a_file], ["--save-checkpoints-to", os.path.join(a_file, "sub")]],
        "eval.py": [["--batch-size", "0"], ["--load-weights", str(tmp_path / "missing.pth")],
                    ["--save-metrics-to", str(tmp_path)], ["--wider-dir", a_file]],
        "export.py": [["--save-model-to", a_file], ["--load-weights", str(tmp_path)]],
    }
    base = {"train.py": train,
            "eval.py": ["--load-weights", a_file, "--test-ann-files", ann, "--test-data-roots", str(tmp_path)],
            "export.py": ["--load-weights", a_file, "--save-model-to", str(tmp_path / "e")]}
    for tool, tool_cases in cases.items():
        for extra in tool_cases:
            rc, _, err = cli(work_dir_0200, tool, base[tool] + extra, capsys)
            assert rc == 2 and "Traceback" not in err, (tool, extra, err[-1500:])
            last = err.strip().splitlines()[-1]
            assert f"error: argument {extra[0]}" in last, (tool, extra, last)
    # a text file as a checkpoint: one line, and never torch's advice to unpickle it with weights_only=False
    rc, _, err = cli(work_dir_0200, "train.py", train + ["--resume-from", a_file], capsys)
    one_line_error(rc, err, "not a PyTorch checkpoint (a text file)")
    assert "weights_only" not in err


# --- before epoch 1 ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_failures_are_found_before_any_compute(work_dir_0200, trained, tmp_path, capsys):
    train_dir, val_dir = tmp_path / "train", tmp_path / "val"
    ann, data = copy_airport_subset(str(train_dir), n=2)
    val_ann, val_data = copy_airport_subset(str(val_dir), n=3)
    victim = os.path.join(val_dir, val_data["images"][2]["file_name"])
    with open(victim, "rb") as f:
        jpeg = f.read()
    with open(victim, "wb") as f:
        f.write(jpeg[: len(jpeg) * 2 // 3])
    base = ["--train-ann-files", ann, "--train-data-roots", str(train_dir), "--epochs", "1", "--batch-size", "2",
            *FAST]
    start = time.time()
    rc, _, err = cli(work_dir_0200, "train.py", base + ["--val-ann-files", val_ann, "--val-data-roots", str(val_dir),
                                                        "--save-checkpoints-to", str(tmp_path / "o")], capsys)
    one_line_error(rc, err, "truncated JPEG", os.path.basename(victim))
    assert "epoch 1" not in err and not os.listdir(tmp_path / "o")
    snapshot = os.path.join(trained["out"], "latest.pth")
    with read_only_dir(tmp_path / "ro") as ro:
        rc, _, err = cli(work_dir_0200, "train.py", base + ["--save-checkpoints-to", os.path.join(ro, "out")], capsys)
        one_line_error(rc, err, "not writable")
        assert "epoch 1" not in err
        rc, _, err = cli(work_dir_0200, "train.py", base + ["--save-checkpoints-to", str(tmp_path / "o2"),
                                                            "--tensorboard-dir", ro], capsys)
        one_line_error(rc, err, "--tensorboard-dir folder is not writable")
        rc, _, err = cli(work_dir_0200, "export.py", ["--load-weights", snapshot, "--save-model-to",
                                                       os.path.join(ro, "export")], capsys)
        one_line_error(rc, err, "not writable")
        rc, out, err = cli(work_dir_0200, "eval.py", ["--load-weights", snapshot, "--test-ann-files", ann,
                                                       "--test-data-roots", str(train_dir), "--cache-dir", "",
                                                       "--save-metrics-to", os.path.join(ro, "m.yaml")], capsys)
        one_line_error(rc, err, "not writable")
        assert "AP" not in out  # refused before computing, not after printing the table
    assert time.time() - start < 120


# --- data that would give a silently wrong result ----------------------------------------------------

@pytest.mark.slow
def test_data_that_would_be_silently_wrong_is_refused(tmp_path, work_dir_0200, trained, capsys, caplog):
    def bad(change, *expected):
        folder = tmp_path / f"case{len(os.listdir(tmp_path))}"
        ann, data = copy_airport_subset(str(folder), n=3)
        change(data)
        write_json(ann, data)
        with pytest.raises(OteError) as err:
            load_coco_files(ann, str(folder))
        for text in expected:
            assert text in str(err.value), str(err.value)
        return ann, str(folder)

    bad(lambda d: d["images"].append(dict(d["images"][0], id=99)), "1 image(s) listed more than once",
        "image_000000.jpg")
    bad(lambda d: d["images"].append(dict(d["images"][1])), "image id(s) used more than once")
    bad(lambda d: d["annotations"][1]["bbox"].__setitem__(2, float("nan")), "1 annotation(s) without a valid bbox",
        "NaN")
    bad(lambda d: d["annotations"][0]["bbox"].__setitem__(0, "12"), "without a valid bbox")
    bad(lambda d: [a.pop("category_id") for a in d["annotations"][:2]], "2 annotation(s) without category_id")
    bad(lambda d: d["annotations"][0].update(category_id=7), "category_id not in 'categories'")
    bad(lambda d: d["annotations"].append(dict(d["annotations"][0])), "annotation id(s) used more than once")
    bad(lambda d: d["images"][0].update(width=960, height=540), "differ from the image file",
        "960x540 in the file, 1920x1080 real")
    bad(lambda d: d["annotations"][0].update(bbox=[2000, 10, 20, 20]), "lie outside their image")
    bad(lambda d: d["annotations"][0].update(image_id=12345), "refer to unknown images")
    ann, root = bad(lambda d: d.update(annotations=[]), "no face box in 3 image(s)")
    # the same through the tools: a validation / test set without faces is refused, not AP nan + exit 0
    rc, _, err = cli(work_dir_0200, "eval.py", ["--load-weights", os.path.join(trained["out"], "latest.pth"),
                                                "--test-ann-files", ann, "--test-data-roots", root, "--cache-dir",
                                                ""], capsys)
    one_line_error(rc, err, "no face box")
    # the same image in two merged files
    a1, _ = copy_airport_subset(str(tmp_path / "m1"), n=2)
    with pytest.raises(OteError, match="listed more than once"):
        load_coco_files(f"{a1},{a1}", f"{tmp_path / 'm1'},{tmp_path / 'm1'}")
    # warned with a count and an example, not refused: exact duplicate boxes (WIDER FACE's val has one)
    ann, data = copy_airport_subset(str(tmp_path / "dupbox"), n=1)
    data["annotations"].append(dict(data["annotations"][0], id=999))
    write_json(ann, data)
    with caplog.at_level("WARNING"):
        load_coco_files(ann, str(tmp_path / "dupbox"))
    assert "1 box(es) listed twice on the same image, e.g. train/image_000000.jpg" in caplog.text


# --- artefacts that must belong together; atomic exports; caches -------------------------------------

WRITER = textwrap.dedent("""
    import hashlib, os, sys, yaml
    sys.path.insert(0, {repo!r})
    from ote_detection.utils.fileio import atomic_dir
    out, n = sys.argv[1], 0
    while True:
        n += 1
        with atomic_dir(out) as tmp:
            blob = os.urandom(200000)
            for name, data in (("model.bin", blob), ("model.xml", hashlib.sha256(blob).hexdigest().encode() * 50)):
                with open(os.path.join(tmp, name), "wb") as f:
                    f.write(data)
            sums = {{name: hashlib.sha256(open(os.path.join(tmp, name), "rb").read()).hexdigest()
                    for name in ("model.xml", "model.bin")}}
            with open(os.path.join(tmp, "export_info.yaml"), "w") as f:
                yaml.safe_dump({{"template": "face-detection-0200", "sha256": sums, "n": n}}, f)
        print(n, flush=True)
""")


@pytest.mark.slow
def test_folder_swap_survives_kill_9_and_readers_never_see_a_mix(tmp_path):
    """atomic_dir as export uses it: kill -9 at random points leaves the old or the new complete set, the
    next writer removes the leftovers, and a reader racing the swaps always reads one set."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(repo=REPO))
    out = str(tmp_path / "export")
    rng = random.Random(8)
    for _ in range(12):
        proc = subprocess.Popen([sys.executable, str(script), out], stdout=subprocess.PIPE, text=True)
        if rng.random() < 0.5:
            proc.stdout.readline()  # at least one set written: later kills hit a swap of a real old set
        time.sleep(rng.uniform(0.0, 0.3))
        proc.kill()
        proc.wait()
        recover_dir(out)  # what the next export does first
        if os.path.exists(out):
            xml, binf, info = read_ir_files(os.path.join(out, "model.xml"))
            assert hashlib.sha256(binf).hexdigest() == info["sha256"]["model.bin"]
        leftovers = [n for n in os.listdir(tmp_path) if n.startswith(".export")]
        assert not leftovers, leftovers
    # a reader racing a writer that swaps continuously
    proc = subprocess.Popen([sys.executable, str(script), out], stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()
    reads, deadline = 0, time.time() + 1.5
    try:
        while time.time() < deadline:
            xml, binf, info = read_ir_files(os.path.join(out, "model.xml"))  # raises on a mix
            assert xml.startswith(hashlib.sha256(binf).hexdigest().encode())
            reads += 1
    finally:
        proc.kill()
        proc.wait()
    assert reads > 10


@pytest.mark.slow
def test_export_kill_9_ir_belongs_and_cache_is_disposable(work_dir_0200, trained, wider9, tmp_path, capsys,
                                                          caplog):
    ann, root = wider9
    snapshot = os.path.join(trained["out"], "latest.pth")
    out = str(tmp_path / "export")
    rc, _, err = cli(work_dir_0200, "export.py", ["--load-weights", snapshot, "--save-model-to", out], capsys)
    assert rc == 0, err[-3000:]
    old = folder_state(out)
    assert all(os.stat(os.path.join(out, n)).st_mode & 0o777 == file_mode() for n in old)
    rng = random.Random(7)
    for _ in range(2):  # kill -9 a real export.py at a random point
        proc = subprocess.Popen([sys.executable, os.path.join(work_dir_0200, "export.py"), "--load-weights", snapshot,
                                 "--save-model-to", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 8.0))
        proc.kill()
        proc.wait()
        if folder_state(out) != old:  # the kill came after the swap: then the new set is complete
            read_ir_files(out)
    # the next export takes over the killed one's lock, removes its temporary folder, swaps in a new set
    rc, _, err = cli(work_dir_0200, "export.py", ["--load-weights", os.path.join(trained["out"], "epoch_1.pth"),
                                                   "--save-model-to", out], capsys, caplog)
    assert rc == 0, err[-3000:]
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".export")]
    from ote_detection.apis.task import Task
    info = check_ir_belongs(os.path.join(out, "model.xml"), Task(os.path.join(work_dir_0200, "template.yaml")))
    assert info["source_snapshot"].endswith("epoch_1.pth")
    cache = str(tmp_path / "cache")
    ev = ["--test-ann-files", ann, "--test-data-roots", root, "--cache-dir", cache]
    rc, stdout, err = cli(work_dir_0200, "eval.py", ["--load-weights", os.path.join(out, "model.bin"), *ev], capsys,
                          caplog)
    assert rc == 0, err[-3000:]
    # every cache entry that cannot be read is recomputed with a warning
    entries = [os.path.join(cache, n) for n in os.listdir(cache)]
    assert entries
    for damage in (lambda p: open(p, "r+b").truncate(100), lambda p: open(p, "wb").write(b"garbage"),
                   lambda p: np.savez(open(p, "wb"), d0=np.zeros((2, 2), np.int64))):
        damage(entries[0])
        rc, stdout2, err = cli(work_dir_0200, "eval.py", ["--load-weights", os.path.join(out, "model.bin"), *ev],
                               capsys, caplog)
        assert rc == 0 and "unreadable" in err and "recomputing" in err, err[-3000:]
        assert stdout2 == stdout
    # artefacts that do not belong together: a model.bin of another export, an IR of another template
    mixed = str(tmp_path / "mixed")
    shutil.copytree(out, mixed)
    with open(os.path.join(mixed, "model.bin"), "r+b") as f:
        f.seek(1000)
        f.write(b"\x00" * 64)
    other = str(tmp_path / "other")
    shutil.copytree(out, other)
    info = yaml.safe_load(open(os.path.join(other, "export_info.yaml")))
    info["template"] = "face-detection-0207"
    yaml.safe_dump(info, open(os.path.join(other, "export_info.yaml"), "w"))
    for folder, expected in ((mixed, "does not belong to this export"),
                             (other, "IR of template 'face-detection-0207'")):
        rc, _, err = cli(work_dir_0200, "eval.py", ["--load-weights", os.path.join(folder, "model.xml"), *ev],
                         capsys)
        one_line_error(rc, err, expected)


def test_cache_folder_that_cannot_be_written_only_costs_the_cache(tmp_path, caplog):
    with read_only_dir(tmp_path / "ro") as ro:
        cache = DetectionCache(os.path.join(ro, "cache"))
        with caplog.at_level("WARNING"):
            cache.save("k", [np.zeros((1, 6), np.float32)])
        assert "not saved" in caplog.text
        assert cache.load("k") is None


# --- full disk ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_full_disk_is_one_line_and_keeps_the_old_file(tmp_path, work_dir_0200, trained, capsys):
    from ote_detection.apis.task import Task
    with tmpfs(tmp_path / "small", "size=2m") as small:
        latest = os.path.join(small, "latest.pth")
        atomic_torch_save({"meta": {"epoch": 1}, "state_dict": {"w": torch.zeros(10)}}, latest)
        before = sha(latest)
        detector = Task(os.path.join(work_dir_0200, "template.yaml")).build_detector()  # 7 MB of weights
        with pytest.raises(OteError, match="disk full") as err:
            save_checkpoint(latest, detector)
        assert latest in str(err.value)
        assert sha(latest) == before and os.listdir(small) == ["latest.pth"]
        with open(os.path.join(small, "filler"), "wb") as f:  # fill the rest
            with contextlib.suppress(OSError):
                f.write(b"\0" * (4 << 20))
        with pytest.raises(OteError, match="disk full"):
            atomic_write_text(os.path.join(small, "metrics.yaml"), "x" * 100000)
        ann, _ = copy_airport_subset(str(tmp_path / "d"), n=1)
        rc, _, err = cli(work_dir_0200, "eval.py", ["--load-weights", os.path.join(trained["out"], "latest.pth"),
                                                    "--test-ann-files", ann, "--test-data-roots", str(tmp_path / "d"),
                                                    "--cache-dir", "", "--save-metrics-to",
                                                    os.path.join(small, "metrics.yaml")], capsys)
        one_line_error(rc, err, "disk full", "metrics.yaml")
        assert sorted(os.listdir(small)) == ["filler", "latest.pth"]


# --- WIDER folders (7.8) -----------------------------------------------------------------------------

@pytest.mark.slow
def test_wider_dir_accepts_root_val_or_images_folder(tmp_path, work_dir_0200, trained, capsys, caplog):
    from ote_detection.formats.wider import WIDER_GT_FILES, find_wider_gt_dir, find_wider_images_dir
    val5 = need_shared("data", "wider_val5", "images")
    gt = need_shared("data", "wider_val_gt")

    def layout(name, gt_rel, nested=True):
        root = tmp_path / name
        images = root / "WIDER_val" / "images"
        for img in os.listdir(val5):
            event = img.split("_", 1)[0]
            event = {"0": "0--Parade", "11": "11--Meeting"}[event]
            dst = images / event if nested else images
            dst.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.join(val5, img), dst / img)
        gt_dir = root.joinpath(*gt_rel)
        gt_dir.mkdir(parents=True, exist_ok=True)
        for f in WIDER_GT_FILES:
            os.symlink(os.path.join(gt, f), gt_dir / f)
        return root, images, gt_dir

    cases = [layout("split_beside", ("wider_face_split",)),
             layout("eval_tools", ("eval_tools", "ground_truth"), nested=False),
             layout("inside_val", ("WIDER_val", "wider_face_split")),
             layout("inside_images", ("WIDER_val", "images"))]
    for root, images, gt_dir in cases:
        for given in (root, root / "WIDER_val", images):
            assert find_wider_images_dir(str(given)) == str(images), given
            assert find_wider_gt_dir(str(given)) == str(gt_dir), given
    with pytest.raises(OteError, match="give --wider-gt-dir"):
        find_wider_gt_dir(val5)
    rc, stdout, err = cli(work_dir_0200, "eval.py", ["--load-weights", os.path.join(trained["out"], "latest.pth"),
                                                     "--wider-dir", str(cases[0][0]), "--cache-dir", ""], capsys,
                          caplog)
    assert rc == 0 and "5 of 3226 val images" in err, err[-3000:]
