"""Export adapters, one per head family (``head.export_family``): how the network's raw outputs become
Open Model Zoo's output contract in the IR, and what ``export_info.yaml`` says about it.

* ``SSDAdapter`` (``ExportFamily.SSD``): ``DetectionOutput`` (opset8) on the softmax scores and box deltas, with our
  anchors as a constant prior tensor. Output ``detection_out`` [1, 1, keep_top_k, 7]: image_id, label,
  confidence, x_min, y_min, x_max, y_max (normalised to [0, 1]); the row after the last detection has
  image_id -1. Labels are class indices (0 = face): the background is the last softmax class
  (``background_label_id = num_classes``), as in OMZ's face-detection-0200/0204 IRs.
* ``NMSAdapter`` (``ExportFamily.NMS``; FCOS, ATSS): the head's ``decode`` (boxes in input pixels and per-class scores)
  is in the graph, followed by ``MulticlassNms`` (opset9). Outputs ``boxes`` [N, 5] (x1, y1, x2, y2,
  score, in input pixels) and ``labels`` [N], as OMZ's face-detection-0205/0206 IRs.
"""

import numpy as np
import torch
import torch.nn as nn

from ..models.heads import ExportFamily
from ..utils.errors import OteError
from .openvino_export import convert_network, foldable


class RawSSDOutputs(nn.Module):
    """BGR 0..255 image -> (softmax scores [B, A * (C + 1)], box deltas [B, A * 4]), DetectionOutput's inputs
    (the head's ``export_raw``)."""

    def __init__(self, inference_model):
        super().__init__()
        self.model, self.folded = foldable(inference_model)

    def forward(self, image):
        return self.model.detector.bbox_head.export_raw(self.model(image))


def featmap_sizes(inference_model, input_size):
    """Per-level (h, w) of the head's outputs for an input of ``input_size`` (w, h)."""
    width, height = input_size
    with torch.no_grad():
        outs = inference_model(torch.zeros(1, 3, height, width))
    return inference_model.detector.bbox_head.featmap_sizes(outs)


def prior_tensor(inference_model, input_size):
    """DetectionOutput's third input: [1, 2, A * 4] (normalised anchors; the coder's stds as variances)."""
    head = inference_model.detector.bbox_head
    width, height = input_size
    anchors = head.prior_boxes(featmap_sizes(inference_model, input_size)).double()
    anchors = anchors / torch.tensor([width, height, width, height], dtype=torch.float64)
    variances = torch.tensor(head.prior_variances(), dtype=torch.float64).expand_as(anchors)
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


def _lists(d):
    return {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in d.items()}


class SSDAdapter:
    family = ExportFamily.SSD
    onnx_outputs = {"scores": "[1, A * (num_classes + 1)] softmax, background last, anchors in prior order",
                    "deltas": "[1, A * 4] box deltas (dx, dy, dw, dh) with the coder's dw/dh clamp; decode with "
                              "the template's box coder (target_stds as variances) and the anchors"}

    def raw_module(self, inference_model, input_size=None):
        return RawSSDOutputs(inference_model).eval()

    def to_openvino(self, inference_model, input_size):
        import openvino as ov
        from openvino import opset8
        head = inference_model.detector.bbox_head
        raw = self.raw_module(inference_model, input_size)
        width, height = input_size
        with torch.no_grad():
            scores, deltas = raw(torch.zeros(1, 3, height, width))
        priors = prior_tensor(inference_model, input_size)
        num_priors = priors.shape[-1] // 4
        if deltas.shape[-1] != num_priors * 4 or scores.shape[-1] != num_priors * (head.num_classes + 1):
            raise OteError(f"head outputs ({scores.shape[-1]} scores, {deltas.shape[-1]} deltas) do not fit "
                           f"{num_priors} anchors")
        net = convert_network(raw, input_size)
        attrs = detection_output_attrs(head.test_cfg, head.num_classes)
        conf, loc = (net.get_results()[i].input_value(0) for i in (0, 1))
        det = opset8.detection_output(loc, conf, opset8.constant(priors, ov.Type.f32, name="priors"), attrs,
                                      name="detection_out")
        det.output(0).get_tensor().set_names({"detection_out"})
        result = opset8.result(det.output(0), name="detection_out/sink_port_0")
        model = ov.Model([result], net.get_parameters(), "face-detection")
        output = {
            "name": "detection_out",
            "shape": [1, 1, int(attrs["keep_top_k"][0]), 7],
            "format": "[1, 1, N, 7] rows of (image_id, label, confidence, x_min, y_min, x_max, y_max); coordinates "
                      "normalised to [0, 1] of the input; label = class index (0 = first class, "
                      "background_label_id = number of classes); the row after the last detection has image_id "
                      "-1 (Open Model Zoo SSD DetectionOutput format)",
            "num_priors": int(num_priors),
            "box_coder": head.box_coder_info(),
            "detection_output": _lists(attrs),
        }
        return model, {"output": output, "normalisation_in_first_conv": raw.folded}


class _DecodedOutputs(nn.Module):
    """BGR 0..255 image -> (boxes [B, A, 4] in input pixels, scores [B, C, A]): the head's ``decode``."""

    def __init__(self, inference_model, input_size):
        super().__init__()
        self.model, self.folded = foldable(inference_model)
        self.input_hw = (int(input_size[1]), int(input_size[0]))

    def forward(self, image):
        head = self.model.detector.bbox_head
        boxes, scores = head.decode(self.model(image), self.input_hw)
        return boxes, scores.transpose(1, 2)


class NMSAdapter:
    family = ExportFamily.NMS
    onnx_outputs = {"boxes": "[1, A, 4] decoded boxes (x1, y1, x2, y2) in input pixels, before NMS",
                    "scores": "[1, num_classes, A] per-class scores (classification x centerness), before NMS"}

    def raw_module(self, inference_model, input_size):
        return _DecodedOutputs(inference_model, input_size).eval()

    def to_openvino(self, inference_model, input_size):
        import openvino as ov
        from openvino import opset9
        head = inference_model.detector.bbox_head
        width, height = input_size
        raw = self.raw_module(inference_model, input_size)
        net = convert_network(raw, input_size)
        cfg = head.test_cfg
        pre = int(cfg.get("nms_pre_classwise", cfg.get("nms_pre", -1)) or -1)
        keep = int(cfg.get("max_per_img", -1) or -1)
        iou = float((cfg.get("nms") or {}).get("iou_threshold", 0.5))
        boxes, scores = (net.get_results()[i].input_value(0) for i in (0, 1))
        # normalised boxes: OpenVINO's un-normalised NMS adds 1 to widths (Caffe); IoU is scale-invariant
        scale = opset9.constant(np.array([width, height, width, height], np.float32))
        nms = opset9.multiclass_nms(
            opset9.divide(boxes, scale), scores, sort_result_type="score", sort_result_across_batch=False,
            output_type="i64", iou_threshold=iou, score_threshold=float(cfg.get("score_thr", 0.0)),
            nms_top_k=pre if pre > 0 else -1, keep_top_k=keep if keep > 0 else -1, background_class=-1,
            nms_eta=1.0, normalized=True)
        selected = nms.output(0)  # [N, 6]: class, score, x1, y1, x2, y2
        coords = opset9.multiply(opset9.slice(selected, [2], [6], [1], [1]), scale)
        score = opset9.slice(selected, [1], [2], [1], [1])
        out_boxes = opset9.concat([coords, score], axis=1)
        labels = opset9.convert(opset9.squeeze(opset9.slice(selected, [0], [1], [1], [1]), [1]), "i64")
        out_boxes.output(0).get_tensor().set_names({"boxes"})
        labels.output(0).get_tensor().set_names({"labels"})
        results = [opset9.result(out_boxes, name="boxes/sink_port_0"), opset9.result(labels, name="labels/sink_port_0")]
        model = ov.Model(results, net.get_parameters(), "face-detection")
        output = {
            "names": ["boxes", "labels"],
            "format": "boxes [N, 5]: x1, y1, x2, y2, score in input pixels; labels [N]: class index (0 = first "
                      "class); N detections after NMS, best first (Open Model Zoo face-detection-0205/0206 format)",
            "nms": {"iou_threshold": iou, "score_threshold": float(cfg.get("score_thr", 0.0)),
                    "nms_top_k_per_class": pre, "keep_top_k": keep},
        }
        return model, {"output": output, "normalisation_in_first_conv": raw.folded}


ADAPTERS = {adapter.family: adapter for adapter in (SSDAdapter, NMSAdapter)}


def adapter_for(head):
    family = head.export_family
    if family not in ADAPTERS:
        raise OteError(f"{type(head).__name__}: no export adapter for head family {family!r} "
                       f"(known: {', '.join(ADAPTERS)})")
    return ADAPTERS[family]()
