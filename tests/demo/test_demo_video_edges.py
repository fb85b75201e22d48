"""visualize.py on videos at their edges: a truncated MJPG .avi (6 frames declared, 4 readable) is said in one
line; frames of an odd size (641x361), which the codecs store at even sizes only, are padded to 642x362 (not
cut to 640x360) and that is said in one line. The Open Model Zoo 0200 IR on airport frames."""

import os

import cv2
import pytest

from conftest import need_shared, run_here

OMZ_0200 = ("models", "omz", "face-detection-0200", "FP16", "face-detection-0200.xml")


def _frames(n, size):
    folder = os.path.join(need_shared("data", "airport"), "val")
    return [cv2.resize(cv2.imread(os.path.join(folder, name)), size, interpolation=cv2.INTER_AREA)
            for name in sorted(os.listdir(folder))[:n]]


def truncated_avi(path, declared=6, readable=4, size=(160, 96)):
    """An MJPG .avi of ``declared`` frames cut just before frame ``readable`` + 1's data (header kept)."""
    from ote_detection.demo.frames import count_video_frames, write_video
    write_video(path, _frames(declared, size), fps=5)
    data = open(path, "rb").read()
    chunks = [i for i in range(len(data) - 4) if data[i:i + 4] == b"00dc"]  # '00dc': a video frame's chunk
    open(path, "wb").write(data[:chunks[readable + 1]])  # chunks[0] is the stream header's own '00dc'
    cap = cv2.VideoCapture(str(path))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == declared and count_video_frames(path) == readable
    cap.release()
    return path


def test_truncated_video_says_how_many_frames_were_read(work_dir_0200, tmp_path):
    ir = need_shared(*OMZ_0200)
    video = truncated_avi(tmp_path / "cut.avi")
    r = run_here([work_dir_0200 / "visualize.py", "--load-weights", ir, "--video", video, "--output",
                  tmp_path / "out", "--threads", "1", "--no-fps"])
    assert r.returncode == 0, r.stderr
    said = [ln for ln in (r.stdout + r.stderr).splitlines() if "frames read" in ln]
    assert said == [f"warning: {video}: 4 of 6 frames read (the file declares 6; it ends early: truncated or "
                    f"damaged)"], r.stdout + r.stderr
    assert len(os.listdir(tmp_path / "out")) == 4 and "done: 4 frames" in r.stdout
    # a whole video says nothing of the kind
    from ote_detection.demo.frames import write_video
    whole = write_video(tmp_path / "whole.avi", _frames(3, (160, 96)), fps=5)
    r = run_here([work_dir_0200 / "visualize.py", "--load-weights", ir, "--video", whole, "--output",
                  tmp_path / "out2", "--threads", "1"])
    assert r.returncode == 0 and "frames read" not in r.stdout + r.stderr, r.stdout + r.stderr


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_odd_frame_size_is_padded_and_said(work_dir_0200, tmp_path, suffix):
    from ote_detection.demo.frames import count_video_frames
    ir = need_shared(*OMZ_0200)
    folder = tmp_path / "odd"
    folder.mkdir()
    for i, frame in enumerate(_frames(2, (641, 361))):
        cv2.imwrite(str(folder / f"f{i}.png"), frame)
    out = tmp_path / f"out{suffix}"
    r = run_here([work_dir_0200 / "visualize.py", "--load-weights", ir, "--video", folder, "--output", out,
                  "--threads", "1", "--no-fps"])
    assert r.returncode == 0, r.stderr
    codec = {".mp4": "mp4v", ".avi": "MJPG"}[suffix]
    assert f"note: {out}: frames of 641x361 written as 642x362 (padded with black at the right/bottom: {codec} " \
           f"video stores even sizes only)" in r.stdout, r.stdout
    assert f"({2} frames of 642x362" in r.stdout
    cap = cv2.VideoCapture(str(out))
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (642, 362)
    ok, first = cap.read()
    cap.release()
    assert ok and count_video_frames(out) == 2
    assert first[:, 641:].mean() < 8 and first[361:, :].mean() < 8  # the pad is black (codec noise aside)
    assert first[:361, :641].mean() > 30  # the frame itself is all there
