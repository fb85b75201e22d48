"""The demo (work dir ``visualize.py``, through ``apis.visualize``): live face detection on a camera, a video, an
image or a folder.

``run_demo`` opens the input (``frames.open_source``), builds a ``FramePredictor`` for a snapshot or
an IR (``inference.factory.make_predictor``), and runs ``run_frames`` with the frame runners of ``runners.py``:

* **OpenVINO IR, asynchronous** (default): a reader thread decodes and preprocesses frames into a bounded
  queue; the main thread starts ``jobs`` inference requests on an ``openvino.AsyncInferQueue`` over
  ``predictor.compiled`` (each result decoded in OpenVINO's callback with ``predictor.decode_outputs``),
  and draws, writes and shows finished frames **in input order** while the next ones are decoded and
  inferred. ``sync=True`` runs the plain loop instead (read, preprocess, infer, draw, write, one frame at
  a time): the baseline of ``benchmarks/bench_demo.py``.
* **Snapshot (.pth)**: PyTorch inference in the main thread, frames decoded ahead by the reader thread.

Each frame shows its boxes with scores >= ``score_thr`` and two FPS figures: the model's (1 / the mean
time of an inference request, from its start to its result, as OpenVINO times it) and end to end (frames
out per second of wall time, over the last 30 frames). With several requests in flight, the model's time
of a frame is the time it added to the time the inference engine was busy (the union of the requests'
intervals): the model FPS is the rate the engine sustains, not lowered by requests waiting in its queue.
A window is opened when there is a display and OpenCV has a GUI (``q`` or ``Esc`` quits; images and
folders wait for a key per image); otherwise the annotated frames go to ``output`` (a video file or a
folder). Ctrl-C stops a camera (or any input) cleanly: what was written is kept and the summary printed.
"""

import collections
import os
import sys
import time

import torch
from tqdm import tqdm

from ..inference.factory import check_ir_input_size, make_predictor
from ..artefacts.kinds import IR, Checkpoint, open_artefact
from ..utils.errors import OteError
from .drawing import draw_detections, draw_text_lines
from .frames import open_sink, open_source
from .runners import (AsyncRunner, FrameReader, FrameRunner, SyncRunner, is_tiled, keep_frame, sequential_frames,
                      supports_async)

__all__ = ["run_demo", "run_frames", "DemoStats", "gui_available", "display_available", "NO_GUI_HINT"]

WINDOW = "ote-face demo (q or Esc quits)"
NO_GUI_HINT = ("this OpenCV build has no GUI (opencv-python-headless); for a window install opencv-python "
               "instead: pip uninstall -y opencv-python-headless && pip install opencv-python")


# ------------------------------------------------------------------------------------------ display

def gui_available():
    """Whether this OpenCV build has HighGUI windows (the headless wheels say 'GUI: NONE')."""
    import cv2
    for line in cv2.getBuildInformation().splitlines():
        key, _, value = line.strip().partition(":")
        if key.strip() == "GUI":
            return value.strip().upper() not in ("NONE", "NO", "")
    return hasattr(cv2, "imshow")


def display_available():
    """Whether a window can be shown: always on Windows and macOS, with DISPLAY or WAYLAND_DISPLAY on Linux."""
    if sys.platform.startswith(("win", "darwin")):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def resolve_show(show, output, log=print):
    """Whether to open a window. ``show``: True (--show), False (--no-show) or None (when possible).
    Without a window the frames must go somewhere: ``output`` or an explicit --no-show."""
    gui, display = gui_available(), display_available()
    why = NO_GUI_HINT if not gui else (None if display else "no display here (DISPLAY is not set)")
    if show is False:
        return False
    if why is None:
        return True
    if show:
        if output is None:
            raise OteError(f"--show: {why}; give --output out.mp4 (or a folder) to write the annotated frames")
        log(f"--show: {why}; writing to {output} only")
        return False
    if output is None:
        raise OteError(f"no window can be opened: {why}. Give --output out.mp4 (or a folder) to write the "
                       "annotated frames, or --no-show to only measure the speed")
    return False


# ------------------------------------------------------------------------------------------ statistics

class DemoStats:
    """Frame count, model latency and end-to-end rate (overall, and over the last ``window`` frames)."""

    def __init__(self, window=30):
        self.frames = 0
        self.boxes = 0
        self.model_time = 0.0
        self.start = time.perf_counter()
        self.end = self.start
        self.recent_latency = collections.deque(maxlen=window)
        self.recent_out = collections.deque(maxlen=window + 1)
        self.stopped_early = False

    def add(self, latency, boxes):
        now = time.perf_counter()
        self.frames += 1
        self.boxes += boxes
        self.model_time += latency
        self.end = now
        self.recent_latency.append(latency)
        self.recent_out.append(now)

    @property
    def model_fps(self):
        return self.frames / self.model_time if self.model_time > 0 else 0.0

    @property
    def model_ms(self):
        return 1000 * self.model_time / self.frames if self.frames else 0.0

    @property
    def e2e_fps(self):
        elapsed = self.end - self.start
        return self.frames / elapsed if elapsed > 0 else 0.0

    def overlay_lines(self):
        lat = sum(self.recent_latency) / len(self.recent_latency) if self.recent_latency else 0.0
        if len(self.recent_out) == self.recent_out.maxlen:  # the last `window` frames
            span, count = self.recent_out[-1] - self.recent_out[0], len(self.recent_out) - 1
        else:  # from the start
            span, count = (self.recent_out[-1] - self.start if self.recent_out else 0.0), len(self.recent_out)
        e2e = count / span if span > 0 else 0.0
        model = f"model: {1000 * lat:.1f} ms ({1 / lat:.1f} FPS)" if lat > 0 else "model: -"
        return [model, f"end to end: {e2e:.1f} FPS" if e2e > 0 else "end to end: -"]

    def summary(self):
        plural = "s" if self.frames != 1 else ""
        return (f"{self.frames} frame{plural}, {self.boxes} boxes drawn; model {self.model_ms:.1f} ms/frame "
                f"({self.model_fps:.1f} FPS), end to end {self.e2e_fps:.1f} FPS")


def run_frames(predictor, source, sink=None, show=False, score_thr=0.5, class_names=None, jobs=2, sync=False,
               max_frames=None, progress=True, overlay=True):
    """Detect, draw and write/show every frame of ``source``; returns ``DemoStats``.

    ``jobs``: OpenVINO requests in flight (IR only); ``sync``: the plain one-frame-at-a-time loop;
    ``max_frames``: stop after that many frames; ``overlay``: draw the FPS lines."""
    import cv2
    tiled = is_tiled(predictor)
    use_async = supports_async(predictor) and not sync and not tiled
    runner = AsyncRunner(predictor, jobs) if use_async else FrameRunner(predictor) if tiled else SyncRunner(predictor)
    # tiles are cut from the original frame: the reader only decodes
    preprocess = keep_frame if tiled else predictor.preprocess
    wait_per_image = show and source.kind in ("image", "folder")
    total = source.total if not max_frames else min(source.total or max_frames, max_frames)
    bar = tqdm(total=total, unit="frame", disable=not progress or (show and source.kind == "camera"),
               dynamic_ncols=True, leave=False)
    reader = None if sync else FrameReader(source, preprocess, depth=max(2, jobs + 1), max_frames=max_frames)
    items = sequential_frames(source, preprocess, max_frames) if sync else reader
    stats = DemoStats()
    pending = collections.deque()
    quit_requested = False

    def emit(block):
        nonlocal quit_requested
        while pending:
            frame, scale = pending[0]
            result = runner.pop(frame.index, block)
            if result is None:
                return
            pending.popleft()
            det_net, latency = result
            if isinstance(det_net, BaseException):
                raise det_net
            image = frame.image
            det = det_net if tiled else predictor.postprocess(det_net, scale, image.shape[:2])
            drawn = draw_detections(image, det, score_thr, class_names)
            stats.add(latency, drawn)
            if overlay:
                draw_text_lines(image, stats.overlay_lines())
            if sink is not None:
                sink.write(frame.name, image)
            bar.update(1)
            if show and not quit_requested:
                cv2.imshow(WINDOW, image)
                key = cv2.waitKey(0 if wait_per_image else 1) & 0xFF
                if key in (ord("q"), ord("Q"), 27) or cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1:
                    quit_requested = True

    # one warm-up inference: the first request of a freshly compiled model is slower than the others
    width, height = predictor.input_size
    (predictor.inner if tiled else predictor).infer_batch(torch.zeros(1, 3, height, width))
    ok = False
    try:
        if reader is not None:
            reader.start()
        stats.start = time.perf_counter()
        try:
            for frame, tensor, scale in items:
                runner.submit(frame.index, tensor)
                pending.append((frame, scale))
                emit(block=False)
                if quit_requested:
                    stats.stopped_early = True
                    break
            runner.wait_all()
            emit(block=True)
        except KeyboardInterrupt:
            stats.stopped_early = True
            runner.wait_all()
            pending.clear()
        if show and source.kind == "image" and not quit_requested:
            cv2.waitKey(0)
        ok = True
    finally:
        if reader is not None:
            reader.close()
        bar.close()
        source.close()
        if sink is not None:
            (sink.close if ok else sink.abort)()
        if show:
            cv2.destroyAllWindows()
    return stats


# ------------------------------------------------------------------------------------------ the app

def describe_predictor(predictor, weights, use_async, jobs):
    w, h = predictor.input_size
    fit = "letterboxed (--keep-ratio)" if predictor.keep_ratio else "stretched"
    if is_tiled(predictor):
        tiw, tih = predictor.tile_size()
        fit += (f"; tiled: full frame + tiles of {tiw:g}x{tih:g} frame px (--tile-scale {predictor.tile_scale:g}, "
                f"overlap >= {predictor.overlap:g}), merged with NMS")
        predictor = predictor.inner
    if hasattr(predictor, "compiled"):
        try:
            prec = str(predictor.compiled.get_property("INFERENCE_PRECISION_HINT")).replace("<Type: '", "")
            prec = {"float32'>": "f32", "bf16'>": "bf16", "float16'>": "f16"}.get(prec, prec.rstrip("'>"))
        except Exception:  # noqa: BLE001 - only a label
            prec = getattr(predictor, "precision", "?")
        mode = f"{jobs} async requests" if use_async else "synchronous"
        return f"{weights}: OpenVINO CPU, {prec}, input {w}x{h} {fit}, {mode}"
    threads = torch.get_num_threads()
    return f"{weights}: PyTorch fp32 ({threads} thread{'' if threads == 1 else 's'}), input {w}x{h} {fit}"


def run_demo(task, load_weights, video, output=None, show=None, score_thr=0.5, precision="default",
             threads=None, jobs=2, sync=False, keep_ratio=None, input_size=None, max_frames=None, overlay=True,
             tile=None, log=print):
    """Run the demo; returns ``DemoStats``.

    ``task``: the work dir's ``apis.task.Task``; ``load_weights``: a snapshot (.pth) or an IR (.xml/.bin:
    ours, or an Open Model Zoo face detector); ``video``: camera index, video file or URL, image, or folder
    of images; ``output``: video file (.mp4, .avi, .mkv, .mov), image file (single image input) or folder
    for the annotated frames; ``show``: True / False / None = a window when there is a display and a GUI;
    ``precision`` (IR only): f32, bf16, f16 or default (the CPU plugin's own: bf16 on CPUs with AMX
    or AVX512-BF16, f32 otherwise), the demo being about speed; ``threads``: OpenVINO / torch threads (default: all);
    ``jobs``: OpenVINO requests in flight; ``sync``: the plain synchronous loop (for comparison);
    ``keep_ratio``: letterbox frames into the input instead of stretching them; ``input_size`` (w, h):
    the snapshot's inference size, or (w, None): the height from the first frame's aspect rounded up to
    the model's stride, frames letterboxed unless ``keep_ratio`` is False (IR: fixed by the IR);
    ``max_frames``: stop after that many frames."""
    if not 0 <= score_thr <= 1:
        raise OteError(f"--score-thr {score_thr}: must be between 0 and 1")
    if int(jobs) < 1:
        raise OteError(f"--jobs {jobs}: must be 1 or more")
    if not os.path.isfile(load_weights):
        raise OteError(f"{load_weights}: file not found")
    artefact = open_artefact(load_weights, expect=(Checkpoint, IR))  # read once: a snapshot or an IR
    check_ir_input_size(artefact, input_size)  # only an IR with a dynamic input takes one
    show = resolve_show(show, output, log)
    source = open_source(video)
    sink = None
    try:
        if threads and isinstance(artefact, Checkpoint):
            torch.set_num_threads(int(threads))
        # the geometry: 'Wx' takes its height from the first frame (inference.deploy.deployment_geometry)
        predictor = make_predictor(task, artefact, precision=precision, threads=threads, input_size=input_size,
                                   keep_ratio=keep_ratio, batch_size=1, tile=tile, frame_hw=source.frame_hw)
        use_async = supports_async(predictor) and not sync and not is_tiled(predictor)
        log(describe_predictor(predictor, load_weights, use_async, jobs))
        if output is not None:
            sink = open_sink(output, source)
        what = {"camera": f"camera {source.spec}", "stream": str(source.spec)}.get(source.kind, str(source.spec))
        count = ""
        if source.kind == "folder":  # the image files; unreadable ones are skipped (and counted) as they come
            count = f", {source.total} image file{'' if source.total == 1 else 's'}"
        elif source.kind == "video" and source.total:
            count = f", {source.total} frame{'' if source.total == 1 else 's'}"
        log(f"input: {what} ({source.kind}{count})"
            + ("; Ctrl-C stops" if source.kind in ("camera", "stream") and not show else ""))
    except BaseException:
        source.close()
        raise
    stats = run_frames(predictor, source, sink, show=show, score_thr=score_thr, class_names=task.classes,
                       jobs=jobs, sync=sync, max_frames=max_frames, overlay=overlay)
    skipped = getattr(source, "skipped_summary", lambda: None)()
    if skipped:
        log(f"warning: {skipped}")
    line = ("stopped early: " if stats.stopped_early else "done: ") + stats.summary()
    if sink is not None and sink.count:
        line += f"; wrote {sink.describe()}"
    if getattr(sink, "size_note", None):
        log(f"note: {sink.size_note}")
    log(line)
    return stats
