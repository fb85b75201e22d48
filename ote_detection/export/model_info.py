"""The ``model_info`` section of an IR's runtime info: what OpenVINO Model API (and DL Streamer's
``gvadetect`` without a model-proc file) needs to run the IR unaided.

``model_api.models.DetectionModel.create_model("model.xml")`` reads ``rt_info['model_info']`` (the keys
OTX writes) and needs no other argument. Every IR we write gets it here, from ``set_model_info``, called
by ``exporter.convert_to_openvino`` (export.py, compress.py --ptq, choose_input_size) and kept by
``save_openvino`` for models derived from such an IR (NNCF's INT8 models). The values are strings, as
Model API parses them (lists space-separated).

* ``model_type``: ``ssd`` for both of our output contracts. Model API's ``SSD`` wrapper tries, in
  order, ``SingleOutputParser`` (one [1, 1, N, 7] output: ``detection_out`` of the SSD adapter) and
  ``BoxesLabelsParser`` (an output whose last dimension is 5, x1 y1 x2 y2 score in input pixels, plus
  one named ``labels``: the FCOS/ATSS adapter's ``boxes`` + ``labels``, as OMZ's face-detection-0205).
* ``labels``: the template's classes (``face``), in class-index order (our labels are 0-based).
* ``confidence_threshold``: the score from which a face is shown (0.5, the demo's ``--score-thr``
  default); ``iou_threshold``: the IoU of the NMS inside the IR (Model API does not run NMS again
  unless ``nms_execute`` is set).
* ``resize_type``: ``standard`` (stretch to the input, as training and eval.py do) for IRs of a fixed
  WxH; ``fit_to_window`` for ``--input-size Wx`` IRs, whose frames are scaled by one factor and padded
  at the right and bottom with zeros (``inference.predictor.letterbox``; Model API's ``fit_to_window`` pads
  the same way; its ``fit_to_window_letterbox`` centres the frame, which the network was not run with
  by eval.py, the demo and the input-size sweep).
* ``reverse_input_channels`` False, ``mean_values`` 0 0 0, ``scale_values`` 1 1 1, ``pad_value`` 0: the
  IR's input is planar BGR 0..255, the normalisation (mean/std, RGB order) is folded into the first
  convolution (or kept in the graph): nothing is applied outside. Model API declares its input tensor
  BGR, so frames go in as OpenCV reads them.
"""

from ..inference.openvino_predictor import RESIZE_KEEP_RATIO, RESIZE_STRETCH
from ..utils.errors import OteError

DEFAULT_CONFIDENCE_THRESHOLD = 0.5  # the demo's --score-thr default


def _fmt(value):
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (list, tuple)):
        return " ".join(_fmt(v) for v in value)
    if isinstance(value, float):
        return repr(float(value))
    return str(value)


def model_info(head, classes=("face",), keep_ratio=False, confidence_threshold=DEFAULT_CONFIDENCE_THRESHOLD):
    """Model API's ``model_info`` (str -> str) of an IR of ``head`` (its ``test_cfg``'s NMS IoU) for
    ``classes``, letterboxed (``keep_ratio``, input size ``Wx``) or stretched."""
    classes = [str(c) for c in classes]
    if any(not c or any(ch.isspace() for ch in c) for c in classes):
        raise OteError(f"class names {classes} must be non-empty and without spaces (Model API's labels list)")
    nms = (getattr(head, "test_cfg", None) or {}).get("nms") or {}
    info = {
        "model_type": "ssd",
        "labels": classes,
        "confidence_threshold": float(confidence_threshold),
        "iou_threshold": float(nms.get("iou_threshold", 0.45)),
        "resize_type": RESIZE_KEEP_RATIO if keep_ratio else RESIZE_STRETCH,
        "reverse_input_channels": False,
        "mean_values": [0, 0, 0],
        "scale_values": [1, 1, 1],
        "pad_value": 0,
        "task_type": "detection",
    }
    return {k: _fmt(v) for k, v in info.items()}


def set_model_info(ov_model, info):
    """Write ``info`` (str -> str) into ``ov_model``'s ``rt_info['model_info']``; returns ``ov_model``."""
    for key, value in info.items():
        ov_model.set_rt_info(str(value), ["model_info", key])
    return ov_model


def get_model_info(ov_model):
    """``rt_info['model_info']`` of ``ov_model`` as a dict of strings ({} when absent)."""
    if not ov_model.has_rt_info(["model_info"]):
        return {}
    section = ov_model.get_rt_info()["model_info"]
    try:
        items = section.astype(dict).items()
    except (AttributeError, RuntimeError, TypeError):
        items = section.items() if hasattr(section, "items") else []
    return {str(k): (v.astype(str) if hasattr(v, "astype") else str(v)) for k, v in items}
