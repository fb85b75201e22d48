"""Frame runners of the demo: inference of a stream of frames, in order, with decoding ahead.

* ``FrameReader``: a thread that decodes and preprocesses frames into a bounded queue (in order);
  ``sequential_frames`` is the same without the thread.
* ``SyncRunner`` (one preprocessed frame at a time in the calling thread), ``FrameRunner`` (whole frames, for a
  ``TiledPredictor``) and ``AsyncRunner`` (``jobs`` OpenVINO requests in flight on an ``AsyncInferQueue``): each
  ``submit(index, item)`` and ``pop(index, block) -> (detections [N, 6] or an exception, seconds)``.
"""

import queue
import threading
import time

import numpy as np
import torch

_END = object()


def supports_async(predictor):
    return hasattr(predictor, "compiled") and hasattr(predictor, "decode_outputs")


class SyncRunner:
    """Inference in the calling thread: ``submit`` computes the result at once."""

    def __init__(self, predictor):
        self.predictor = predictor
        self.results = {}

    def submit(self, index, tensor):
        t0 = time.perf_counter()
        det = self.predictor.infer_batch(tensor[None])[0]
        self.results[index] = (det, time.perf_counter() - t0)

    def pop(self, index, block):
        return self.results.pop(index, None)

    def wait_all(self):
        pass


class FrameRunner:
    """Inference of a whole frame in the calling thread with ``predictor.predict_frames`` (a
    ``TiledPredictor``: its tiles and full-frame pass); the result is already in frame pixels."""

    def __init__(self, predictor):
        self.predictor = predictor
        self.results = {}

    def submit(self, index, image):
        t0 = time.perf_counter()
        det = self.predictor.predict_frames([image])[0]
        self.results[index] = (det, time.perf_counter() - t0)

    pop = SyncRunner.pop
    wait_all = SyncRunner.wait_all


def is_tiled(predictor):
    """Whether ``predictor`` is a ``TiledPredictor`` (it needs whole frames, not preprocessed tensors)."""
    return getattr(predictor, "inner", None) is not None


def keep_frame(image):
    return image, None


class AsyncRunner:
    """``jobs`` OpenVINO infer requests in flight (``AsyncInferQueue``); results keyed by frame index."""

    def __init__(self, predictor, jobs):
        import openvino as ov
        self.predictor = predictor
        self.n_outputs = len(predictor.compiled.outputs)
        self.queue = ov.AsyncInferQueue(predictor.compiled, int(jobs))
        self.queue.set_callback(self._done)
        self.results = {}
        self.last_done = 0.0
        self.cond = threading.Condition()

    def _done(self, request, userdata):
        index, t0 = userdata
        now = time.perf_counter()
        try:  # OpenVINO's own end time (taken before this Python callback waits for the GIL)
            now = min(now, t0 + float(request.latency) / 1000)
        except (AttributeError, TypeError, ValueError):
            pass
        # the time this request added to the inference engine's busy time (the union of the requests'
        # start..end intervals, callbacks coming in end order): with several requests queued on one CPU
        # stream, a request's own start..end also counts the time it waited for the one before
        latency = max(0.0, now - max(t0, self.last_done))
        self.last_done = max(self.last_done, now)
        try:
            outputs = [request.get_output_tensor(i).data for i in range(self.n_outputs)]
            det = np.array(self.predictor.decode_outputs(outputs), np.float32, copy=True)
        except Exception as exc:  # re-raised in the main thread
            det = exc
        with self.cond:
            self.results[index] = (det, latency)
            self.cond.notify_all()

    def submit(self, index, tensor):
        array = tensor.numpy() if isinstance(tensor, torch.Tensor) else np.asarray(tensor)
        self.queue.get_idle_request_id()  # waits for a free request, so that t0 is the start of inference
        self.queue.start_async({0: np.ascontiguousarray(array[None], np.float32)}, (index, time.perf_counter()))

    def pop(self, index, block):
        with self.cond:
            if block:
                self.cond.wait_for(lambda: index in self.results)
            return self.results.pop(index, None)

    def wait_all(self):
        self.queue.wait_all()


class FrameReader(threading.Thread):
    """Decodes and preprocesses frames ahead of inference into a bounded queue (in order)."""

    def __init__(self, source, preprocess, depth, max_frames=None):
        super().__init__(daemon=True, name="demo-reader")
        self.source, self.preprocess, self.max_frames = source, preprocess, max_frames
        self.items = queue.Queue(maxsize=max(1, depth))
        self.stop = threading.Event()

    def _put(self, item):
        while not self.stop.is_set():
            try:
                self.items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(self):
        try:
            for frame in self.source:
                if self.stop.is_set() or not self._put((frame, *self.preprocess(frame.image))):
                    break
                if self.max_frames and frame.index + 1 >= self.max_frames:
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self._put(exc)
        self._put(_END)

    def __iter__(self):
        while True:
            item = self.items.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self):
        self.stop.set()
        self.join(timeout=5)


def sequential_frames(source, preprocess, max_frames):
    for frame in source:
        yield (frame, *preprocess(frame.image))
        if max_frames and frame.index + 1 >= max_frames:
            return
