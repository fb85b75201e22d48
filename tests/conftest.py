import contextlib
import functools
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.normpath(os.path.join(REPO, "..", "shared"))
TEMPLATES = os.path.join(REPO, "model_templates", "face-detection")
AIRPORT_ANN = os.path.join(SHARED, "data", "airport", "annotation_faces_train.json")
AIRPORT_ROOT = os.path.join(SHARED, "data", "airport")


def template_path(name="face-detection-0200"):
    return os.path.join(TEMPLATES, name, "template.yaml")


def need_shared(*parts):
    path = os.path.join(SHARED, *parts)
    if not os.path.exists(path):
        pytest.skip(f"shared data not found at {path} (../shared beside the repo)")
    return path


def run_tool(args, cwd=None, timeout=600):
    """Run a CLI with this interpreter; returns CompletedProcess with text output."""
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _fresh_process_threads():
    """torch's thread count in a new process: $OMP_NUM_THREADS, else one per core (what torch picks)."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else (os.cpu_count() or 1)


def run_here(args, cwd=None):
    """A tool's ``main`` run in this process through ``run_cli``, as ``run_tool`` runs it in a new one:
    the same arguments, ``sys.argv[0]`` (the program name in its messages) and working folder; returns a
    CompletedProcess with the exit code, stdout and stderr (log records as the tool's "%(message)s" lines,
    in the order written; warnings appended as the interpreter prints them). It saves the new
    interpreter's start (torch + torchvision + OpenVINO imports, about 5 s on 2 cores) where the test is
    about what the tool does; what needs a process of its own (output of C++ libraries on file
    descriptor 2, a clean interpreter, kill -9, locks held by another process) keeps ``run_tool``, and each
    tool has at least one test through ``run_tool``."""
    import io
    import logging
    import runpy
    import traceback
    import warnings

    import torch

    from ote_detection.data import coco, images
    from ote_detection.utils.errors import run_cli
    script, argv = str(args[0]), [str(a) for a in args[1:]]
    said = [(notes, set(notes)) for notes in (coco._SAID, images._SAID)]  # what a process says once
    for notes, _ in said:
        notes.clear()
    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    level, threads, old_argv, old_cwd = root.level, torch.get_num_threads(), sys.argv, os.getcwd()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    sys.argv = [script, *argv]
    torch.set_num_threads(_fresh_process_threads())  # as the tool's own process computes
    rc = 0
    try:
        if cwd is not None:
            os.chdir(str(cwd))
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            warnings.resetwarnings()  # a new interpreter's filters: library deprecations are not shown
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.simplefilter("ignore", category)
            try:
                run_cli(runpy.run_path(script, run_name="tool_under_test")["main"], argv)
            except SystemExit as exc:
                rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except Exception:  # noqa: BLE001 -- what the interpreter would print, and its exit code
                traceback.print_exc()
                rc = 1
        for w in caught:
            err.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line))
    finally:
        os.chdir(old_cwd)
        sys.argv = old_argv
        root.removeHandler(handler)
        root.setLevel(level)
        torch.set_num_threads(threads)
        for notes, before in said:
            notes.clear()
            notes.update(before)
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


def omz_ir(name="face-detection-0200", precision="FP16"):
    return need_shared("models", "omz", name, precision, name + ".xml")


def real_images(n_airport=3, n_wider=2):
    """A subset of the shared real images (airport 1920x1080 and WIDER val crowds)."""
    need_shared("data", "airport")
    need_shared("data", "wider_val5")
    airport = sorted(glob.glob(os.path.join(SHARED, "data", "airport", "train", "*.jpg")))
    wider = sorted(glob.glob(os.path.join(SHARED, "data", "wider_val5", "images", "*.jpg")))
    return airport[:n_airport] + wider[:n_wider]


@functools.lru_cache(maxsize=None)
def imported_snapshot(name="face-detection-0200"):
    """OMZ FP16 weights imported once per test session (for the omz_import, export, compression, inference
    and data tests)."""
    from ote_detection.apis.import_weights import import_openvino_weights
    ir = omz_ir(name)
    out = os.path.join(tempfile.mkdtemp(prefix="omz_import_"), name + ".pth")
    report = import_openvino_weights(template_path(name), ir, out)
    return out, report


@pytest.fixture(scope="module")
def one_torch_thread():
    """In-process torch on one thread: two OpenMP threads on a loaded 2-core machine spin-wait
    (a 60 ms forward was seen taking 3 s)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def work_dir_0200(tmp_path_factory):
    """A work dir instantiated from face-detection-0200 without the snapshot."""
    work = tmp_path_factory.mktemp("wd0200")
    r = run_tool([os.path.join(REPO, "tools", "instantiate_template.py"), template_path(), str(work),
                  "--do-not-load-snapshot"])
    assert r.returncode == 0, r.stderr
    return work


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    from ote_detection.data.synthetic import make_synthetic_dataset
    root = tmp_path_factory.mktemp("synthetic")
    ann = make_synthetic_dataset(str(root), num_images=12, size=(256, 192), seed=1)
    return ann, str(root)


def write_json(path, data):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)
    return str(path)


def copy_airport_subset(dst, n=3):
    """A small COCO set of real airport images in a temp folder (for tests that damage files)."""
    need_shared("data", "airport")
    with open(AIRPORT_ANN, encoding="utf-8") as f:
        data = json.load(f)
    images = data["images"][:n]
    ids = {img["id"] for img in images}
    os.makedirs(os.path.join(dst, "train"), exist_ok=True)
    for img in images:
        shutil.copyfile(os.path.join(AIRPORT_ROOT, img["file_name"]), os.path.join(dst, img["file_name"]))
    data = dict(data, images=images, annotations=[a for a in data["annotations"] if a["image_id"] in ids])
    return write_json(os.path.join(dst, "ann.json"), data), data


@contextlib.contextmanager
def tmpfs(path, options):
    """A real tmpfs mounted at ``path`` (unmounted afterwards); skip where mounting is not allowed."""
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({(r.stderr or '').strip() or r.returncode}); needs root")
    try:
        yield str(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def child_processes(pid):
    """[(pid, command line, environment)] of the live processes whose parent is ``pid``, in pid order (the
    order they started), read from /proc (Linux): for tests that kill one process of a multi-process job."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != pid:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = dict(kv.decode(errors="replace").split("=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        except (OSError, ValueError, IndexError):
            continue
        out.append((int(entry), cmd, env))
    return sorted(out)


def kill_rank_1_after_epoch_1(command, out):
    """Run ``command`` (a tool with ``--gpu-num 2`` writing checkpoints to ``out``), kill -9 its spawned
    process 1 once epoch 1 is saved; returns (exit code, stderr)."""
    import os
    import signal
    import subprocess
    import time
    proc = subprocess.Popen(command, env=dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1"),
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        end = time.time() + 300
        while not (out / "epoch_1.pth").exists() and proc.poll() is None and time.time() < end:
            time.sleep(0.1)
        ranks = [pid for pid, cmd, _ in child_processes(proc.pid) if "spawn_main" in cmd]
        assert len(ranks) == 2, child_processes(proc.pid)
        os.kill(ranks[1], signal.SIGKILL)  # spawned in rank order
        err = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


def assert_one_line_for_the_killed_process(code, err):
    assert code == 2, err[-3000:]
    # the last line (after a progress bar that the killed job left without its newline)
    assert err.rstrip().endswith("error: training process 1 of 2 was killed by signal 9 (SIGKILL); the job stopped"), \
        err[-3000:]
    assert "Traceback" not in err and "leaked semaphore" not in err and "ProcessExitedException" not in err, \
        err[-3000:]
