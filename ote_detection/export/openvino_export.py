"""Conversion of an InferenceModel to OpenVINO IR in the Open Model Zoo SSD format.

The network part (backbone and heads; the input normalisation folded into the first convolution) is
converted from TorchScript with ``openvino.convert_model``; the SSD post-processing is appended as
one ``DetectionOutput`` (opset8) layer whose priors are our anchors, as a constant. The IR then reads

* input ``image``: [1, 3, H, W] f32, planar BGR, 0..255 (no mean/scale to apply outside);
* output ``detection_out``: [1, 1, keep_top_k, 7] rows of (image_id, label, confidence, x_min,
  y_min, x_max, y_max), coordinates normalised to [0, 1]; the row after the last detection has
  image_id -1 (end marker, zeros after it). Labels are class indices (0 = face): the background is
  the last softmax class (``background_label_id = num_classes``), as in OMZ's face-detection-0200
  and -0204 IRs.
"""

import copy
import math

import numpy as np
import torch
import torch.nn as nn

from ..utils.errors import OteError

INPUT_NAME = "image"
OUTPUT_NAME = "detection_out"
_FLOAT_MAX = float(np.finfo(np.float32).max)


class _FoldedInput(nn.Module):
    """BGR 0..255 -> the detector, with the channel swap and the 1/std of the normalisation folded into the
    first convolution's weights (as Open Model Zoo's IRs have it); only a non-zero mean stays a Subtract,
    so zero padding keeps its meaning. ``build`` returns None when the first layer is not a plain Conv2d
    reading the input (the normalisation then stays in the graph, as InferenceModel computes it)."""

    def __init__(self, detector, mean):
        super().__init__()
        self.detector = detector
        self.register_buffer("mean", mean.clone(), persistent=False)
        self.subtract = bool(torch.any(mean != 0))

    @classmethod
    def build(cls, inference_model):
        detector = copy.deepcopy(inference_model.detector).eval()
        first = _first_conv_on_input(detector)
        if first is None:
            return None
        std = inference_model.std.reshape(-1)
        mean = inference_model.mean.reshape(1, -1, 1, 1)
        with torch.no_grad():
            weight = first.weight / std.reshape(1, -1, 1, 1)
            if inference_model.to_rgb:
                weight = weight.flip(1)
                mean = mean.flip(1)
            first.weight.copy_(weight)
        return cls(detector, mean)

    def forward(self, bgr):
        x = bgr - self.mean if self.subtract else bgr
        return self.detector(x)


def _first_conv_on_input(detector):
    """The Conv2d that reads the network input directly (the first layer), or None."""
    seen = {}

    def hook(module, inputs, output):
        if "first" not in seen:
            seen["first"] = (module, inputs[0])

    handles = [m.register_forward_hook(hook) for m in detector.modules() if isinstance(m, nn.Conv2d)]
    probe = torch.zeros(1, 3, 64, 64)
    try:
        with torch.no_grad():
            detector(probe)
    finally:
        for h in handles:
            h.remove()
    first = seen.get("first")
    if first is None or first[1] is not probe or first[0].in_channels != 3 or first[0].groups != 1:
        return None
    return first[0]


class RawSSDOutputs(nn.Module):
    """BGR 0..255 image -> (softmax scores [B, A * (C + 1)], box deltas [B, A * 4]), DetectionOutput's inputs.

    The deltas are those of the box coder with its means added and its dw/dh clamp applied, divided
    back by the stds (which DetectionOutput multiplies in again as prior variances); with zero means
    (all templates) that is only the clamp, applied to the raw deltas.
    """

    def __init__(self, inference_model, fold_normalisation=True):
        super().__init__()
        folded = _FoldedInput.build(inference_model) if fold_normalisation else None
        self.model = folded if folded is not None else inference_model
        self.folded = folded is not None
        head = inference_model.detector.bbox_head
        coder = head.bbox_coder
        stds = torch.tensor(coder.stds, dtype=torch.float32)
        means = torch.tensor(coder.means, dtype=torch.float32)
        self.register_buffer("offset", means / stds, persistent=False)
        self.has_offset = bool(torch.any(means != 0))
        ratio = float(getattr(coder, "max_ratio", math.inf))
        if math.isfinite(ratio):
            hi = torch.tensor([_FLOAT_MAX, _FLOAT_MAX, ratio / coder.stds[2], ratio / coder.stds[3]])
            lo = torch.tensor([-_FLOAT_MAX, -_FLOAT_MAX, -ratio / coder.stds[2], -ratio / coder.stds[3]])
            # the clamp acts on d = delta * std + mean; in units of std that is (bound - mean) / std
            self.register_buffer("hi", hi - means / stds, persistent=False)
            self.register_buffer("lo", lo - means / stds, persistent=False)
            self.clamp = True
        else:
            self.clamp = False

    def forward(self, image):
        head = self.model.detector.bbox_head
        cls_scores, bbox_preds = self.model(image)
        logits, deltas = head.flatten_outputs(cls_scores, bbox_preds)
        scores = logits.softmax(dim=-1)
        if self.clamp:
            deltas = torch.minimum(torch.maximum(deltas, self.lo), self.hi)
        if self.has_offset:
            deltas = deltas + self.offset
        batch = image.shape[0]
        return scores.reshape(batch, -1), deltas.reshape(batch, -1)


def featmap_sizes(inference_model, input_size):
    """Per-level (h, w) of the head's outputs for an input of ``input_size`` (w, h)."""
    width, height = input_size
    with torch.no_grad():
        cls_scores, _ = inference_model(torch.zeros(1, 3, height, width))
    return [tuple(s.shape[-2:]) for s in cls_scores]


def prior_tensor(inference_model, input_size):
    """DetectionOutput's third input: [1, 2, A * 4] (normalised anchors; the coder's stds as variances)."""
    head = inference_model.detector.bbox_head
    width, height = input_size
    anchors = head.anchor_generator.grid_anchors(featmap_sizes(inference_model, input_size), "cpu").double()
    anchors = anchors / torch.tensor([width, height, width, height], dtype=torch.float64)
    variances = torch.tensor(head.bbox_coder.stds, dtype=torch.float64).expand_as(anchors)
    return torch.stack([anchors.reshape(-1), variances.reshape(-1)])[None].float().numpy()


def detection_output_attrs(test_cfg, num_classes, clip=True):
    """DetectionOutput attributes equivalent to the head's decode + NMS with ``test_cfg``."""
    top_k = int(test_cfg.get("nms_pre_classwise", -1) or -1)
    keep_top_k = int(test_cfg.get("max_per_img", -1) or -1)
    return {
        "background_label_id": int(num_classes),   # softmax order is (classes..., background)
        "top_k": top_k if top_k > 0 else -1,
        "keep_top_k": [keep_top_k if keep_top_k > 0 else 200],
        "code_type": "caffe.PriorBoxParameter.CENTER_SIZE",
        "share_location": True,
        "nms_threshold": float((test_cfg.get("nms") or {}).get("iou_threshold", 0.45)),
        "confidence_threshold": float(test_cfg.get("score_thr", 0.0)),
        "variance_encoded_in_target": False,
        "normalized": True,
        "clip_before_nms": bool(clip),   # our decode clips to the image before NMS
        "clip_after_nms": False,
        "decrease_label_id": False,
        "input_height": 1,
        "input_width": 1,
        "objectness_score": 0.0,
    }


def convert_to_openvino(inference_model, input_size):
    """The IR (``openvino.Model``) of ``inference_model`` for a [1, 3, h, w] input, with DetectionOutput.

    Returns ``(model, info)``; ``info`` holds the DetectionOutput attributes and the number of priors.
    """
    import openvino as ov
    from openvino import opset8

    inference_model = inference_model.eval()
    width, height = (int(v) for v in input_size)
    head = inference_model.detector.bbox_head
    if not all(hasattr(head, a) for a in ("anchor_generator", "bbox_coder", "flatten_outputs", "cls_out_channels")):
        raise OteError(f"export to the OMZ SSD format needs an SSD head (anchors + box coder); "
                       f"{type(head).__name__} is not one")
    raw = RawSSDOutputs(inference_model).eval()
    example = torch.zeros(1, 3, height, width)
    with torch.no_grad():
        scores, deltas = raw(example)
    priors = prior_tensor(inference_model, (width, height))
    num_priors = priors.shape[-1] // 4
    if deltas.shape[-1] != num_priors * 4 or scores.shape[-1] != num_priors * head.cls_out_channels:
        raise OteError(f"head outputs ({scores.shape[-1]} scores, {deltas.shape[-1]} deltas) do not fit "
                       f"{num_priors} anchors")
    try:
        with torch.no_grad():
            net = ov.convert_model(raw, example_input=example, input=[ov.PartialShape([1, 3, height, width])])
    except Exception as exc:  # conversion failures come as many kinds of exceptions
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OteError(f"OpenVINO conversion failed: {first}") from exc
    attrs = detection_output_attrs(head.test_cfg, head.num_classes)
    loc = net.get_results()[1].input_value(0)
    conf = net.get_results()[0].input_value(0)
    prior_const = opset8.constant(priors, ov.Type.f32, name="priors")
    det = opset8.detection_output(loc, conf, prior_const, attrs, name=OUTPUT_NAME)
    result = opset8.result(det.output(0), name=OUTPUT_NAME + "/sink_port_0")
    param = net.get_parameters()[0]
    param.set_friendly_name(INPUT_NAME)
    param.output(0).get_tensor().set_names({INPUT_NAME})
    det.output(0).get_tensor().set_names({OUTPUT_NAME})
    model = ov.Model([result], [param], "face-detection")
    return model, {"detection_output": attrs, "num_priors": int(num_priors),
                   "normalisation_in_first_conv": raw.folded}


def save_openvino(model, xml_path):
    """Write .xml + .bin in FP32 (no FP16 weight compression)."""
    import openvino as ov
    ov.save_model(model, xml_path, compress_to_fp16=False)


class _RawHeadsForOnnx(nn.Module):
    def __init__(self, inference_model):
        super().__init__()
        self.model = inference_model

    def forward(self, image):
        head = self.model.detector.bbox_head
        logits, deltas = head.flatten_outputs(*self.model(image))
        return logits.softmax(dim=-1), deltas


def export_onnx(inference_model, input_size, path):
    """ONNX of the network without post-processing: ``scores`` [1, A, C + 1] (softmax, background last) and
    ``deltas`` [1, A, 4] (the box coder's raw deltas), for input ``image`` [1, 3, h, w] BGR 0..255."""
    width, height = (int(v) for v in input_size)
    module = _RawHeadsForOnnx(inference_model.eval()).eval()
    example = torch.zeros(1, 3, height, width)
    try:
        with torch.no_grad():
            torch.onnx.export(module, (example,), path, input_names=[INPUT_NAME], output_names=["scores", "deltas"],
                              opset_version=13, dynamo=False)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OteError(f"ONNX export failed: {first}") from exc
