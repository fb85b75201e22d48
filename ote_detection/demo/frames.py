"""Frame sources and sinks of the demo: a camera, a video file or stream, an image, or a folder of images in;
an annotated video, one image or a folder of images out.

``open_source(spec)`` checks the input at once (the camera opens, the video's first frame decodes, the
folder holds images) and fails with one line (``OteError``) otherwise. A source iterates over ``Frame``
(index, name, BGR uint8 image); ``kind`` is 'camera', 'video', 'image' or 'folder'; ``total`` the number
of frames when known (a video's count is the container's, which may be approximate); ``fps`` the
video's or camera's rate when known; ``frame_hw`` the first frame's (height, width).

``open_sink(output, source)`` writes annotated frames: ``*.mp4`` / ``*.avi`` / ``*.mkv`` / ``*.mov``
a video (written to a temporary file beside it and moved into place when closed: a failed run leaves
an existing file as it was), an image suffix for a single-image source one image, anything else a
folder of images named after the source's frames.
"""

import contextlib
import errno
import os
import re
import tempfile

import cv2
import numpy as np

from ..data.images import IMAGE_EXTS, WRITABLE_EXTS, read_image
from ..utils.errors import OteError
from ..utils.fileio import (LOW_SPACE_BYTES, check_writable_dir, check_writable_file, file_mode, free_bytes,
                            write_error)

VIDEO_EXTS = {".mp4": "mp4v", ".mov": "mp4v", ".m4v": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
DEFAULT_VIDEO_FPS = 25.0
IMAGES_VIDEO_FPS = 5.0  # a folder of images written as a video: a slide show

__all__ = ["Frame", "open_source", "open_sink", "IMAGE_EXTS", "VIDEO_EXTS", "quiet_opencv", "count_video_frames",
           "write_video"]


class Frame:
    __slots__ = ("index", "name", "image")

    def __init__(self, index, name, image):
        self.index, self.name, self.image = index, name, image


# FFmpeg's own messages (e.g. "moov atom not found", decoding errors of a damaged frame) go straight to
# stderr at the level fixed when OpenCV first initialises FFmpeg: quiet unless the user asks for them.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


@contextlib.contextmanager
def _stderr_to_devnull():
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 (an embedded interpreter)
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def quiet_opencv():
    """Silence OpenCV's (and FFmpeg's) own log lines while probing a device or file: a failure is then
    reported as our one line instead of backend warnings."""
    try:
        from cv2.utils import logging as cvlog
        old = cvlog.getLogLevel()
        cvlog.setLogLevel(cvlog.LOG_LEVEL_SILENT)
    except (ImportError, AttributeError):  # an OpenCV build without cv2.utils.logging
        cvlog = None
    try:
        with _stderr_to_devnull():
            yield
    finally:
        if cvlog is not None:
            cvlog.setLogLevel(old)


def _natural_key(name):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


class _Source:
    kind = None
    total = None
    fps = None
    frame_hw = None  # (height, width) of the first frame, in pixels (read when the source is opened)

    def __init__(self, spec):
        self.spec = spec

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class CaptureSource(_Source):
    """A camera (index), a stream URL or a video file, read with cv2.VideoCapture."""

    def __init__(self, spec, kind):
        super().__init__(spec)
        self.kind = kind
        what = f"camera {spec}" if kind == "camera" else str(spec)
        with quiet_opencv():
            self.cap = cv2.VideoCapture(spec)
            ok = self.cap.isOpened()
            first = self.cap.read()[1] if ok else None
        if first is None:
            self.cap.release()
            if kind == "camera":
                raise OteError(f"camera {spec}: cannot be opened (no camera with this index, it is in use, "
                               "or access is denied)")
            if kind == "stream":
                raise OteError(f"{spec}: cannot open the stream (wrong address, or unreachable)")
            raise OteError(f"{what}: cannot be read as a video (not a video file, empty, or a codec this "
                           "OpenCV build lacks)")
        self._first = first
        self.frame_hw = tuple(first.shape[:2])
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and np.isfinite(fps) and 0 < fps < 1000 else None
        if kind == "video":
            count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            self.total = count if count > 0 else None
        self.stem = "camera" if kind == "camera" else "frame"

    def __iter__(self):
        index, frame = 0, self._first
        self._first = None
        while frame is not None:
            yield Frame(index, f"{self.stem}_{index:06d}.jpg", frame)
            index += 1
            self.read = index
            ok, frame = self.cap.read()
            if not ok:
                frame = None
        self.ended = True

    read = 0  # frames given so far
    ended = False  # the capture ran out of frames (not stopped by the caller)

    def skipped_summary(self):
        """One line when a video file ended before the frame count its header declares (a truncated or
        damaged file: OpenCV stops at the first frame it cannot decode), else None."""
        if self.kind != "video" or not self.ended or not self.total or self.read >= self.total:
            return None
        return (f"{self.spec}: {self.read} of {self.total} frames read (the file declares {self.total}; it ends "
                f"early: truncated or damaged)")

    def close(self):
        self.cap.release()


class ImageSource(_Source):
    """One image file, or the images of a folder (not recursive, natural name order).

    In a folder, files that are not readable images (a macOS ``._*`` AppleDouble companion, a copy cut
    short, damaged data) are skipped and collected in ``skipped`` [(path, reason)] for one counted
    warning (``skipped_summary``); the frames are numbered without gaps. A single image that cannot be
    read, or a folder without one readable image, is an OteError."""

    def __init__(self, spec, paths, kind):
        super().__init__(spec)
        self.kind = kind
        self.paths = paths
        self.total = len(paths)
        self.skipped = []
        # decode the first readable image now: a bad input fails before the model is loaded
        self._first, self._start = None, 0
        for i, path in enumerate(paths):
            image = self._read(path, must=kind == "image")
            if image is not None:
                self._first, self._start = image, i
                break
        if self._first is None:
            raise OteError(f"{spec}: no readable image among its {len(paths)} image file(s), e.g. "
                           f"{self.skipped[0][1]}")
        self.frame_hw = tuple(self._first.shape[:2])

    def _read(self, path, must=False):
        try:
            return read_image(path)
        except OteError as exc:
            if must:
                raise
            reason = str(exc)
            if os.path.basename(path).startswith("._"):
                reason = f"{path}: a macOS metadata file (AppleDouble '._' companion), not an image"
            self.skipped.append((path, reason))
            return None

    def __iter__(self):
        index = 0
        for i in range(self._start, len(self.paths)):
            path = self.paths[i]
            image = self._first if i == self._start and self._first is not None else self._read(path)
            self._first = None
            if image is None:
                continue
            yield Frame(index, os.path.basename(path), image)
            index += 1

    def skipped_summary(self):
        """One line on the skipped files (None if none were)."""
        if not self.skipped:
            return None
        return (f"{self.spec}: skipped {len(self.skipped)} of {len(self.paths)} file(s) that are not readable "
                f"images, e.g. {self.skipped[0][1]}")


def open_source(spec):
    """A frame source for ``spec``: a camera index ('0'), a stream URL, a video file, an image file or a
    folder of images. Raises OteError with one line when it cannot be read."""
    spec = str(spec).strip()
    if re.fullmatch(r"\d+", spec):
        return CaptureSource(int(spec), "camera")
    if "://" in spec:
        return CaptureSource(spec, "stream")
    if not os.path.exists(spec):
        raise OteError(f"{spec}: no such file or folder (--video takes a camera index, a video file, an image "
                       "or a folder of images)")
    if os.path.isdir(spec):
        names = sorted((n for n in os.listdir(spec) if n.lower().endswith(IMAGE_EXTS)
                        and os.path.isfile(os.path.join(spec, n))), key=_natural_key)
        if not names:
            raise OteError(f"{spec}: folder has no images (files named {', '.join(IMAGE_EXTS)})")
        return ImageSource(spec, [os.path.join(spec, n) for n in names], "folder")
    if not os.access(spec, os.R_OK):
        raise OteError(f"{spec}: not readable (permission denied)")
    if spec.lower().endswith(IMAGE_EXTS):
        return ImageSource(spec, [spec], "image")
    return CaptureSource(spec, "video")


def write_video(path, images, fps=DEFAULT_VIDEO_FPS, size=None):
    """Write BGR ``images`` (resized to ``size`` (w, h), default the first image's) as a video file
    (codec by suffix: mp4v for .mp4); returns ``path``. Used to make test and benchmark videos."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in VIDEO_EXTS:
        raise OteError(f"{path}: not a video suffix ({', '.join(VIDEO_EXTS)})")
    writer = None
    try:
        for image in images:
            if size is None:
                size = (image.shape[1], image.shape[0])
            if writer is None:
                writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*VIDEO_EXTS[ext]), float(fps), tuple(size))
                if not writer.isOpened():
                    raise OteError(f"{path}: OpenCV cannot write {VIDEO_EXTS[ext]} video here")
            if (image.shape[1], image.shape[0]) != tuple(size):
                image = cv2.resize(image, tuple(size), interpolation=cv2.INTER_AREA)
            writer.write(image)
    finally:
        if writer is not None:
            writer.release()
    return path


def count_video_frames(path):
    """Number of frames a video file really decodes to (reads them all)."""
    with quiet_opencv():
        cap = cv2.VideoCapture(os.fspath(path))
    count = 0
    try:
        while cap.read()[0]:
            count += 1
    finally:
        cap.release()
    return count


# ----------------------------------------------------------------------------------------------- sinks

class VideoSink:
    """Frames into a video file (all frames at the first frame's size), moved into place on close."""

    kind = "video"
    size_note = None  # one line when the frames were padded to an even size

    def __init__(self, path, fps):
        self.path = os.fspath(path)
        self.fps = float(fps)
        self.ext = os.path.splitext(self.path)[1].lower()
        self.writer = None
        self.size = None
        self.count = 0
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, exist_ok=True)
            fd, self.tmp = tempfile.mkstemp(prefix="." + os.path.basename(self.path) + ".", suffix=self.ext,
                                            dir=directory)
            os.close(fd)
            os.chmod(self.tmp, file_mode())  # an ordinary file of the user, not mkstemp's 0600
        except OSError as exc:
            raise write_error(self.path, exc) from None

    def write(self, name, image):
        h, w = image.shape[:2]
        if self.writer is None:
            # the codecs here (mp4v, MJPG) store even sizes only: OpenCV would cut an odd 641x361 to 640x360;
            # the frame is padded to 642x362 instead (nothing of it lost) and ``size_note`` says so
            self.size = (w + w % 2, h + h % 2)
            if self.size != (w, h):
                self.size_note = (f"{self.path}: frames of {w}x{h} written as {self.size[0]}x{self.size[1]} "
                                  f"(padded with black at the right/bottom: {VIDEO_EXTS[self.ext]} video stores "
                                  f"even sizes only)")
            with quiet_opencv():
                self.writer = cv2.VideoWriter(self.tmp, cv2.VideoWriter_fourcc(*VIDEO_EXTS[self.ext]), self.fps,
                                              self.size)
            if not self.writer.isOpened():
                self.abort()
                raise OteError(f"{self.path}: OpenCV cannot write this video format here "
                               f"({VIDEO_EXTS[self.ext]} in {self.ext}); try .mp4, .avi or a folder")
        if (w + w % 2, h + h % 2) == self.size and (w, h) != self.size:  # odd size: pad by one pixel
            image = cv2.copyMakeBorder(image, 0, self.size[1] - h, 0, self.size[0] - w, cv2.BORDER_CONSTANT, value=0)
        elif (w, h) != self.size:  # images of mixed sizes: letterbox into the first one's size
            scale = min(self.size[0] / w, self.size[1] / h)
            nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
            canvas = np.zeros((self.size[1], self.size[0], 3), np.uint8)
            canvas[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
            image = canvas
        self.writer.write(image)
        self.count += 1

    def close(self):
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        if not self.count:
            self.abort()
            return
        self._check_written()
        try:
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.abort()
            raise write_error(self.path, exc) from None

    def _check_written(self):
        """OpenCV's writer never reports a failed write (a full disk leaves a video without its index):
        the finished file must open and give its last frame back, else it is removed with one line."""
        with quiet_opencv():
            cap = cv2.VideoCapture(self.tmp)
            try:
                ok = cap.isOpened()
                if ok:
                    cap.set(cv2.CAP_PROP_POS_FRAMES, self.count - 1)
                    ok = cap.read()[0]
            finally:
                cap.release()
        if ok:
            return
        free = free_bytes(self.tmp)
        self.abort()
        if free is not None and free < LOW_SPACE_BYTES:
            raise write_error(self.path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        raise OteError(f"{self.path}: OpenCV's video writer did not write the {self.count} frames readably "
                       f"({VIDEO_EXTS[self.ext]} in {self.ext}); try .mp4, .avi or a folder")

    def abort(self):
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        if os.path.exists(self.tmp):
            os.remove(self.tmp)

    def describe(self):
        return f"{self.path} ({self.count} frames of {self.size[0]}x{self.size[1]}, {self.fps:g} FPS)"


def _write_image(path, image):
    ext = os.path.splitext(path)[1].lower() or ".png"
    ok, data = cv2.imencode(ext, image)
    if not ok:
        raise OteError(f"{path}: OpenCV cannot encode {ext} images")
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
        os.chmod(tmp, file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data.tobytes())
        os.replace(tmp, path)
    except OSError as exc:  # read-only folder, full disk: one line (the frames written before stay)
        raise write_error(path, exc) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


class ImageFolderSink:
    """Each frame as an image in a folder, named after the source frame (``suffix`` forces a format,
    e.g. '.png', lossless)."""

    kind = "folder"

    def __init__(self, path, suffix=None):
        self.path = os.fspath(path)
        self.suffix = suffix
        self.count = 0
        check_writable_dir(self.path, "--output folder")

    def write(self, name, image):
        if self.suffix:
            name = os.path.splitext(name)[0] + self.suffix
        elif not name.lower().endswith(WRITABLE_EXTS):  # e.g. a .gif or .pgm input frame: written as PNG
            name = os.path.splitext(name)[0] + ".png"
        _write_image(os.path.join(self.path, name), image)
        self.count += 1

    def close(self):
        pass

    abort = close

    def describe(self):
        return f"{self.path}{os.sep} ({self.count} images)"


class ImageFileSink:
    """The single frame of an image source as one image file."""

    kind = "image"

    def __init__(self, path):
        self.path = os.fspath(path)
        self.count = 0
        check_writable_file(self.path, "--output image")

    def write(self, name, image):
        if self.count:
            raise OteError(f"{self.path}: an image file holds one frame; give a folder or a video for more")
        _write_image(self.path, image)
        self.count += 1

    def close(self):
        pass

    abort = close

    def describe(self):
        return self.path


def open_sink(output, source, image_suffix=None):
    """Where annotated frames go: a video for a video suffix, one image for an image suffix (single-image
    sources only), else a folder of images."""
    output = os.fspath(output)
    ext = os.path.splitext(output)[1].lower()
    if ext in VIDEO_EXTS:
        fps = source.fps or (IMAGES_VIDEO_FPS if source.kind in ("image", "folder") else DEFAULT_VIDEO_FPS)
        return VideoSink(output, fps)
    if ext in IMAGE_EXTS and not os.path.isdir(output):
        if source.kind != "image":
            raise OteError(f"{output}: an image file holds one frame, but {source.spec} gives several; "
                           "give a folder or a video file (.mp4, .avi)")
        return ImageFileSink(output)
    if os.path.exists(output) and not os.path.isdir(output):
        raise OteError(f"{output}: exists and is not a folder, a video (.mp4, .avi, .mkv, .mov) or an image")
    return ImageFolderSink(output, image_suffix)
