"""visualize.py (the demo) run headless on real airport frames: images, a folder, a generated video; an
Open Model Zoo IR (real faces) and a random snapshot; synchronous vs asynchronous inference; bad inputs."""

import importlib.util
import os

import cv2
import numpy as np
import pytest

from conftest import AIRPORT_ROOT, REPO, need_shared, run_here, run_tool, template_path

OMZ_0200 = ("models", "omz", "face-detection-0200", "FP16", "face-detection-0200.xml")
THR = 0.6  # the OMZ IR's scores come in steps of 0.1: no detection sits on this threshold


def airport_frames(n, size=None):
    from ote_detection.data.transforms import read_image
    need_shared("data", "airport")
    folder = os.path.join(AIRPORT_ROOT, "val")
    names = sorted(os.listdir(folder))[:n]
    frames = [read_image(os.path.join(folder, name)) for name in names]
    if size:
        frames = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]
    return names, frames


@pytest.fixture(scope="module")
def omz_ir():
    return need_shared(*OMZ_0200)


@pytest.fixture(scope="module")
def png_folder(tmp_path_factory):
    """3 airport frames as PNG: the annotated outputs are then lossless, and drawn pixels exact."""
    names, frames = airport_frames(3)
    folder = tmp_path_factory.mktemp("png_in")
    for name, frame in zip(names, frames):
        cv2.imwrite(str(folder / name.replace(".jpg", ".png")), frame)
    return folder


@pytest.fixture(scope="module")
def video6(tmp_path_factory):
    """6 airport frames at 960x540 as an mp4v video (what a user's recording looks like to OpenCV)."""
    from ote_detection.demo.frames import count_video_frames, write_video
    _, frames = airport_frames(6, (960, 540))
    path = write_video(tmp_path_factory.mktemp("video") / "airport6.mp4", frames, fps=10)
    assert count_video_frames(path) == 6
    return path


def read_folder(folder):
    return {n: cv2.imread(os.path.join(folder, n)) for n in sorted(os.listdir(folder))}


def edge_fraction(img, box, color):
    """Fraction of the points along the box's bottom and left edges where a pixel within 1 px is ``color``."""
    h, w = img.shape[:2]
    x1, y1, x2, y2 = (int(round(float(v))) for v in box[:4])
    hits, total = 0, 0
    for x in range(x1 + 3, x2 - 2):
        band = img[max(0, y2 - 1):min(h, y2 + 2), min(w - 1, x)]
        hits += bool((band == color).all(axis=1).any())
        total += 1
    for y in range(y1 + 3, y2 - 2):
        band = img[min(h - 1, y), max(0, x1 - 1):min(w, x1 + 2)]
        hits += bool((band == color).all(axis=1).any())
        total += 1
    return hits / max(total, 1)


@pytest.mark.slow
def test_ir_on_image_folder_draws_boxes_where_faces_are(work_dir_0200, omz_ir, png_folder, tmp_path):
    """Subprocess, OMZ 0200 IR, f32: one annotated PNG per input, the box colour on the border of every
    detection (computed here with the same predictor), not there in the input."""
    from ote_detection.inference.factory import make_predictor
    from ote_detection.apis.task import Task
    from ote_detection.demo.drawing import BOX_COLOR
    out = tmp_path / "annotated"
    r = run_tool([str(work_dir_0200 / "visualize.py"), "--load-weights", omz_ir, "--video", str(png_folder),
                  "--output", str(out), "--precision", "f32", "--threads", "1", "--score-thr", str(THR),
                  "--no-fps"])
    assert r.returncode == 0, r.stderr
    assert "done: 3 frames" in r.stdout and "FPS" in r.stdout, r.stdout
    outputs, inputs = read_folder(out), read_folder(png_folder)
    assert sorted(outputs) == sorted(inputs)
    predictor = make_predictor(Task(template_path()), omz_ir, precision="f32", threads=1)
    boxes = 0
    for name, frame in inputs.items():
        assert outputs[name].shape == frame.shape
        det = predictor.predict_frames([frame])[0]
        for d in det[det[:, 4] >= THR]:
            boxes += 1
            assert edge_fraction(outputs[name], d, BOX_COLOR) > 0.9, (name, d)
            assert edge_fraction(frame, d, BOX_COLOR) < 0.1
        assert not np.array_equal(outputs[name], frame) or not (det[:, 4] >= THR).any()
    assert boxes >= 3, "the OMZ IR finds faces on these airport frames"
    assert f"{boxes} boxes drawn" in r.stdout


@pytest.mark.slow
def test_ir_on_video_writes_every_frame(work_dir_0200, omz_ir, video6, tmp_path):
    """visualize.py (run here), asynchronous OpenVINO on a 6-frame video -> an mp4 with 6 frames of the
    input's size."""
    from ote_detection.demo.frames import count_video_frames
    out = tmp_path / "out.mp4"
    r = run_here([str(work_dir_0200 / "visualize.py"), "--load-weights", omz_ir.replace(".xml", ".bin"),
                  "--video", str(video6), "--output", str(out), "--threads", "1", "--jobs", "3"])
    assert r.returncode == 0, r.stderr
    assert "3 async requests" in r.stdout and "done: 6 frames" in r.stdout, r.stdout
    assert count_video_frames(out) == 6
    cap = cv2.VideoCapture(str(out))
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (960, 540)
    cap.release()
    assert not [n for n in os.listdir(tmp_path) if n != "out.mp4"], "no temporary file left behind"


@pytest.mark.slow
def test_snapshot_on_video(work_dir_0200, video6, tmp_path):
    """visualize.py (run here), a random-initialised snapshot (PyTorch, 128x128): one annotated image per
    video frame."""
    from ote_detection.apis.task import Task
    from ote_detection.artefacts.checkpoint import save_checkpoint
    task = Task(template_path())
    ckpt = tmp_path / "random.pth"
    save_checkpoint(str(ckpt), task.build_detector(), meta=dict(task.checkpoint_meta(), input_size=[128, 128]))
    out = tmp_path / "frames"
    r = run_here([str(work_dir_0200 / "visualize.py"), "--load-weights", str(ckpt), "--video", str(video6),
                  "--output", str(out), "--threads", "1", "--keep-ratio"])
    assert r.returncode == 0, r.stderr
    assert "PyTorch" in r.stdout and "128x128 letterboxed" in r.stdout and "done: 6 frames" in r.stdout, r.stdout
    names = sorted(os.listdir(out))
    assert names == [f"frame_{i:06d}.jpg" for i in range(6)]
    assert cv2.imread(str(out / names[0])).shape == (540, 960, 3)


def test_async_keeps_order_and_equals_sync(omz_ir, video6, tmp_path, one_torch_thread):
    """In process: the asynchronous pipeline (3 requests, reader thread) gives the synchronous loop's
    frames, in the same order, pixel for pixel."""
    from ote_detection.demo.app import run_frames
    from ote_detection.inference.factory import make_predictor
    from ote_detection.apis.task import Task
    from ote_detection.demo.frames import open_sink, open_source
    predictor = make_predictor(Task(template_path()), omz_ir, precision="f32", threads=1)
    results = {}
    for mode, sync in (("sync", True), ("async", False)):
        source = open_source(str(video6))
        sink = open_sink(tmp_path / mode, source, image_suffix=".png")
        stats = run_frames(predictor, source, sink, score_thr=0.3, jobs=3, sync=sync, overlay=False,
                           progress=False)
        assert stats.frames == 6 and stats.model_fps > 0 and stats.e2e_fps > 0
        results[mode] = (read_folder(tmp_path / mode), stats.boxes)
    assert results["sync"][1] == results["async"][1] > 0
    sync_frames, async_frames = results["sync"][0], results["async"][0]
    assert list(sync_frames) == list(async_frames) == [f"frame_{i:06d}.png" for i in range(6)]
    for name in sync_frames:
        assert np.array_equal(sync_frames[name], async_frames[name]), name
    # the frames differ from each other (a mixed-up order would show above)
    assert not np.array_equal(sync_frames["frame_000000.png"], sync_frames["frame_000001.png"])


def load_visualize():
    spec = importlib.util.spec_from_file_location("visualize_under_test",
                                                  os.path.join(REPO, "tools", "workdir", "visualize.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.HERE = os.path.dirname(template_path())
    return module


def run_in_process(argv, capfd):
    from ote_detection.utils.errors import run_cli
    with pytest.raises(SystemExit) as exc:
        run_cli(load_visualize().main, argv)
    out, err = capfd.readouterr()
    return exc.value.code, out, err


@pytest.fixture(scope="module")
def headless():
    from ote_detection.demo.app import display_available, gui_available
    if gui_available() and display_available():
        pytest.skip("a display and a GUI OpenCV are present: the headless behaviour is not what runs here")


@pytest.mark.parametrize("case", ["camera", "unreadable_video", "empty_folder", "missing", "no_window",
                                  "show_without_gui"])
def test_bad_input_one_line_exit_2(case, omz_ir, tmp_path, capfd, headless):
    """Bad input ends with exactly one line on stderr (no OpenCV or FFmpeg warnings) and exit code 2,
    before any frame is processed."""
    video, extra, expect = "0", ["--output", str(tmp_path / "out.mp4")], None
    if case == "camera":
        video, expect = "9", "camera 9: cannot be opened"
    elif case == "unreadable_video":
        video = str(tmp_path / "broken.mp4")
        with open(video, "wb") as f:
            f.write(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
        expect = "broken.mp4: cannot be read as a video"
    elif case == "empty_folder":
        video = str(tmp_path / "empty")
        os.makedirs(video)
        open(os.path.join(video, "notes.txt"), "w").close()
        expect = "empty: folder has no images"
    elif case == "missing":
        video, expect = str(tmp_path / "nope.mp4"), "nope.mp4: no such file or folder"
    elif case == "no_window":
        extra, expect = [], "no window can be opened"
    elif case == "show_without_gui":
        extra, expect = ["--show"], "--show: "
    code, out, err = run_in_process(["--load-weights", omz_ir, "--video", video, *extra], capfd)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], err
    assert not os.path.exists(tmp_path / "out.mp4")


def test_show_without_gui_falls_back_to_output(omz_ir, png_folder, tmp_path, capfd, headless):
    image = str(sorted(png_folder.iterdir())[0])
    out = tmp_path / "one.png"
    code, out_text, err = run_in_process(["--load-weights", omz_ir, "--video", image, "--show", "--output", str(out),
                                          "--threads", "1"], capfd)
    assert code == 0, err
    assert "--show: " in out_text and "opencv-python" in out_text and "done: 1 frame," in out_text
    assert cv2.imread(str(out)).shape == cv2.imread(image).shape


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        load_visualize().main(["--help"])
    assert exc.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("--") and len(stripped.split()) <= 2:
            assert i + 1 < len(lines) and lines[i + 1].startswith(" " * 10), f"{stripped} has no help"


# --- tiled inference (issue 15.10) and output folders that refuse writes (15.11) ----------------------

def _airport_frame_with_faces(image_id=4):
    """An airport frame (1920x1080) as PNG in its own folder, and its face boxes (x1, y1, x2, y2)."""
    import json

    from conftest import AIRPORT_ANN
    need_shared("data", "airport")
    with open(AIRPORT_ANN, encoding="utf-8") as f:
        data = json.load(f)
    img = next(i for i in data["images"] if i["id"] == image_id)
    boxes = np.array([a["bbox"] for a in data["annotations"] if a["image_id"] == image_id], np.float64)
    return os.path.join(AIRPORT_ROOT, img["file_name"]), np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1)


def _found(dets, gt):
    """Per face: a detection with IoU >= 0.5."""
    import torch
    from torchvision.ops import box_iou
    if not len(dets):
        return np.zeros(len(gt), bool)
    iou = box_iou(torch.as_tensor(gt), torch.as_tensor(np.asarray(dets)[:, :4], dtype=torch.float64))
    return (iou.max(dim=1).values >= 0.5).numpy()


@pytest.fixture(scope="module")
def omz_snapshot(tmp_path_factory):
    """The OMZ 0200 weights imported into a snapshot (.pth): real faces for the PyTorch path."""
    from ote_detection.apis.import_weights import import_openvino_weights
    snap = str(tmp_path_factory.mktemp("snap") / "0200.pth")
    import_openvino_weights(template_path(), need_shared(*OMZ_0200), snap, verify=False)
    return snap


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ir", "ir_sync", "pth"])
def test_tiled_demo_finds_the_small_faces(mode, work_dir_0200, omz_ir, omz_snapshot, tmp_path):
    """visualize.py --tile (run here) on a 1920x1080 airport frame, OMZ 0200 weights at 256x256: the
    IR (async and --sync) and the snapshot draw the tiled predictor's boxes, which find the faces of 2-6 % of
    the frame that the plain 256x256 pass misses; the annotated frame is written at the frame's size."""
    from ote_detection.inference.factory import make_predictor
    from ote_detection.apis.task import Task
    from ote_detection.demo.drawing import BOX_COLOR
    image, gt = _airport_frame_with_faces()
    frame = cv2.imread(image)
    weights = omz_snapshot if mode == "pth" else omz_ir
    out = tmp_path / "tiled.png"
    args = ["--load-weights", weights, "--video", image, "--output", str(out), "--threads", "1",
            "--score-thr", "0.5", "--no-fps", "--tile", "--tile-overlap", "0.2"]
    if mode != "pth":
        args += ["--precision", "f32"]
    r = run_here([str(work_dir_0200 / "visualize.py"), *args, *(["--sync"] if mode == "ir_sync" else [])])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "tiled: full frame + tiles of 256x256 frame px" in r.stdout and "done: 1 frame," in r.stdout, r.stdout
    task = Task(template_path())
    tile = dict(overlap=0.2, tile_scale=1.0)
    tiled = make_predictor(task, weights, precision="f32", threads=1, tile=tile).predict_frames([frame])[0]
    plain = make_predictor(task, weights, precision="f32", threads=1).predict_frames([frame])[0]
    tiled, plain = tiled[tiled[:, 4] >= 0.5], plain[plain[:, 4] >= 0.5]
    found_tiled, found_plain = _found(tiled, gt), _found(plain, gt)
    assert found_tiled.sum() > found_plain.sum() and found_tiled.sum() >= len(gt) - 1, (found_tiled, found_plain)
    assert f"{len(tiled)} boxes drawn" in r.stdout, r.stdout
    drawn = cv2.imread(str(out))
    assert drawn.shape == frame.shape
    for d in tiled:
        assert edge_fraction(drawn, d, BOX_COLOR) > 0.9, d


def test_tile_scale_giving_tiny_tiles_is_one_line(omz_ir, png_folder, tmp_path, capfd):
    """--tile-scale 1000 makes 0.256 px tiles of a 256 px input: refused before any frame, naming the bound."""
    image = str(sorted(png_folder.iterdir())[0])
    code, _, err = run_in_process(["--load-weights", omz_ir, "--video", image, "--output", str(tmp_path / "o.png"),
                                   "--tile", "--tile-scale", "1000"], capfd)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "--tile-scale 1000" in lines[0] and "at most 32" in lines[0], err
    assert not os.path.exists(tmp_path / "o.png")


def test_snapshot_width_only_input_size_on_a_folder(png_folder, tmp_path, one_torch_thread):
    """``--input-size 256x`` (as eval.py and export.py take it): the height from the first frame's aspect,
    rounded up to the model's stride, frames letterboxed. The folder is announced by its file count (an
    AppleDouble '._' companion among them is then skipped with a counted warning); one thread is
    '1 thread'."""
    import shutil

    from ote_detection.apis.visualize import run_demo
    from ote_detection.apis.task import Task
    from ote_detection.artefacts.checkpoint import save_checkpoint
    from ote_detection.inference.deploy import deployment_input_size, model_stride
    from ote_detection.utils.cli import input_size_or_width
    task = Task(template_path())
    ckpt = tmp_path / "random.pth"
    save_checkpoint(str(ckpt), task.build_detector(), meta=dict(task.checkpoint_meta(), input_size=[128, 128]))
    folder = tmp_path / "frames"
    shutil.copytree(png_folder, folder)
    (folder / "._a.png").write_bytes(b"\x00\x05\x16\x07" + bytes(60))  # macOS metadata, not an image
    first = cv2.imread(str(sorted(png_folder.iterdir())[0]))
    w, h = deployment_input_size((256, None), frame_hw=first.shape[:2], stride=model_stride(task.cfg.model))
    assert w == 256 and h % 32 == 0 and h != 256  # the airport frames are not square
    lines = []
    stats = run_demo(template_path(), str(ckpt), str(folder), show=False, threads=1,
                     input_size=input_size_or_width("256x"), log=lines.append)
    text = "\n".join(lines)
    assert f"PyTorch fp32 (1 thread), input {w}x{h} letterboxed" in text, text
    assert "(folder, 4 image files)" in text, text
    assert "skipped 1 of 4 file(s)" in text and stats.frames == 3, text
