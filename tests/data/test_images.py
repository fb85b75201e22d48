"""The one image reader (data/images.py) on real files of every kind OpenCV decodes: EXIF orientations in
JPEG/PNG/WebP/TIFF, gray, palette, alpha, 16-bit, float, CMYK, animations, multi-page TIFF, sizes over
Pillow's and OpenCV's limits, damaged JPEGs; and the tools (eval, train, cluster_anchors, visualize) on
the issue's cases."""

import logging
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image, ImageOps

from conftest import (AIRPORT_ANN, AIRPORT_ROOT, REPO, SHARED, copy_airport_subset, need_shared, run_here, run_tool,
                      write_json)
from ote_detection.data import images as images_mod
from ote_detection.data.checks import check_images
from ote_detection.data.coco import load_coco_files
from ote_detection.data.images import decode_image, probe_image, read_image
from ote_detection.utils.errors import OteError

OMZ_0200 = ("models", "omz", "face-detection-0200", "FP16", "face-detection-0200.xml")


@pytest.fixture(scope="module")
def frame():
    """An airport frame, 480x270 BGR (real content: any wrong turn or channel order shows)."""
    need_shared("data", "airport")
    img = cv2.imread(os.path.join(AIRPORT_ROOT, "train", "image_000000.jpg"))
    return cv2.resize(img, (480, 270), interpolation=cv2.INTER_AREA)


@pytest.fixture(autouse=True)
def fresh_notes():
    """Each test sees the once-per-kind notes anew."""
    images_mod._SAID.clear()
    yield
    images_mod._SAID.clear()


def save_with_orientation(path, bgr, orientation):
    img = Image.fromarray(bgr[:, :, ::-1].copy())
    exif = img.getexif()
    exif[0x0112] = orientation
    img.save(path, exif=exif, **({"quality": 95} if path.endswith((".jpg", ".webp")) else {}))
    return path


@pytest.mark.parametrize("ext", ["jpg", "png", "webp", "tif"])
def test_every_exif_orientation_is_read_as_displayed(ext, frame, tmp_path):
    """Orientations 1..8: the frame is the one Pillow's exif_transpose displays and, where cv2.imread reads
    the file, exactly cv2.imread's; the header's size (used to check annotations) is the decoded size."""
    for orientation in range(1, 9):
        path = save_with_orientation(str(tmp_path / f"o{orientation}.{ext}"), frame, orientation)
        img = read_image(path)
        info = probe_image(path)
        assert info.orientation == (orientation if orientation > 1 else 1)
        assert info.size == (img.shape[1], img.shape[0]), (ext, orientation)
        assert info.size == ((270, 480) if orientation >= 5 else (480, 270))
        shown = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))[:, :, ::-1]
        assert shown.shape == img.shape
        # JPEG/WebP: Pillow's and OpenCV's decoders round differently by a level or two
        assert np.abs(shown.astype(int) - img).mean() < (3 if ext in ("jpg", "webp") else 0.01), (ext, orientation)
        ref = cv2.imread(path, cv2.IMREAD_COLOR)
        if ref is not None:  # OpenCV 5.0's imread fails on TIFFs of orientation 5..8; its imdecode reads them
            assert np.array_equal(ref, img), (ext, orientation)


def test_faithful_kinds_equal_cv2_imread_without_a_word(frame, tmp_path, caplog):
    """Gray, palette, opaque alpha, 16-bit holding 8-bit values, CMYK-free 8-bit TIFF, an MPO-free WebP:
    read exactly as cv2.imread reads them, and nothing is said."""
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    rgb = frame[:, :, ::-1].copy()
    files = {
        "gray.png": lambda p: cv2.imwrite(p, gray),
        "gray.jpg": lambda p: cv2.imwrite(p, gray),
        "opaque.png": lambda p: cv2.imwrite(p, cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA)),
        "la.png": lambda p: Image.fromarray(gray).convert("LA").save(p),
        "palette.png": lambda p: Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE).save(p),
        "palette.gif": lambda p: Image.fromarray(rgb).quantize(64).save(p),
        "c16x257.png": lambda p: cv2.imwrite(p, frame.astype(np.uint16) * 257),
        "g16x257.tif": lambda p: cv2.imwrite(p, gray.astype(np.uint16) * 257),
        "rgb.tif": lambda p: cv2.imwrite(p, frame),
        "rgb.bmp": lambda p: cv2.imwrite(p, frame),
    }
    with caplog.at_level(logging.INFO):
        for name, make in files.items():
            path = str(tmp_path / name)
            make(path)
            img, info = decode_image(path)
            assert img.dtype == np.uint8 and img.shape == (270, 480, 3), name
            assert np.array_equal(img, cv2.imread(path, cv2.IMREAD_COLOR)), name
            assert info.notes == {}, (name, info.notes)
        check_images([str(tmp_path / n) for n in files])
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_lossy_kinds_are_said_once_each_naming_the_file(frame, tmp_path, caplog):
    """What the 8-bit BGR input cannot hold is said once per kind, naming the file, with a count when
    several files share it; the pixels are what cv2.imread gives where it reads the file."""
    rgb = frame[:, :, ::-1].copy()
    bgra = cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA)
    bgra[:100, :, 3] = 0
    made = {
        "depth": ["dark12bit_a.png", "dark12bit_b.png"],
        "alpha": ["transparent.png"],
        "frames": ["animated.gif", "pages.tif"],
        "cmyk": ["cmyk.jpg"],
    }
    cv2.imwrite(str(tmp_path / "dark12bit_a.png"), frame.astype(np.uint16) * 16)  # a 12-bit camera in 16 bits
    cv2.imwrite(str(tmp_path / "dark12bit_b.png"), frame.astype(np.uint16) * 16 + 3)
    cv2.imwrite(str(tmp_path / "transparent.png"), bgra)
    pages = [Image.fromarray(rgb), Image.fromarray(rgb[::-1].copy())]
    pages[0].save(str(tmp_path / "animated.gif"), save_all=True, append_images=pages[1:])
    pages[0].save(str(tmp_path / "pages.tif"), save_all=True, append_images=pages[1:])
    Image.fromarray(rgb).convert("CMYK").save(str(tmp_path / "cmyk.jpg"), quality=95)
    paths = [str(tmp_path / n) for names in made.values() for n in names]
    with caplog.at_level(logging.WARNING):
        infos = check_images(paths, what="ann.json")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == len(made), warnings
    for kind, names in made.items():
        assert all(kind in infos[str(tmp_path / n)].notes for n in names), kind
        line = next(w for w in warnings if names[0] in w)
        assert str(tmp_path / names[0]) in line and "ann.json" in line
        if len(names) > 1:
            assert line.startswith(f"{len(names)} image(s)"), line
    assert "nearly black (at most 15 of 255)" in warnings[0]
    for path in paths:
        img = read_image(path)
        assert img.dtype == np.uint8 and img.shape == (270, 480, 3)
        assert np.array_equal(img, cv2.imread(path, cv2.IMREAD_COLOR)), path
    # said once: reading them again (the demo, a data loader in this process) adds nothing
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == len(made)


def test_float_tiff_pillow_cannot_parse_is_read_by_opencv(frame, tmp_path, caplog):
    """A 32-bit float TIFF: Pillow cannot parse the header and cv2.imread(IMREAD_COLOR) gives None, but
    OpenCV decodes it: read as 0..1, said once."""
    path = str(tmp_path / "float.tif")
    cv2.imwrite(path, frame.astype(np.float32) / 255.0)
    assert cv2.imread(path, cv2.IMREAD_COLOR) is None
    with caplog.at_level(logging.WARNING):
        img = read_image(path)
        assert probe_image(path).size == (480, 270)
    assert np.abs(img.astype(int) - frame).max() <= 1
    assert "floating-point image" in caplog.text and path in caplog.text


def test_pillow_limit_does_not_apply_opencv_limit_does(frame, tmp_path, monkeypatch, recwarn):
    """Pillow's decompression-bomb check (error over 179 Mpx, warning over 89 Mpx) is not applied to a
    header read; OpenCV's own limit is, before decoding, in one line naming the file and the limit."""
    path = str(tmp_path / "frame.jpg")
    cv2.imwrite(path, frame)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # as if the frame were a 200 Mpx one
    assert probe_image(path).size == (480, 270)
    assert read_image(path).shape == (270, 480, 3)
    assert Image.MAX_IMAGE_PIXELS == 1000  # restored for other users of Pillow
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)  # 129600 px: Pillow's "DOS attack" warning range
    assert probe_image(path).size == (480, 270)
    assert not [w for w in recwarn if "decompression" in str(w.message).lower()]
    monkeypatch.setenv("CV_IO_MAX_IMAGE_PIXELS", str(100_000))
    with pytest.raises(OteError) as exc:
        read_image(path)
    assert str(exc.value).startswith(path) and "over OpenCV's decoding limit (0 Mpx" in str(exc.value)
    assert "CV_IO_MAX_IMAGE_PIXELS" in str(exc.value)


def test_truncated_jpeg_with_end_marker_is_named_and_libjpeg_quiet(tmp_path, capfd):
    """A JPEG cut short and closed with an end-of-image marker passes the header check (it looks whole);
    decoding finds it, in one line naming the file; libjpeg's own line is not printed."""
    need_shared("data", "airport")
    data = open(os.path.join(AIRPORT_ROOT, "train", "image_000005.jpg"), "rb").read()
    path = str(tmp_path / "cut.jpg")
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2] + b"\xff\xd9")
    progressive = cv2.imencode(".jpg", cv2.imread(os.path.join(AIRPORT_ROOT, "train", "image_000005.jpg")),
                               [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    path2 = str(tmp_path / "cut_progressive.jpg")
    with open(path2, "wb") as f:
        f.write(progressive[:len(progressive) // 2] + b"\xff\xd9")
    for p in (path, path2):
        with pytest.raises(OteError) as exc:
            read_image(p)
        assert str(exc.value).startswith(p) and "Corrupt JPEG data" in str(exc.value)
    with pytest.raises(OteError) as exc:
        check_images([path], decode=True)
    assert path in str(exc.value)
    out, err = capfd.readouterr()
    assert "Corrupt JPEG" not in err and "Corrupt JPEG" not in out, err


def test_a_forked_worker_closes_the_capture_file_it_inherits():
    """The stderr-capture file of the decoder is per process: a forked child (a data-loader worker) closes
    its copy of the parent's instead of leaving it to the garbage collector ("ResourceWarning: unclosed
    file" under -W default, 26 times in one compress.py --ptq run); the parent's stays open."""
    need_shared("data", "airport")
    path = os.path.join(AIRPORT_ROOT, "train", "image_000000.jpg")
    read_image(path)
    inherited = images_mod._CAPTURE["file"]
    assert inherited is not None and images_mod._CAPTURE["pid"] == os.getpid()
    pid = os.fork()
    if pid == 0:  # the child: only look, then leave at once
        os._exit(0 if inherited.closed and images_mod._CAPTURE["file"] is None else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not inherited.closed and images_mod._CAPTURE["file"] is inherited
    assert read_image(path).shape[:2] == (1080, 1920)


def test_annotations_in_the_stored_frame_of_an_exif_image(frame, tmp_path, caplog):
    """EXIF orientation 6 with width/height of the stored pixels: the error names the orientation and the
    frame boxes are read in; with the displayed size it loads; orientation 3 (size unchanged) is said."""
    os.makedirs(tmp_path / "img")
    save_with_orientation(str(tmp_path / "img" / "portrait.jpg"), frame, 6)
    save_with_orientation(str(tmp_path / "img" / "upside.jpg"), frame, 3)
    cv2.imwrite(str(tmp_path / "img" / "plain.jpg"), frame)

    def coco(portrait_size):
        images = [dict(id=1, file_name="img/portrait.jpg", width=portrait_size[0], height=portrait_size[1]),
                  dict(id=2, file_name="img/upside.jpg", width=480, height=270),
                  dict(id=3, file_name="img/plain.jpg", width=480, height=270)]
        anns = [dict(id=i, image_id=i, category_id=1, bbox=[10, 10, 50, 60]) for i in (1, 2, 3)]
        return write_json(tmp_path / "ann.json", dict(images=images, annotations=anns,
                                                      categories=[dict(id=1, name="face")]))

    with pytest.raises(OteError) as exc:
        load_coco_files(coco((480, 270)), str(tmp_path))
    msg = str(exc.value)
    assert "img/portrait.jpg has EXIF orientation 6 (rotate 90 degrees clockwise to display)" in msg
    assert "480x270 in the file is its stored size" in msg and "270x480" in msg and "boxes in that frame" in msg
    with caplog.at_level(logging.WARNING):
        merged = load_coco_files(coco((270, 480)), str(tmp_path))
    assert [(i["width"], i["height"]) for i in merged["images"]] == [(270, 480), (480, 270), (480, 270)]
    assert "1 image(s) carry an EXIF orientation that width/height cannot confirm, e.g. img/upside.jpg " \
           "(EXIF orientation 3 (rotated 180 degrees))" in caplog.text
    assert "portrait" not in caplog.text  # its width/height confirm the displayed frame


def test_string_image_ids_with_integer_references_name_the_type(tmp_path):
    ann, data = copy_airport_subset(str(tmp_path), n=2)
    for img in data["images"]:
        img["id"] = str(img["id"])
    write_json(ann, data)
    with pytest.raises(OteError) as exc:
        load_coco_files(ann, str(tmp_path))
    msg = str(exc.value)
    assert "refer to their image by an id of another type" in msg and "(int), but the images' ids are strs" in msg


def test_missing_data_roots_name_the_flag():
    with pytest.raises(OteError, match=r"^--test-data-roots is missing: give the image folder of each "):
        load_coco_files(AIRPORT_ANN, None, flags="--test")
    with pytest.raises(OteError, match=r"^--val-ann-files is missing"):
        load_coco_files(None, AIRPORT_ROOT, flags="--val")


# ------------------------------------------------------------------------------------ the tools, as users run them

def tool_env():
    return dict(os.environ, SHARED=SHARED, PROJECT=REPO, OMP_NUM_THREADS="1")


@pytest.mark.slow
def test_huge_frame_eval_train_anchors(work_dir_0200, tmp_path):
    """cases/05-huge-image.py: a 16000x12000 frame (192 Mpx, over Pillow's 179 Mpx limit): eval.py gives
    AP 19.356 with the Open Model Zoo 0200 IR; train.py trains an epoch and cluster_anchors.py runs; no
    Pillow error or "DOS attack" warning."""
    omz = need_shared(*OMZ_0200)
    case = need_shared("cases", "05-huge-image.py")
    r = subprocess.run([sys.executable, case, str(tmp_path / "c")], env=tool_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ann, root = str(tmp_path / "c" / "huge.json"), str(tmp_path / "c")
    metrics = tmp_path / "m.yaml"
    r = run_here([str(work_dir_0200 / "eval.py"), "--load-weights", omz, "--test-ann-files", ann,
                  "--test-data-roots", root, "--save-metrics-to", str(metrics), "--cache-dir", ""])
    assert r.returncode == 0, r.stderr[-3000:]
    ap = {e["key"]: e["value"] for e in yaml.safe_load(metrics.read_text())["metrics"]}["ap"]
    assert abs(ap - 19.356) < 0.0015, ap
    # --force: the case has 3 faces, fewer than the 9 anchors (refused otherwise); the point here is reading the frame
    r2 = run_here([os.path.join(REPO, "tools", "cluster_anchors.py"), str(work_dir_0200 / "model.py"),
                   "--train-ann-files", ann, "--train-data-roots", root, "--force"])
    assert r2.returncode == 0, r2.stderr[-3000:]
    r3 = run_here([str(work_dir_0200 / "train.py"), "--train-ann-files", ann, "--train-data-roots", root,
                   "--save-checkpoints-to", str(tmp_path / "ckpt"), "--epochs", "1", "--batch-size", "2",
                   "--workers", "0", "--gpu-num", "0"])
    assert r3.returncode == 0, r3.stderr[-3000:]
    assert os.path.isfile(tmp_path / "ckpt" / "latest.pth")
    for res in (r, r2, r3):
        text = res.stdout + res.stderr
        assert "DecompressionBomb" not in text and "DOS attack" not in text and "Traceback" not in text


@pytest.mark.slow
def test_eval_names_damaged_jpeg_and_missing_flags(work_dir_0200, tmp_path):
    """eval.py: a JPEG cut short and closed with an end marker is one line naming the file (libjpeg's own
    line does not appear); a missing --test-data-roots (eval.py) or --val-data-roots (train.py) is named."""
    omz = need_shared(*OMZ_0200)
    ann, data = copy_airport_subset(str(tmp_path), n=2)
    victim = os.path.join(str(tmp_path), data["images"][1]["file_name"])
    raw = open(victim, "rb").read()
    with open(victim, "wb") as f:
        f.write(raw[:len(raw) // 2] + b"\xff\xd9")
    r = run_tool([str(work_dir_0200 / "eval.py"), "--load-weights", omz, "--test-ann-files", ann,
                  "--test-data-roots", str(tmp_path), "--cache-dir", ""])
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and err[-1].startswith(f"error: {victim}: damaged image data"), r.stderr[-2000:]
    assert not [ln for ln in err if "Corrupt JPEG" in ln and victim not in ln], r.stderr[-2000:]
    r = run_here([str(work_dir_0200 / "eval.py"), "--load-weights", omz, "--test-ann-files", ann])
    assert r.returncode == 2 and "error: --test-data-roots is missing" in r.stderr and "None" not in r.stderr
    r = run_here([str(work_dir_0200 / "train.py"), "--train-ann-files", ann, "--train-data-roots", str(tmp_path),
                  "--val-ann-files", ann, "--save-checkpoints-to", str(tmp_path / "ckpt"), "--epochs", "1"])
    assert r.returncode == 2 and "error: --val-data-roots is missing" in r.stderr and "None" not in r.stderr
    assert not os.path.exists(tmp_path / "ckpt" / "latest.pth")


@pytest.mark.slow
def test_demo_folder_with_macos_companions_and_a_cut_copy(work_dir_0200, tmp_path):
    """cases/08: a folder with macOS '._*' files, and one with a copy cut short: the demo skips them with
    one counted warning and writes every readable frame to the .mp4."""
    from ote_detection.demo.frames import count_video_frames
    omz = need_shared(*OMZ_0200)
    case = need_shared("cases", "08-demo-folder-with-nonimage.sh")
    r = subprocess.run(["bash", case, str(tmp_path)], env=tool_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # the cut copy in a process of its own: libjpeg's "Corrupt JPEG" line would be on its file descriptor 2
    for run, folder, skipped, total in ((run_here, "frames", 2, 12), (run_tool, "frames_trunc", 1, 11)):
        out = tmp_path / f"{folder}.mp4"
        r = run([str(work_dir_0200 / "visualize.py"), "--load-weights", omz, "--video", str(tmp_path / folder),
                      "--output", str(out)])
        assert r.returncode == 0, r.stderr[-3000:]
        text = r.stdout + r.stderr
        warns = [ln for ln in text.splitlines() if "skipped" in ln]
        assert len(warns) == 1 and f"skipped {skipped} of {total} file(s)" in warns[0], text[-2000:]
        assert "Traceback" not in text and "Corrupt JPEG" not in text
        assert count_video_frames(out) == 10
