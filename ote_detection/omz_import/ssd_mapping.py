"""The SSD mapping of an OpenVINO IR (Open Model Zoo face detectors) onto a template's PyTorch model.

The IR holds the network with BatchNorm folded into the convolutions (Convolution/GroupConvolution
followed by an Add of the bias), the input scaling folded into a Multiply before the first
convolution (and the BGR -> RGB channel swap folded into the first convolution's weights), and the
SSD post-processing as PriorBoxClustered + DetectionOutput. The importer

* evaluates every convolution's weight and bias constants (FP16 -> FP32; in FP16-INT8 IRs the
  i8 weights are dequantised; the FakeQuantize layers on activations are dropped, with a warning);
* matches the IR's convolutions to our Conv2d modules: the heads through the DetectionOutput inputs
  (box deltas / class scores, one Concat input per level), the backbone in topological order,
  checking shapes, groups, strides, paddings and dilations;
* writes ``conv.weight = W`` and turns the BatchNorm that follows into ``x + b`` (weight 1, running
  mean 0, running variance 1 - eps, bias b: exact in eval mode); convolutions with their own bias
  take b directly. With calibration images, the BatchNorms get those images' statistics instead
  (still ``x + b`` in eval mode), so that fine-tuning with train-mode BatchNorm starts from the
  imported function;
* folds the IR's input preprocessing (scale, mean, channel order) into our first convolution,
  against our InferenceModel's own normalisation (``img_norm_cfg``);
* checks the priors (anchor sizes, strides, variances) against the template's anchor generator and
  box coder, and the IR's input size against the template's;
* saves a checkpoint of the usual format (``meta`` + ``state_dict``), atomically.
"""

import logging

import numpy as np
import torch
import torch.nn as nn

from ..models.inference import InferenceModel
from ..utils.errors import OteError
from ..export.adapters import prior_tensor
from ..inference.ir_model import node_name
from .ir_graph import consumers, data_inputs, find_level_concat, walk_back_to_conv
from ..inference.openvino_predictor import detection_output_node

log = logging.getLogger(__name__)


def describe_module(name, conv):
    return (f"our '{name}' ({conv.in_channels}->{conv.out_channels}, kernel {tuple(conv.kernel_size)}, "
            f"groups {conv.groups}, stride {tuple(conv.stride)})")


def check_pair(ir, name, conv):
    ok = (tuple(conv.weight.shape) == tuple(ir.weight.shape) and conv.groups == ir.groups
          and tuple(conv.stride) == ir.stride and tuple(conv.padding) == ir.padding
          and tuple(conv.dilation) == ir.dilation)
    if not ok:
        raise OteError(f"the IR does not map onto this template's model: {ir.describe()} vs "
                       f"{describe_module(name, conv)} (padding {ir.padding} vs {tuple(conv.padding)})")


def head_convs(det, ev, conv_nodes, chain_lengths):
    """For DetectionOutput inputs 0 (box deltas) and 1 (scores): per level, the IR convs from input to output."""
    branches = {}
    for port, branch in ((0, "reg"), (1, "cls")):
        src = det.input_value(port)
        concat = find_level_concat(src, ev)
        level_outputs = [i.get_source_output() for i in concat.inputs()] if concat is not None else [src]
        if len(level_outputs) != len(chain_lengths):
            raise OteError(f"IR layer {node_name(concat or det)}: {len(level_outputs)} head level(s) feed "
                           f"DetectionOutput input {port}, the template has {len(chain_lengths)}")
        levels = []
        for out, length in zip(level_outputs, chain_lengths):
            convs = [walk_back_to_conv(out, ev, conv_nodes)]
            while len(convs) < length:
                data = data_inputs(convs[-1].node, ev)
                convs.append(walk_back_to_conv(data[0], ev, conv_nodes))
            levels.append(convs[::-1])
        branches[branch] = levels
    return branches


def read_preprocessing(model, ev, first_conv):
    """The IR's input transform up to the first convolution: y[c] = s[c] * x[perm[c]] + t[c] (x = IR input)."""
    param = model.get_parameters()[0]
    perm, s, t = np.arange(3), np.ones(3), np.zeros(3)
    out = param.output(0)
    dropped_fq = False
    for _ in range(32):
        users = consumers(out)
        data_users = [u for u in users if u.get_type_name() not in ("ShapeOf",)]
        if len(data_users) != 1:
            raise OteError(f"IR input '{param.get_friendly_name()}' feeds {len(data_users)} layers before the first "
                           f"convolution; the importer expects one chain")
        node = data_users[0]
        typ = node.get_type_name()
        if node.get_instance_id() == first_conv.node.get_instance_id():
            return perm, s, t, dropped_fq
        consts = [i.get_source_output() for i in node.inputs() if ev.is_const(i.get_source_output())]
        if typ in ("Multiply", "Add", "Subtract", "Divide") and len(consts) == 1:
            if node.input_value(0) != out and typ in ("Subtract", "Divide"):
                raise OteError(f"IR layer {node_name(node)}: constant-minus/over-input preprocessing is not supported")
            v = ev.value(consts[0]).reshape(-1)
            if v.size not in (1, 3):
                raise OteError(f"IR layer {node_name(node)}: preprocessing constant of shape {v.shape} is not per-channel")
            v = np.broadcast_to(v, (3,))
            if typ == "Multiply":
                s, t = s * v, t * v
            elif typ == "Divide":
                s, t = s / v, t / v
            elif typ == "Add":
                t = t + v
            else:
                t = t - v
        elif typ == "Gather" and len(consts) == 2 and int(np.ravel(ev.value(node.input_value(2)))[0]) in (1, -3):
            idx = np.asarray(ev.value(node.input_value(1))).astype(np.int64).reshape(-1)
            perm, s, t = perm[idx], s[idx], t[idx]
        elif typ == "FakeQuantize":
            dropped_fq = True
        elif typ == "Convert":
            pass
        else:
            raise OteError(f"IR layer {node_name(node)}: unsupported layer between the input and the first convolution")
        out = node.output(0)
    raise OteError("IR: the first convolution is not reached from the input within 32 layers")


class ConvTracer:
    """Our model's Conv2d modules in execution order, and the BatchNorm2d (if any) that reads each one."""

    def __init__(self, module):
        self.order, self.bn_of, self._out = [], {}, {}
        names = {m: n for n, m in module.named_modules()}
        hooks = []
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                hooks.append(m.register_forward_hook(self._conv_hook(names[m])))
            elif isinstance(m, nn.BatchNorm2d):
                hooks.append(m.register_forward_pre_hook(self._bn_hook(names[m])))
        self.hooks = hooks

    def _conv_hook(self, name):
        def hook(module, inputs, output):
            self.order.append(name)
            self._out[id(output)] = (name, output)
        return hook

    def _bn_hook(self, name):
        def hook(module, inputs):
            entry = self._out.get(id(inputs[0]))
            if entry is not None and entry[1] is inputs[0]:
                self.bn_of[entry[0]] = name
        return hook

    def close(self):
        for h in self.hooks:
            h.remove()


def identity_bn_var(eps):
    """A float32 running_var with float32(var + eps) == 1, so BN(x) = x * 1 / sqrt(1) exactly."""
    eps32 = np.float32(eps)
    var = np.float32(1) - eps32
    for _ in range(8):
        if np.float32(var + eps32) == np.float32(1):
            return float(var)
        var = np.nextafter(var, np.float32(2) if var + eps32 < 1 else np.float32(0))
    return float(np.float32(1) - eps32)


def check_priors(model, det, inference_model, input_size, ev):
    """PriorBoxClustered attributes (or a constant prior tensor) against our anchors and box coder stds."""
    head = inference_model.detector.bbox_head
    shapes, stds = head.prior_shapes(), np.array(head.prior_variances())
    priors = [op for op in model.get_ordered_ops() if op.get_type_name() == "PriorBoxClustered"]
    if priors:
        if len(priors) != len(shapes):
            raise OteError(f"IR has {len(priors)} PriorBoxClustered layers, the template {len(shapes)} anchor "
                           f"levels")
        for level, op in enumerate(priors):
            a = op.get_attributes()
            widths, heights = np.array(a["width"]), np.array(a["height"])
            stride, ours_w, ours_h = shapes[level][0], np.array(shapes[level][1]), np.array(shapes[level][2])
            step = float(a.get("step") or a.get("step_w") or 0)
            if (widths.shape != ours_w.shape or not np.allclose(widths, ours_w, rtol=1e-4)
                    or not np.allclose(heights, ours_h, rtol=1e-4) or (step and step != stride)):
                raise OteError(f"IR layer {node_name(op)}: priors (step {step}, widths {widths.tolist()}) differ from "
                               f"the template's level {level} anchors (stride {stride}, widths "
                               f"{ours_w.tolist()})")
            if float(a.get("offset", 0.5)) != 0.5:
                raise OteError(f"IR layer {node_name(op)}: prior offset {a['offset']} (ours: 0.5, anchor at cell centre)")
            variances = np.array(a["variance"], dtype=np.float64)
            if variances.size and not np.allclose(variances, stds, rtol=1e-5):
                raise OteError(f"IR layer {node_name(op)}: prior variances {variances.tolist()} differ from the template's "
                               f"target_stds {stds.tolist()}")
        return
    src = det.input_value(2)
    if not ev.is_const(src):
        raise OteError(f"IR layer {node_name(det)}: priors are neither PriorBoxClustered layers nor a constant")
    ours = prior_tensor(inference_model, input_size)
    theirs = ev.value(src).reshape(ours.shape) if ev.value(src).size == ours.size else None
    if theirs is None or not np.allclose(theirs, ours, atol=1e-5):
        raise OteError(f"IR layer {node_name(src.get_node())}: constant priors differ from the template's anchors")


def verification_image(width, height, seed=0):
    """A deterministic BGR 0..255 test image with structure at several scales (not flat)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([127 + 100 * np.sin(xx / (7 + 5 * c) + yy / (11 + 3 * c)) for c in range(3)])
    img += rng.normal(0, 20, img.shape).astype(np.float32)
    return np.clip(img, 0, 255)[None].astype(np.float32)


def compare_head_outputs(img_norm_cfg, detector, core, model, det, input_size):
    """Max |diff| between the IR's DetectionOutput inputs (f32 hint) and our model's, on a test image."""
    import openvino as ov
    w, h = input_size
    img = verification_image(w, h)
    probe = model.clone()
    det_probe = detection_output_node(probe)
    loc_out, conf_out = det_probe.input_value(0), det_probe.input_value(1)
    results = [ov.opset8.result(loc_out), ov.opset8.result(conf_out)]
    probe = ov.Model(results, probe.get_parameters(), "probe")
    compiled = core.compile_model(probe, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    out = compiled(img)
    loc_ir, conf_ir = (np.asarray(out[compiled.outputs[i]]).reshape(-1) for i in range(2))
    inference = InferenceModel(detector, img_norm_cfg).eval()
    head = detector.bbox_head
    with torch.no_grad():
        logits, deltas = head.flatten_outputs(*inference(torch.from_numpy(img)))
        scores = logits.softmax(-1)
    bg = int(det.get_attributes()["background_label_id"])
    if bg == 0:
        scores = torch.cat([scores[..., -1:], scores[..., :-1]], dim=-1)
    loc_ours, conf_ours = deltas.reshape(-1).numpy(), scores.reshape(-1).numpy()
    if loc_ours.shape != loc_ir.shape or conf_ours.shape != conf_ir.shape:
        raise OteError(f"head output sizes differ: IR {loc_ir.shape}/{conf_ir.shape}, ours "
                       f"{loc_ours.shape}/{conf_ours.shape}")
    return {"max_abs_diff_deltas": float(np.abs(loc_ours - loc_ir).max()),
            "max_abs_diff_scores": float(np.abs(conf_ours - conf_ir).max())}
