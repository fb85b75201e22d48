"""Import of an OpenVINO IR's weights (Open Model Zoo face detectors) into a template's PyTorch model.

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
import os

import numpy as np
import torch
import torch.nn as nn

from ..apis.task import Task
from ..engine.checkpoint import load_weights
from ..models.inference import InferenceModel
from ..utils.errors import OteError
from ..utils.fileio import atomic_torch_save, sha256sum
from .openvino_predictor import detection_output_node, find_ir_pair, read_ir

log = logging.getLogger(__name__)

CONV_TYPES = ("Convolution", "GroupConvolution")
# ops that pass one data input through unchanged in layout terms (walking from a head back to its conv)
PASS_THROUGH = ("Add", "Multiply", "Subtract", "Relu", "Clamp", "Transpose", "Reshape", "Squeeze", "Unsqueeze",
                "FakeQuantize", "Convert", "SoftMax", "Softmax", "Sigmoid", "Concat")


def _name(node):
    return f"{node.get_friendly_name()} ({node.get_type_name()})"


class ConstEvaluator:
    """Numeric values of constant sub-graphs (weights, biases, scales), in float64 numpy."""

    def __init__(self):
        self._const = {}
        self._value = {}

    def is_const(self, output):
        node = output.get_node()
        key = node.get_instance_id(), output.get_index()
        if key not in self._const:
            t = node.get_type_name()
            if t == "Constant":
                self._const[key] = True
            elif t == "ShapeOf":
                self._const[key] = node.get_input_partial_shape(0).is_static
            elif t == "Parameter" or node.get_input_size() == 0:
                self._const[key] = False
            else:
                self._const[key] = all(self.is_const(i.get_source_output()) for i in node.inputs())
        return self._const[key]

    def value(self, output):
        node = output.get_node()
        key = node.get_instance_id(), output.get_index()
        if key not in self._value:
            self._value[key] = self._evaluate(node)
        return self._value[key]

    def _evaluate(self, node):
        t = node.get_type_name()
        if t == "ShapeOf":
            return np.array(list(node.get_input_shape(0)), dtype=np.int64)
        args = [self.value(i.get_source_output()) for i in node.inputs()] if t != "Constant" else []
        out_shape = tuple(node.get_output_shape(0)) if node.get_output_partial_shape(0).is_static else None
        if t == "Constant":
            return np.asarray(node.get_data()).astype(np.float64) if node.get_element_type().is_real() \
                else np.asarray(node.get_data())
        if t == "Convert":
            dtype = node.get_output_element_type(0).to_dtype()
            return np.asarray(args[0]).astype(dtype).astype(np.float64 if np.issubdtype(dtype, np.floating) else dtype)
        if t == "Multiply":
            return args[0] * args[1]
        if t == "Add":
            return args[0] + args[1]
        if t == "Subtract":
            return args[0] - args[1]
        if t == "Divide":
            return args[0] / args[1]
        if t in ("Reshape", "Squeeze", "Unsqueeze") and out_shape is not None:
            return np.reshape(args[0], out_shape)
        if t == "Transpose":
            return np.transpose(args[0], [int(v) for v in np.ravel(args[1])])
        if t == "Gather":
            axis = int(np.ravel(args[2])[0])
            return np.take(args[0], np.asarray(args[1]).astype(np.int64), axis=axis)
        if t == "Concat":
            return np.concatenate(args, axis=int(node.get_attributes()["axis"]))
        if t == "FakeQuantize":
            x, il, ih, ol, oh = args
            levels = int(node.get_attributes()["levels"])
            q = np.round((np.clip(x, il, ih) - il) / (ih - il) * (levels - 1))
            return q / (levels - 1) * (oh - ol) + ol
        raise OteError(f"constant sub-graph with layer {_name(node)} is not supported by the importer")


def _consumers(output):
    return [i.get_node() for i in output.get_target_inputs()]


SHAPE_ARG_OPS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Gather", "StridedSlice", "Broadcast", "Tile")


def _data_inputs(node, ev):
    """Inputs carrying tensor data (not constants; for layout ops only input 0, the others are shapes)."""
    inputs = list(node.inputs())
    if node.get_type_name() in SHAPE_ARG_OPS:
        inputs = inputs[:1]
    return [i.get_source_output() for i in inputs if not ev.is_const(i.get_source_output())]


class IRConv:
    """One IR convolution with its folded bias: weight [O, I/groups, kh, kw] float64, bias [O]."""

    def __init__(self, node, ev):
        self.node = node
        self.name = node.get_friendly_name()
        w = ev.value(node.input_value(1))
        attrs = node.get_attributes()
        if node.get_type_name() == "GroupConvolution":
            groups = w.shape[0]
            w = w.reshape((w.shape[0] * w.shape[1],) + w.shape[2:])
        else:
            groups = 1
        self.weight, self.groups = w, groups
        if attrs.get("auto_pad", "explicit") not in ("explicit", "notset"):
            raise OteError(f"IR layer {_name(node)}: auto_pad '{attrs['auto_pad']}' is not supported")
        self.stride = tuple(int(v) for v in attrs["strides"])
        self.dilation = tuple(int(v) for v in attrs["dilations"])
        pads_begin, pads_end = tuple(int(v) for v in attrs["pads_begin"]), tuple(int(v) for v in attrs["pads_end"])
        if pads_begin != pads_end:
            raise OteError(f"IR layer {_name(node)}: asymmetric padding {pads_begin}/{pads_end} has no Conv2d "
                           f"equivalent")
        self.padding = pads_begin
        # folded BatchNorm: per-channel Multiply then Add of constants after the convolution
        out = node.output(0)
        scale = np.ones(w.shape[0])
        bias = np.zeros(w.shape[0])
        while True:
            users = _consumers(out)
            if len(users) != 1 or users[0].get_type_name() not in ("Add", "Multiply"):
                break
            user = users[0]
            consts = [i.get_source_output() for i in user.inputs() if ev.is_const(i.get_source_output())]
            if len(consts) != 1:
                break
            value = ev.value(consts[0])
            if value.size not in (1, w.shape[0]):
                break
            value = np.broadcast_to(value.reshape(-1), (w.shape[0],))
            if user.get_type_name() == "Multiply":
                scale, bias = scale * value, bias * value
            else:
                bias = bias + value
            out = user.output(0)
        self.weight = self.weight * scale.reshape(-1, 1, 1, 1)
        self.bias = bias
        self.output = out

    @property
    def out_channels(self):
        return self.weight.shape[0]

    @property
    def in_channels(self):
        return self.weight.shape[1] * self.groups

    def describe(self):
        return (f"IR layer '{self.name}' ({self.node.get_type_name()}, {self.in_channels}->{self.out_channels}, "
                f"kernel {tuple(self.weight.shape[2:])}, groups {self.groups}, stride {self.stride})")


def _describe_module(name, conv):
    return (f"our '{name}' ({conv.in_channels}->{conv.out_channels}, kernel {tuple(conv.kernel_size)}, "
            f"groups {conv.groups}, stride {tuple(conv.stride)})")


def _check_pair(ir, name, conv):
    ok = (tuple(conv.weight.shape) == tuple(ir.weight.shape) and conv.groups == ir.groups
          and tuple(conv.stride) == ir.stride and tuple(conv.padding) == ir.padding
          and tuple(conv.dilation) == ir.dilation)
    if not ok:
        raise OteError(f"the IR does not map onto this template's model: {ir.describe()} vs "
                       f"{_describe_module(name, conv)} (padding {ir.padding} vs {tuple(conv.padding)})")


def _walk_back_to_conv(output, ev, conv_nodes, stop_at_concat=False):
    """From an output, follow the single data input back to the nearest convolution (or Concat)."""
    node = output.get_node()
    seen = 0
    while node.get_type_name() not in CONV_TYPES:
        if stop_at_concat and node.get_type_name() == "Concat":
            return node
        data = _data_inputs(node, ev)
        if node.get_type_name() not in PASS_THROUGH or len(data) != 1:
            raise OteError(f"IR layer {_name(node)}: the importer cannot follow the graph through it "
                           f"(expected one data input on the way from a head output to its convolution)")
        node = data[0].get_node()
        seen += 1
        if seen > 64:
            raise OteError(f"IR layer {_name(node)}: no convolution found within 64 layers")
    return conv_nodes[node.get_instance_id()]


def _find_level_concat(output, ev):
    node = output.get_node()
    for _ in range(32):
        if node.get_type_name() == "Concat":
            return node
        if node.get_type_name() in CONV_TYPES:
            return None  # a single level, no Concat
        data = _data_inputs(node, ev)
        if len(data) != 1:
            raise OteError(f"IR layer {_name(node)}: the importer cannot follow the graph through it "
                           f"(looking for the Concat of the head levels)")
        node = data[0].get_node()
    raise OteError(f"IR layer {_name(node)}: no Concat of head levels found")


def _head_convs(det, ev, conv_nodes, chain_lengths):
    """For DetectionOutput inputs 0 (box deltas) and 1 (scores): per level, the IR convs from input to output."""
    branches = {}
    for port, branch in ((0, "reg"), (1, "cls")):
        src = det.input_value(port)
        concat = _find_level_concat(src, ev)
        level_outputs = [i.get_source_output() for i in concat.inputs()] if concat is not None else [src]
        if len(level_outputs) != len(chain_lengths):
            raise OteError(f"IR layer {_name(concat or det)}: {len(level_outputs)} head level(s) feed "
                           f"DetectionOutput input {port}, the template has {len(chain_lengths)}")
        levels = []
        for out, length in zip(level_outputs, chain_lengths):
            convs = [_walk_back_to_conv(out, ev, conv_nodes)]
            while len(convs) < length:
                data = _data_inputs(convs[-1].node, ev)
                convs.append(_walk_back_to_conv(data[0], ev, conv_nodes))
            levels.append(convs[::-1])
        branches[branch] = levels
    return branches


def _preprocessing(model, ev, first_conv):
    """The IR's input transform up to the first convolution: y[c] = s[c] * x[perm[c]] + t[c] (x = IR input)."""
    param = model.get_parameters()[0]
    perm, s, t = np.arange(3), np.ones(3), np.zeros(3)
    out = param.output(0)
    dropped_fq = False
    for _ in range(32):
        users = _consumers(out)
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
                raise OteError(f"IR layer {_name(node)}: constant-minus/over-input preprocessing is not supported")
            v = ev.value(consts[0]).reshape(-1)
            if v.size not in (1, 3):
                raise OteError(f"IR layer {_name(node)}: preprocessing constant of shape {v.shape} is not per-channel")
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
            raise OteError(f"IR layer {_name(node)}: unsupported layer between the input and the first convolution")
        out = node.output(0)
    raise OteError("IR: the first convolution is not reached from the input within 32 layers")


class _ConvTracer:
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


def _identity_bn_var(eps):
    """A float32 running_var with float32(var + eps) == 1, so BN(x) = x * 1 / sqrt(1) exactly."""
    eps32 = np.float32(eps)
    var = np.float32(1) - eps32
    for _ in range(8):
        if np.float32(var + eps32) == np.float32(1):
            return float(var)
        var = np.nextafter(var, np.float32(2) if var + eps32 < 1 else np.float32(0))
    return float(np.float32(1) - eps32)


def _check_priors(model, det, inference_model, input_size, ev):
    """PriorBoxClustered attributes (or a constant prior tensor) against our anchors and box coder stds."""
    head = inference_model.detector.bbox_head
    gen, stds = head.anchor_generator, np.array(head.bbox_coder.stds)
    priors = [op for op in model.get_ordered_ops() if op.get_type_name() == "PriorBoxClustered"]
    if priors:
        if len(priors) != gen.num_levels:
            raise OteError(f"IR has {len(priors)} PriorBoxClustered layers, the template {gen.num_levels} anchor "
                           f"levels")
        for level, op in enumerate(priors):
            a = op.get_attributes()
            widths, heights = np.array(a["width"]), np.array(a["height"])
            ours_w, ours_h = np.array(gen.widths[level]), np.array(gen.heights[level])
            step = float(a.get("step") or a.get("step_w") or 0)
            if (widths.shape != ours_w.shape or not np.allclose(widths, ours_w, rtol=1e-4)
                    or not np.allclose(heights, ours_h, rtol=1e-4) or (step and step != gen.strides[level])):
                raise OteError(f"IR layer {_name(op)}: priors (step {step}, widths {widths.tolist()}) differ from "
                               f"the template's level {level} anchors (stride {gen.strides[level]}, widths "
                               f"{ours_w.tolist()})")
            if float(a.get("offset", 0.5)) != 0.5:
                raise OteError(f"IR layer {_name(op)}: prior offset {a['offset']} (ours: 0.5, anchor at cell centre)")
            variances = np.array(a["variance"], dtype=np.float64)
            if variances.size and not np.allclose(variances, stds, rtol=1e-5):
                raise OteError(f"IR layer {_name(op)}: prior variances {variances.tolist()} differ from the template's "
                               f"target_stds {stds.tolist()}")
        return
    src = det.input_value(2)
    if not ev.is_const(src):
        raise OteError(f"IR layer {_name(det)}: priors are neither PriorBoxClustered layers nor a constant")
    from .openvino_export import prior_tensor
    ours = prior_tensor(inference_model, input_size)
    theirs = ev.value(src).reshape(ours.shape) if ev.value(src).size == ours.size else None
    if theirs is None or not np.allclose(theirs, ours, atol=1e-5):
        raise OteError(f"IR layer {_name(src.get_node())}: constant priors differ from the template's anchors")


def _image_list(images):
    from ..data.coco import split_paths
    paths = []
    for item in split_paths(images) if isinstance(images, str) else list(images):
        if os.path.isdir(item):
            for root, _, files in sorted(os.walk(item)):
                paths.extend(os.path.join(root, f) for f in sorted(files)
                             if f.lower().endswith((".jpg", ".jpeg", ".png", ".bmp")))
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise OteError(f"{item}: calibration image or folder not found")
    if not paths:
        raise OteError(f"{images}: no image (.jpg, .png, .bmp) found for BatchNorm calibration")
    return paths


def calibrate_batchnorm(detector, img_norm_cfg, images, input_size, bn_added, max_images=200):
    """Give every identity BatchNorm the statistics of its input on ``images`` while keeping eval-mode output.

    With running mean m and variance v measured on the images, weight sqrt(v + eps) and bias m + c, eval
    mode still computes x + c (to float rounding), and train mode's batch statistics (norm_eval False)
    start close to the running ones, so fine-tuning starts from the imported function. Returns the number
    of images used."""
    from ..data.transforms import read_image, resize_image
    paths = _image_list(images)[:max_images]
    inference = InferenceModel(detector, img_norm_cfg).eval()
    bns = {name: m for name, m in detector.named_modules() if name in bn_added}
    sums = {name: None for name in bns}
    hooks = []

    def make_hook(name):
        def hook(module, inputs):
            x = inputs[0].detach().double()
            stats = torch.stack([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3))])
            count = x.numel() // x.shape[1]
            prev = sums[name]
            sums[name] = (stats, count) if prev is None else (prev[0] + stats, prev[1] + count)
        return hook

    for name, m in bns.items():
        hooks.append(m.register_forward_pre_hook(make_hook(name)))
    try:
        with torch.no_grad():
            for path in paths:
                img = resize_image(read_image(path), input_size)
                inference(torch.from_numpy(img).permute(2, 0, 1)[None].float())
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        for name, m in bns.items():
            (total, total_sq), count = sums[name]
            mean = total / count
            var = (total_sq / count - mean * mean).clamp(min=0)
            added = torch.as_tensor(np.asarray(bn_added[name], dtype=np.float64))
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.weight.copy_(torch.sqrt(var.float() + m.eps))
            m.bias.copy_(mean + added)
    return len(paths)


def import_openvino_weights(template, ir_path, out_path, verify=True, calibration_images=None):
    """Read the IR's weights into the template's model and save them as a checkpoint at ``out_path``.

    ``calibration_images`` (a folder, image files, or a comma-separated list): BatchNorm statistics are
    measured on them (see ``calibrate_batchnorm``), for fine-tuning with BatchNorm in train mode; without
    them every BatchNorm is an exact identity plus bias (weight 1, mean 0, variance 1 - eps), which is
    exact in eval mode but far from the batch statistics of train mode.

    Returns a dict with the checkpoint path and the verification figures (max |diff| of the head outputs
    on a test image between the IR run with the f32 hint and our model)."""
    task = Task(template)
    xml, bin_ = find_ir_pair(ir_path)
    import openvino as ov
    core = ov.Core()
    model = read_ir(xml, core)
    if len(model.get_parameters()) != 1:
        raise OteError(f"{xml}: expected one input, found {len(model.get_parameters())}")
    shape = model.get_parameters()[0].get_partial_shape()
    if not shape.is_static or len(shape) != 4:
        raise OteError(f"{xml}: input shape {shape} is not a static [1, 3, H, W]")
    _, c, h, w = (int(d) for d in shape.to_shape())
    if c != 3:
        raise OteError(f"{xml}: input has {c} channels, not 3")
    if (w, h) != tuple(task.input_size):
        raise OteError(f"{xml}: IR input is {w}x{h}, template {task.name} expects {task.input_size[0]}x"
                       f"{task.input_size[1]} (the anchors are laid out for that size)")
    det = detection_output_node(model)
    if det is None:
        raise OteError(f"{xml}: no DetectionOutput layer: not an SSD detector IR")
    ev = ConstEvaluator()
    conv_nodes = {}
    ir_convs = []
    for op in model.get_ordered_ops():
        if op.get_type_name() in CONV_TYPES:
            conv = IRConv(op, ev)
            conv_nodes[op.get_instance_id()] = conv
            ir_convs.append(conv)
    if not ir_convs:
        raise OteError(f"{xml}: no convolution in the IR")

    detector = task.build_detector().eval()
    head = detector.bbox_head
    num_classes = head.num_classes
    bg = int(det.get_attributes()["background_label_id"])
    if bg not in (0, num_classes):
        raise OteError(f"IR layer {_name(det)}: background_label_id {bg}; expected {num_classes} (background last, "
                       f"ours) or 0")
    _check_priors(model, det, InferenceModel(detector, task.img_norm_cfg).eval(), (w, h), ev)

    chain_lengths = [len([m for m in conv.modules() if isinstance(m, nn.Conv2d)]) for conv in head.reg_convs]
    heads = _head_convs(det, ev, conv_nodes, chain_lengths)
    head_ids = {id(c) for levels in heads.values() for convs in levels for c in convs}
    backbone_ir = [c for c in ir_convs if id(c) not in head_ids]

    tracer = _ConvTracer(detector)
    with torch.no_grad():
        detector(torch.zeros(1, 3, h, w))
    tracer.close()
    modules = dict(detector.named_modules())
    backbone_ours = [n for n in tracer.order if not n.startswith("bbox_head.")]
    if len(backbone_ours) != len(backbone_ir):
        for ir, name in zip(backbone_ir, backbone_ours):
            _check_pair(ir, name, modules[name])  # names the first layer that differs
        first_extra = backbone_ir[len(backbone_ours)].describe() if len(backbone_ir) > len(backbone_ours) else \
            f"our '{backbone_ours[len(backbone_ir)]}'"
        raise OteError(f"the IR's backbone has {len(backbone_ir)} convolutions, this template's "
                       f"{len(backbone_ours)}: no one-to-one mapping (first unmatched: {first_extra})")
    pairs = list(zip(backbone_ir, backbone_ours))
    for branch, levels in heads.items():
        ours_levels = head.reg_convs if branch == "reg" else head.cls_convs
        for level, convs in enumerate(levels):
            prefix = f"bbox_head.{branch}_convs.{level}"
            names = [prefix + ("." + n if n else "") for n, m in ours_levels[level].named_modules()
                     if isinstance(m, nn.Conv2d)]
            pairs.extend(zip(convs, names))
    for ir, name in pairs:
        _check_pair(ir, name, modules[name])

    # the first convolution absorbs the IR's input transform against our normalisation
    first_ir, first_name = pairs[0]
    perm_ir, s_ir, t_ir, fq_in = _preprocessing(model, ev, first_ir)
    norm = task.img_norm_cfg
    mean, std = np.array(norm["mean"], np.float64), np.array(norm["std"], np.float64)
    perm_ours = np.array([2, 1, 0]) if norm.get("to_rgb", True) else np.arange(3)
    weight0 = np.zeros_like(first_ir.weight)
    for k in range(3):
        c = int(np.nonzero(perm_ir == k)[0][0])
        j = int(np.nonzero(perm_ours == k)[0][0])
        weight0[:, j] = first_ir.weight[:, c] * s_ir[c] * std[j]
        # IR: y = s * (x + t / s); ours: y = (x - mean) / std; zero padding only agrees if offsets agree
        if not np.isclose(-t_ir[c] / s_ir[c], mean[j], atol=1e-3 * max(1.0, abs(mean[j]))):
            raise OteError(f"IR input preprocessing subtracts {-t_ir[c] / s_ir[c]:.4g} from channel {k}, the "
                           f"template's img_norm_cfg subtracts {mean[j]:.4g}: not foldable exactly (zero padding)")
    first_ir.weight = weight0

    # cls convs of an IR with the background first: move it last, per anchor
    if bg == 0 and num_classes > 0:
        for convs in heads["cls"]:
            last = convs[-1]
            out = last.weight.shape[0]
            per = num_classes + 1
            order = np.arange(out).reshape(-1, per)
            order = np.concatenate([order[:, 1:], order[:, :1]], axis=1).reshape(-1)
            last.weight, last.bias = last.weight[order], last.bias[order]

    state = {k: v.clone() for k, v in detector.state_dict().items()}
    assigned = set()

    def put(key, value):
        if key not in state:
            raise OteError(f"internal: {key} is not a parameter of the model")
        state[key] = torch.as_tensor(np.asarray(value), dtype=state[key].dtype).reshape(state[key].shape)
        assigned.add(key)

    for ir, name in pairs:
        conv = modules[name]
        put(name + ".weight", ir.weight)
        bn_name = tracer.bn_of.get(name)
        bias_key = name + ".bias"
        if conv.bias is not None:
            put(bias_key, ir.bias)
            bn_bias = np.zeros_like(ir.bias)
        elif bn_name is not None:
            bn_bias = ir.bias
        elif np.any(ir.bias != 0):
            raise OteError(f"{ir.describe()} has a bias, but our '{name}' has neither a bias nor a BatchNorm")
        if bn_name is not None:
            bn = modules[bn_name]
            put(bn_name + ".weight", np.ones(bn.num_features))
            put(bn_name + ".bias", bn_bias)
            put(bn_name + ".running_mean", np.zeros(bn.num_features))
            put(bn_name + ".running_var", np.full(bn.num_features, _identity_bn_var(bn.eps)))
    for key in state:
        if key.endswith("num_batches_tracked"):
            continue
        if key == "bbox_head.loss_weights":
            state[key] = torch.zeros_like(state[key])
            continue
        if key not in assigned:
            raise OteError(f"the IR has no weights for our '{key}'")
    detector.load_state_dict(state)
    calibrated = 0
    if calibration_images:
        bn_added = {tracer.bn_of[name]: (0.0 if modules[name].bias is not None else ir.bias)
                    for ir, name in pairs if name in tracer.bn_of}
        calibrated = calibrate_batchnorm(detector, task.img_norm_cfg, calibration_images, (w, h), bn_added)

    int8 = any(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())
    if int8:
        log.warning("%s is quantised (FakeQuantize layers): its weights were dequantised to FP32 and the "
                    "activation quantisation is dropped, so results differ from the INT8 IR", xml)
    # a published model has completed its template's schedule, as OTE's snapshot.pth had: with
    # --resume-from, train.py then continues after it (the seed's fine-tuning step)
    meta = dict(task.checkpoint_meta(), input_size=[w, h], epoch=int(task.basic["epochs"]), source={
        "openvino_ir": os.path.abspath(xml), "xml_sha256": sha256sum(xml), "bin_sha256": sha256sum(bin_),
        "int8_dequantised": bool(int8), "batchnorm": "calibrated" if calibrated else "identity"})
    if calibrated:
        meta["source"]["batchnorm_calibration_images"] = calibrated
    report = {"checkpoint": os.path.abspath(out_path), "convolutions": len(pairs), "int8": int8,
              "batchnorm_calibration_images": calibrated}
    if verify:
        report.update(compare_head_outputs(task, detector, core, model, det, (w, h)))
        meta["source"]["verify_max_abs_diff"] = {k: float(v) for k, v in report.items() if k.startswith("max_abs")}
    atomic_torch_save({"meta": meta, "state_dict": {k: v.detach().cpu() for k, v in detector.state_dict().items()}},
                      out_path)
    load_weights(task.build_detector(), out_path, expected_template=task.name)  # loads with no missing keys
    log.info("imported %d convolutions of %s into %s (%s)", len(pairs), os.path.basename(xml), out_path,
             ", ".join(f"{k}={v:.2e}" for k, v in report.items() if k.startswith("max_abs")))
    return report


def verification_image(width, height, seed=0):
    """A deterministic BGR 0..255 test image with structure at several scales (not flat)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([127 + 100 * np.sin(xx / (7 + 5 * c) + yy / (11 + 3 * c)) for c in range(3)])
    img += rng.normal(0, 20, img.shape).astype(np.float32)
    return np.clip(img, 0, 255)[None].astype(np.float32)


def compare_head_outputs(task, detector, core, model, det, input_size):
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
    inference = InferenceModel(detector, task.img_norm_cfg).eval()
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
