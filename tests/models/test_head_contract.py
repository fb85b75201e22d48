"""The head contract (``models/heads/base.py``), checked for every head in the ``HEADS`` registry.

Each registered head is run through what the rest of the project asks of it: the loss with and without
faces, predict, decode under ``torch.export``, the declarations (strides, prediction layers, export
family, train_cfg keys), export to an OpenVINO IR and its parity with PyTorch, a re-export at another
input size, filter pruning at 30 % followed by predict and export, and one post-training-quantization
step. A new head gets all of it by being registered and used by a template: the test finds the first
template whose ``model.bbox_head.type`` is the head (and fails for a head that no template uses).

The model is the template's, at a small input; ResNet-152 (0206) is replaced by ResNet-50, whose stages
have the same channels (the head and neck are unchanged): the test is about the head. Weights are
random (seeded); the score threshold is set so that about a hundred candidates take part in NMS.
"""

import copy
import glob
import json
import os

import numpy as np
import pytest
import torch
import torch.nn as nn

from conftest import TEMPLATES
from ote_detection.config import load_config
from ote_detection.models import build_detector
from ote_detection.models.heads import ROW_WIDTH, BaseDenseHead, Detections, ExportFamily, head_class
from ote_detection.models.inference import InferenceModel
from ote_detection.registry import HEADS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# heavy backbones replaced by one with the same stage channels (the test is about the head)
LIGHTER_BACKBONE = {"resnet152b": "resnet50b", "resnet101b": "resnet50b", "resnet152": "resnet50",
                    "resnet101": "resnet50"}


def _template_of(head_type):
    """(template dir name, its config) of the first template whose head is ``head_type``."""
    for model_py in sorted(glob.glob(os.path.join(TEMPLATES, "*", "model.py"))):
        cfg = load_config(model_py)
        if (cfg.model.get("bbox_head") or {}).get("type") == head_type:
            return os.path.basename(os.path.dirname(model_py)), cfg
    raise AssertionError(f"no template in {TEMPLATES} uses the head {head_type}: every head needs one")


class Case:
    """One head's template, built small: the detector, its InferenceModel and a small input size."""

    def __init__(self, head_type):
        self.head_type = head_type
        self.template, self.cfg = _template_of(head_type)
        model_cfg = copy.deepcopy(self.cfg.model)
        backbone = model_cfg["backbone"]
        backbone["type"] = LIGHTER_BACKBONE.get(backbone["type"], backbone["type"])
        backbone["pretrained"] = False
        self.model_cfg = model_cfg
        torch.manual_seed(0)
        self.detector = build_detector(model_cfg).eval()
        self.head = self.detector.bbox_head
        stride = max(self.head.strides)
        self.size = (max(64, stride), max(64, stride))           # (w, h)
        self.other_size = (2 * self.size[0], self.size[1])        # re-export: another (non-square) size

    def inference_model(self, detector=None):
        return InferenceModel(detector or self.detector, self.cfg.img_norm_cfg).eval()

    def pruning_scopes(self):
        path = os.path.join(TEMPLATES, self.template, "compression_config.json")
        if not os.path.isfile(path):
            return []
        with open(path, encoding="utf-8") as f:
            part = json.load(f).get("nncf_pruning") or {}
        algos = (part.get("nncf_config") or {}).get("compression") or []
        return [s for a in algos if a.get("algorithm") == "filter_pruning" for s in a.get("ignored_scopes", [])]


_CASES = {}


@pytest.fixture(params=HEADS.names())
def case(request):
    if request.param not in _CASES:
        _CASES[request.param] = Case(request.param)
    return _CASES[request.param]


def _image(size, seed=0):
    """A BGR 0..255 test image [1, 3, h, w] with structure at several scales."""
    width, height = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([127 + 100 * np.sin(xx / (5 + 4 * c) + yy / (9 + 3 * c)) for c in range(3)])
    img += rng.normal(0, 20, img.shape).astype(np.float32)
    return torch.from_numpy(np.clip(img, 0, 255)[None].astype(np.float32))


def _set_score_thr(head, model, img, keep=100):
    """Lower / raise ``test_cfg.score_thr`` so that about ``keep`` candidates of ``img`` pass it."""
    with torch.no_grad():
        _, scores = head.decode(model(img), tuple(img.shape[-2:]))
    flat = scores.flatten().sort(descending=True).values
    head.test_cfg["score_thr"] = float(flat[min(keep, flat.numel() - 1)])
    head.test_cfg["max_per_img"] = -1


# -- declarations -----------------------------------------------------------------------------------------
def test_the_head_declares_what_others_ask(case):
    head = case.head
    assert isinstance(head, BaseDenseHead)
    assert head.export_family in ExportFamily.ALL
    assert head_class(case.model_cfg["bbox_head"]) is type(head)
    # strides: the feature maps are the input divided by them, and the config says the same
    outs = case.detector(torch.zeros(1, 3, case.size[1], case.size[0]))
    assert type(outs)._fields[0] == "cls_scores" and all(len(level) == len(head.strides) for level in outs)
    assert head.featmap_sizes(outs) == [(case.size[1] // s, case.size[0] // s) for s in head.strides]
    assert head_class(case.model_cfg["bbox_head"]).strides_of_config(case.model_cfg["bbox_head"]) == head.strides
    # prediction layers: convolutions of the head whose outputs are the maps of ``outs``
    layers = head.prediction_layers()
    own = {id(m) for m in head.modules()}
    assert layers and all(isinstance(m, nn.Conv2d) and id(m) in own for m in layers)
    produced = {t.shape[1] for level in outs for t in level}
    assert {m.out_channels for m in layers} <= produced
    # train_cfg keys: the template's train_cfg has no key the head ignores
    assert set(case.model_cfg.get("train_cfg") or {}) <= set(head.train_cfg_keys)


# -- training ---------------------------------------------------------------------------------------------
def test_loss_with_and_without_faces(case):
    det = copy.deepcopy(case.detector).train()
    width, height = case.size
    img = torch.rand(2, 3, height, width)
    boxes = [torch.tensor([[0.2 * width, 0.2 * height, 0.7 * width, 0.8 * height]]), torch.zeros(0, 4)]
    labels = [torch.tensor([0]), torch.zeros(0, dtype=torch.long)]
    losses = det(img, boxes, labels)
    assert losses and all(v.dim() == 0 and torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    grads = [p.grad for p in det.bbox_head.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    # a batch without any face: negatives only, still finite
    det.zero_grad()
    losses = det(img, [torch.zeros(0, 4)] * 2, [torch.zeros(0, dtype=torch.long)] * 2)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()


# -- inference --------------------------------------------------------------------------------------------
def test_predict_gives_detections_in_input_pixels(case):
    model = case.inference_model(copy.deepcopy(case.detector))
    img = _image(case.size)
    _set_score_thr(model.detector.bbox_head, model, img)
    dets = model.predict(torch.cat([img, img.flip(-1)]))
    assert len(dets) == 2
    width, height = case.size
    for d in dets:
        assert isinstance(d, Detections) and len(d.scores) > 0
        assert d.boxes.shape == (len(d.scores), 4) and d.labels.shape == d.scores.shape
        assert d.labels.dtype == torch.long and bool((d.labels >= 0).all() and (d.labels < case.head.num_classes).all())
        assert bool((d.boxes[:, 0::2] >= 0).all() and (d.boxes[:, 0::2] <= width).all())
        assert bool((d.boxes[:, 1::2] >= 0).all() and (d.boxes[:, 1::2] <= height).all())
        assert bool((d.scores[:-1] >= d.scores[1:]).all()), "best first"
        rows = d.to_rows()
        assert rows.shape == (len(d.scores), ROW_WIDTH) and torch.equal(rows[:, 4], d.scores)


class _Decode(nn.Module):
    def __init__(self, detector, input_hw):
        super().__init__()
        self.detector, self.input_hw = detector, input_hw

    def forward(self, img):
        return self.detector.bbox_head.decode(self.detector(img), self.input_hw)


@pytest.mark.slow
def test_decode_under_torch_export(case):
    width, height = case.size
    module = _Decode(case.detector, (height, width)).eval()
    img = torch.randn(1, 3, height, width)
    program = torch.export.export(module, (img,), strict=False)
    with torch.no_grad():
        want_boxes, want_scores = module(img)
        got_boxes, got_scores = program.module()(img)
    cells = sum(h * w for h, w in case.head.featmap_sizes(case.detector(img)))
    assert want_boxes.shape[:2] == want_scores.shape[:2] and want_boxes.shape[1] >= cells
    assert want_scores.shape[-1] == case.head.num_classes
    assert torch.allclose(want_boxes, got_boxes, atol=1e-3) and torch.allclose(want_scores, got_scores, atol=1e-6)


# -- export, pruning, quantization (slow: torch.export, OpenVINO conversion, torch-pruning, NNCF) -----------
def _ir_parity(inference_model, size, min_matched=10):
    """Export ``inference_model`` at ``size`` and compare the IR's detections (f32) with PyTorch's."""
    import openvino as ov
    from ote_detection.export.exporter import convert_to_openvino
    from ote_detection.inference.openvino_predictor import OpenVINOPredictor, match_detections
    from ote_detection.inference.predictor import TorchPredictor
    head = inference_model.detector.bbox_head
    img = _image(size, seed=1)
    _set_score_thr(head, inference_model, img)
    ir, info = convert_to_openvino(inference_model, size)
    assert info["output"]
    compiled = ov.Core().compile_model(ir, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
    ir_pred = OpenVINOPredictor.from_compiled(ir, compiled)
    assert ir_pred.contract == head.export_family and ir_pred.input_size == tuple(size)
    frame = img[0].numpy().transpose(1, 2, 0).astype(np.uint8)
    frame_in = torch.from_numpy(np.ascontiguousarray(frame.transpose(2, 0, 1))).float()[None]
    ours = TorchPredictor(inference_model, size, batch_size=1).infer_batch(frame_in)[0]
    theirs = ir_pred.infer_batch(frame_in)[0]
    # detections well above the threshold match box for box (those at it may fall either side)
    stats = match_detections(ours, theirs, min_score=head.test_cfg["score_thr"] * 1.001 + 1e-6)
    assert stats["matched"] >= min_matched and not stats["unmatched_a"] and not stats["unmatched_b"], stats
    assert stats["min_iou"] > 0.99 and stats["max_score_diff"] < 1e-3, stats
    return ir


@pytest.mark.slow
def test_export_to_ir_parity_and_reexport_at_another_size(case):
    model = case.inference_model(copy.deepcopy(case.detector))
    _ir_parity(model, case.size)
    ir = _ir_parity(model, case.other_size)
    assert [int(d) for d in ir.inputs[0].get_partial_shape().to_shape()] == [1, 3, case.other_size[1],
                                                                             case.other_size[0]]


@pytest.mark.slow
def test_filter_pruning_at_30_percent_then_predict_and_export(case):
    from ote_detection.compression.pruning import conv_shapes, prune_filters, resize_to_shapes
    det = copy.deepcopy(case.detector)
    before = conv_shapes(det)
    width, height = case.size
    removed = prune_filters(det, torch.zeros(1, 3, height, width), 0.3, case.pruning_scopes())
    after = conv_shapes(det)
    assert removed > 0 and sum(after[n][1] < before[n][1] for n in before if len(before[n]) == 3) > 0
    names = {id(m): n for n, m in det.named_modules()}
    for layer in det.bbox_head.prediction_layers():
        name = names[id(layer)]
        assert after[name][1] == before[name][1], f"prediction layer {name} was pruned"
    # a checkpoint of the pruned model loads into a fresh one (what export and eval of compress.py's output do)
    rebuilt = resize_to_shapes(build_detector(case.model_cfg), after)
    rebuilt.load_state_dict(det.state_dict())
    _ir_parity(case.inference_model(rebuilt.eval()), case.size)


@pytest.mark.slow
def test_one_post_training_quantization_step(case):
    import openvino as ov
    from ote_detection.compression.env import import_nncf
    from ote_detection.compression.ptq import post_processing_scope
    from ote_detection.export.exporter import convert_to_openvino
    from ote_detection.inference.openvino_predictor import OpenVINOPredictor
    nncf = import_nncf()
    model = case.inference_model(copy.deepcopy(case.detector))
    img = _image(case.size, seed=2)
    _set_score_thr(model.detector.bbox_head, model, img)
    ir, _ = convert_to_openvino(model, case.size)
    calibration = nncf.Dataset([_image(case.size, seed=s).numpy() for s in range(3)])
    int8 = nncf.quantize(ir, calibration, subset_size=3, preset=nncf.QuantizationPreset.MIXED,
                         ignored_scope=post_processing_scope(ir))
    assert any(op.get_type_name() == "FakeQuantize" for op in int8.get_ordered_ops())
    compiled = ov.Core().compile_model(int8, "CPU", {"INFERENCE_NUM_THREADS": 1})
    pred = OpenVINOPredictor.from_compiled(int8, compiled)
    assert pred.contract == model.detector.bbox_head.export_family
    dets = pred.infer_batch(img)[0]
    assert dets.ndim == 2 and dets.shape[1] == ROW_WIDTH and len(dets) > 0 and np.isfinite(dets).all()
