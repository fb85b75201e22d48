"""Running an OpenVINO IR (ours, or Open Model Zoo's face detectors) as a frame predictor."""

import logging
import os

import numpy as np
import torch
from torchvision.ops import box_iou as tv_box_iou

from ..artefacts.kinds import open_ir
from ..models.heads import ExportFamily
from ..utils.errors import OteError
from .predictor import FramePredictor

log = logging.getLogger(__name__)

PRECISIONS = {"f32": "f32", "bf16": "bf16", "f16": "f16", "default": None}
RESIZE_STRETCH = "standard"  # Model API's rt_info model_info resize_type (export/model_info.py writes it)
RESIZE_KEEP_RATIO = "fit_to_window"  # letterboxed: one scale factor, zero padding at the right and bottom


def ir_keep_ratio(model):
    """Whether an IR's own Model API ``model_info`` says its frames are letterboxed (``resize_type``
    ``fit_to_window``), for an IR without export_info.yaml; False without one (e.g. Open Model Zoo's)."""
    if not model.has_rt_info(["model_info", "resize_type"]):
        return False
    return model.get_rt_info(["model_info", "resize_type"]).astype(str) == RESIZE_KEEP_RATIO


def _ov_message(exc):
    """The informative line of an OpenVINO exception (they come with 'Exception from src/...' lines)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception from", "Check "))]
    return (useful or lines or [type(exc).__name__])[-1]


def find_ir_pair(path):
    """(xml, bin) for a path to either file, or an ``artefacts.kinds.IR`` already opened
    (``artefacts.kinds.open_ir``); a clear error when one of them is missing."""
    ir = open_ir(path)
    return ir.xml, ir.bin


def read_ir(path, core=None):
    """``openvino.Model`` of an IR, with one-line errors for unreadable, truncated or mismatched files."""
    import openvino as ov
    xml, bin_ = find_ir_pair(path)
    core = core or ov.Core()
    try:
        return core.read_model(xml, bin_)
    except RuntimeError as exc:
        msg = _ov_message(exc)
        if "weights" in msg.lower() or "bin" in msg.lower():
            raise OteError(f"{bin_}: weights file is truncated or does not belong to {os.path.basename(xml)} "
                           f"({msg})") from exc
        raise OteError(f"{xml}: not a readable OpenVINO IR ({msg})") from exc


def _dims(shape):
    """'[1,3,?,?]'-style text of a PartialShape."""
    if shape.rank.is_dynamic:
        return str(shape)
    return "[" + ", ".join(str(d.get_length()) if d.is_static else "?" for d in shape) + "]"


def ir_input_is_dynamic(path_or_model):
    """Whether an IR's single input has a dynamic height or width (``static_input`` then needs a size)."""
    model = read_ir(path_or_model) if isinstance(path_or_model, (str, os.PathLike)) else path_or_model
    if len(model.inputs) != 1:
        return False
    shape = model.inputs[0].get_partial_shape()
    return shape.rank.is_static and shape.rank.get_length() == 4 and not (shape[2].is_static and shape[3].is_static)


def _is_static_image_input(shape):
    """Whether a PartialShape is a static [1, 3, H, W]."""
    return (shape.rank.is_static and shape.is_static and shape.rank.get_length() == 4
            and shape[0].get_length() == 1 and shape[1].get_length() == 3)


def static_input(model, name, size=None, why="the template's input size"):
    """``model`` with its single input made a static [1, 3, H, W] (``model.reshape``), and a one-line note
    saying what was changed (None when the input already was [1, 3, H, W]).

    This is the one decision on an IR's input shape (eval.py, visualize.py, import_openvino_weights.py and
    PTQ read IRs through it): converters run without a fixed shape write IRs with inputs such as
    [1, 3, ?, ?] or [?, 3, 256, 256] (``compile_model`` accepts them, but the detectors' decoding and our
    letterboxing need one size). A dynamic or other batch becomes 1; a dynamic height or width becomes
    ``size`` (w, h) - given by the caller (--input-size, else the template's input size: ``why`` says
    which); a static height and width are the IR's own. Raises OteError (one line) when the input is
    not 4-D, has other than 3 channels, or has a dynamic height or width and no ``size`` is given."""
    import openvino as ov
    if len(model.inputs) != 1:
        raise OteError(f"{name}: expected an IR with one input, found {len(model.inputs)}")
    shape = model.inputs[0].get_partial_shape()
    if shape.rank.is_dynamic or shape.rank.get_length() != 4:
        raise OteError(f"{name}: input shape {shape} is not [1, 3, H, W]")
    _, c, h, w = shape
    if c.is_static and c.get_length() != 3:
        raise OteError(f"{name}: input shape {_dims(shape)} is not [1, 3, H, W] (3 channels)")
    if _is_static_image_input(shape):
        return model, None
    hw_dynamic = not (h.is_static and w.is_static)
    if hw_dynamic:
        if size is None:
            raise OteError(f"{name}: input {_dims(shape)} has a dynamic height or width; give the size to run it "
                           f"at (--input-size WxH)")
        width, height = (int(v) for v in size)
    else:
        width, height = w.get_length(), h.get_length()
    target = [1, 3, height, width]
    try:
        model.reshape({model.inputs[0]: ov.PartialShape(target)})
    except RuntimeError as exc:
        raise OteError(f"{name}: input {_dims(shape)} cannot be reshaped to {target} ({_ov_message(exc)})") from exc
    note = f"{name}: input {_dims(shape)} is not a static [1, 3, H, W]: reshaped to {target}"
    return model, note + (f" ({why})" if hw_dynamic else " (one image at a time)")


def detection_output_node(model):
    for op in model.get_ordered_ops():
        if op.get_type_name() == "DetectionOutput":
            return op
    return None


def output_contract(model):
    """Which of the two Open Model Zoo detection-output contracts (``models.heads.ExportFamily``) an IR
    has: ``ExportFamily.SSD`` (one output, DetectionOutput's [1, 1, N, 7]) or ``ExportFamily.NMS``
    (``boxes`` [N, 5] and ``labels`` [N]); None when it has neither."""
    names = [set(o.get_names()) for o in model.outputs]
    if len(model.outputs) == 1:
        shape = model.outputs[0].get_partial_shape()
        if shape.rank.is_static and shape.rank.get_length() == 4 and shape[3].is_static and shape[3].get_length() == 7:
            return ExportFamily.SSD
    if len(model.outputs) == 2 and any("boxes" in n for n in names) and any("labels" in n for n in names):
        return ExportFamily.NMS
    return None


class OpenVINOPredictor(FramePredictor):
    """An OpenVINO IR (ours, or Open Model Zoo's face detectors) as a frame predictor (see
    ``inference/predictor.py``): original BGR frames in, [N, 6] (x1, y1, x2, y2, score, label) in frame
    pixels out.

    The IR has one [1, 3, H, W] input (BGR 0..255) and either output contract of ``output_contract``:

    * ``detection_out`` [1, 1, N, 7] (image_id, label, confidence, x_min, y_min, x_max, y_max, normalised
      to [0, 1]; rows after image_id -1 are padding). Labels are mapped to our class indices: an IR whose
      background is class 0 (``background_label_id == 0``) gives face as 1, which becomes 0. Boxes are
      clipped to the image, as the PyTorch model's decoding does (OMZ IRs do not clip).
    * ``boxes`` [N, 5] (x1, y1, x2, y2, score in input pixels) and ``labels`` [N] (face-detection-0205/0206);
      rows with score 0 are padding.

    An IR with a dynamic or other input (``[1, 3, ?, ?]``, ``[?, 3, H, W]``) is made a static [1, 3, H, W]
    first (``static_input``: a dynamic height and width become ``input_size`` (w, h); ``size_why`` says where
    that size comes from), said in one log line and kept in ``.reshaped``; ``.model`` is the model as run.

    ``.compiled`` (the CompiledModel), ``preprocess`` and ``decode_outputs`` let a caller run it with
    ``openvino.AsyncInferQueue``.
    """

    batch_size = 1

    def __init__(self, weights, precision="f32", threads=None, device="CPU", keep_ratio=False, input_size=None,
                 size_why="the template's input size"):
        import openvino as ov
        if precision not in PRECISIONS:
            raise OteError(f"unknown precision '{precision}' (one of {', '.join(PRECISIONS)})")
        self.core = ov.Core()
        self.xml, self.bin = find_ir_pair(weights)
        model, self.reshaped = static_input(read_ir(self.xml, self.core), self.xml, input_size, size_why)
        if self.reshaped:
            log.info(self.reshaped)
        self.precision = precision
        self.threads = threads
        config = {}
        if PRECISIONS[precision]:
            config["INFERENCE_PRECISION_HINT"] = PRECISIONS[precision]
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self._check(model, self.xml)
        try:
            compiled = self.core.compile_model(model, device, config)
        except RuntimeError as exc:
            raise OteError(f"{self.xml}: OpenVINO cannot compile it on {device} ({_ov_message(exc)})") from exc
        self._bind(model, compiled, keep_ratio)

    @classmethod
    def from_compiled(cls, model, compiled, keep_ratio=False, name="model"):
        """A predictor over an ``openvino.Model`` already compiled (e.g. by NNCF's accuracy control)."""
        self = cls.__new__(cls)
        self.xml = self.bin = name
        self.precision, self.threads, self.reshaped = "as compiled", None, None
        self._check(model, name)
        self._bind(model, compiled, keep_ratio)
        return self

    def _check(self, model, name):
        if len(model.inputs) != 1:
            raise OteError(f"{name}: expected an IR with one input, found {len(model.inputs)}")
        shape = model.inputs[0].get_partial_shape()
        if not _is_static_image_input(shape):  # the constructor made it so (static_input); from_compiled: not
            raise OteError(f"{name}: input shape {_dims(shape)} is not a static [1, 3, H, W]")
        if output_contract(model) is None:
            found = ", ".join(f"{o.get_any_name()} {o.get_partial_shape()}" for o in model.outputs)
            raise OteError(f"{name}: outputs ({found}) are neither DetectionOutput's [1, 1, N, 7] nor "
                           f"'boxes' [N, 5] + 'labels' [N]")

    def _bind(self, model, compiled, keep_ratio):
        _, _, h, w = (int(d) for d in model.inputs[0].get_partial_shape().to_shape())
        self.input_size = (w, h)
        self.keep_ratio = keep_ratio
        self.contract = output_contract(model)
        det = detection_output_node(model)
        self.background_label_id = int(det.get_attributes()["background_label_id"]) if det is not None else -1
        self.label_offset = 1 if self.background_label_id == 0 else 0
        self.model = model
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        if self.contract == ExportFamily.NMS:
            names = [o.get_names() for o in compiled.outputs]
            self._boxes_index = next(i for i, n in enumerate(names) if any("boxes" in x for x in n))
        self.input_name = model.inputs[0].get_any_name()

    def infer(self, img):
        """One network input [1, 3, H, W] float32 -> the IR's output arrays, in ``compiled.outputs`` order."""
        self.request.infer({0: np.ascontiguousarray(img, dtype=np.float32)})
        return [self.request.get_output_tensor(i).data.copy() for i in range(len(self.compiled.outputs))]

    def decode_outputs(self, outputs):
        """The IR's output arrays -> float32 [N, 6] (x1, y1, x2, y2, score, label) in network pixels."""
        width, height = self.input_size
        if self.contract == ExportFamily.SSD:
            rows = np.asarray(outputs[0]).reshape(-1, 7)
            end = np.nonzero(rows[:, 0] < 0)[0]
            rows = rows[: end[0]] if end.size else rows
            boxes = rows[:, 3:7] * np.array([width, height, width, height], np.float32)
            scores, labels = rows[:, 2:3], rows[:, 1:2] - self.label_offset
        else:
            boxes_scores = np.asarray(outputs[self._boxes_index], np.float32).reshape(-1, 5)
            labels = np.asarray(outputs[1 - self._boxes_index]).reshape(-1, 1).astype(np.float32)
            keep = boxes_scores[:, 4] > 0
            boxes, scores, labels = boxes_scores[keep, :4], boxes_scores[keep, 4:5], labels[keep]
        boxes = np.clip(boxes, 0, [width, height, width, height])
        return np.concatenate([boxes, scores, labels], axis=1).astype(np.float32)

    def infer_batch(self, batch):
        width, height = self.input_size
        batch = batch.cpu().numpy() if hasattr(batch, "cpu") else np.asarray(batch)
        if batch.ndim != 4 or batch.shape[1:] != (3, height, width):
            raise OteError(f"{self.xml}: expects images of [3, {height}, {width}], got {list(batch.shape[1:])}")
        return [self.decode_outputs(self.infer(img[None])) for img in batch]


def box_iou(a, b):
    """IoU matrix of [N, 4+] and [M, 4+] boxes (x1, y1, x2, y2), as numpy (torchvision's box_iou)."""
    to_t = lambda x: torch.as_tensor(np.asarray(x, np.float64)[:, :4])  # noqa: E731
    return tv_box_iou(to_t(a), to_t(b)).numpy()


def match_detections(a, b, min_score=0.0):
    """Greedy one-to-one matching of two detection lists ([N, 6], best first) by IoU.

    Returns dict: matched pairs count, unmatched in a / b (above ``min_score``), the smallest IoU of a
    matched pair, the largest score difference, and the largest relative box-coordinate difference
    (relative to the box size)."""
    a = np.asarray(a)[np.asarray(a)[:, 4] > min_score] if len(a) else np.zeros((0, 6))
    b = np.asarray(b)[np.asarray(b)[:, 4] > min_score] if len(b) else np.zeros((0, 6))
    stats = {"n_a": len(a), "n_b": len(b), "matched": 0, "unmatched_a": [], "unmatched_b": [],
             "min_iou": 1.0, "max_score_diff": 0.0, "max_box_rel_diff": 0.0}
    if not len(a) or not len(b):
        stats["unmatched_a"], stats["unmatched_b"] = a[:, 4].tolist(), b[:, 4].tolist()
        return stats
    iou = box_iou(a, b)
    used = np.zeros(len(b), bool)
    for i in np.argsort(-a[:, 4], kind="stable"):
        cand = np.where(used, -1.0, iou[i])
        j = int(np.argmax(cand))
        if cand[j] <= 0.5:
            stats["unmatched_a"].append(float(a[i, 4]))
            continue
        used[j] = True
        stats["matched"] += 1
        stats["min_iou"] = min(stats["min_iou"], float(iou[i, j]))
        stats["max_score_diff"] = max(stats["max_score_diff"], float(abs(a[i, 4] - b[j, 4])))
        size = max(float(a[i, 2] - a[i, 0]), float(a[i, 3] - a[i, 1]), 1e-6)
        stats["max_box_rel_diff"] = max(stats["max_box_rel_diff"], float(np.abs(a[i, :4] - b[j, :4]).max()) / size)
    stats["unmatched_b"] = b[~used, 4].tolist()
    return stats
