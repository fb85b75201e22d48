"""Import of an OpenVINO IR's weights (Open Model Zoo face detectors) into a template's snapshot, in steps:
read and check the IR (``read_ssd_ir``), pair its convolutions with the model's (``pair_convolutions``),
fold its input preprocessing into the first convolution (``fold_input_preprocessing``), put the
background class last (``move_background_last``), build the model's state (``imported_state_dict``),
and ``import_ir_weights``, which runs them, calibrates BatchNorm and saves the checkpoint. The graph
reading is ``ir_graph.py`` (and ``inference/ir_model.py``), the SSD mapping ``ssd_mapping.py``, the BatchNorm calibration
``engine/bn_calibration.py``; ``apis/import_weights.py`` is the entry point with a template file."""

import logging
import os

import numpy as np
import torch
import torch.nn as nn

from ..engine.bn_calibration import calibrate_batchnorm
from ..artefacts.checkpoint import load_weights
from ..inference.ir_model import CONV_TYPES, ConstEvaluator, node_name
from ..inference.openvino_predictor import detection_output_node, find_ir_pair, read_ir, static_input
from ..models.inference import InferenceModel
from ..utils.errors import OteError
from ..utils.fileio import atomic_torch_save, sha256sum
from .ir_graph import IRConv
from .ssd_mapping import (ConvTracer, check_pair, check_priors, compare_head_outputs, head_convs, identity_bn_var,
                          read_preprocessing)

log = logging.getLogger(__name__)


def read_ssd_ir(ir_path, core, input_size, template_name):
    """(xml, bin, ``openvino.Model``, (w, h), its DetectionOutput node) of an SSD IR with one [1, 3, H, W]
    input of the template's ``input_size`` (w, h): a dynamic input is made that (``static_input``, said in
    one line); anything else is one line naming the .xml."""
    xml, bin_ = find_ir_pair(ir_path)
    model, reshaped = static_input(read_ir(xml, core), xml, input_size,
                                   f"the template's input size {input_size[0]}x{input_size[1]}")
    if reshaped:
        log.info(reshaped)
    _, _, h, w = (int(d) for d in model.inputs[0].get_partial_shape().to_shape())
    if (w, h) != tuple(input_size):
        raise OteError(f"{xml}: IR input is {w}x{h}, template {template_name} expects {input_size[0]}x"
                       f"{input_size[1]} (the anchors are laid out for that size)")
    det = detection_output_node(model)
    if det is None:
        raise OteError(f"{xml}: no DetectionOutput layer: not an SSD detector IR")
    return xml, bin_, model, (w, h), det


def ir_convolutions(model, ev, xml):
    """({instance id: ``IRConv``}, [``IRConv``] in topological order) of the IR's convolutions."""
    conv_nodes = {}
    ir_convs = []
    for op in model.get_ordered_ops():
        if op.get_type_name() in CONV_TYPES:
            conv = IRConv(op, ev)
            conv_nodes[op.get_instance_id()] = conv
            ir_convs.append(conv)
    if not ir_convs:
        raise OteError(f"{xml}: no convolution in the IR")
    return conv_nodes, ir_convs


def background_label(det, num_classes):
    """The DetectionOutput's background label: ``num_classes`` (last, ours) or 0 (first)."""
    bg = int(det.get_attributes()["background_label_id"])
    if bg not in (0, num_classes):
        raise OteError(f"IR layer {node_name(det)}: background_label_id {bg}; expected {num_classes} (background last, "
                       f"ours) or 0")
    return bg


def pair_convolutions(detector, det, ev, conv_nodes, ir_convs, size):
    """Match the IR's convolutions one to one with ``detector``'s Conv2d modules: the heads through the
    DetectionOutput inputs, the backbone in the order of a forward pass at ``size`` (w, h), each pair
    checked (shapes, groups, strides, paddings, dilations). Returns ([(``IRConv``, module name)], the
    head's IR convolutions {branch: [[IRConv] per level]}, the ``ConvTracer`` (its ``bn_of``: the
    BatchNorm after each convolution))."""
    w, h = size
    head = detector.bbox_head
    branches = head.prediction_branches()
    chain_lengths = [len([m for m in conv.modules() if isinstance(m, nn.Conv2d)]) for _, conv in branches["reg"]]
    heads = head_convs(det, ev, conv_nodes, chain_lengths)
    head_ids = {id(c) for levels in heads.values() for convs in levels for c in convs}
    backbone_ir = [c for c in ir_convs if id(c) not in head_ids]

    tracer = ConvTracer(detector)
    with torch.no_grad():
        detector(torch.zeros(1, 3, h, w))
    tracer.close()
    modules = dict(detector.named_modules())
    backbone_ours = [n for n in tracer.order if not n.startswith("bbox_head.")]
    if len(backbone_ours) != len(backbone_ir):
        for ir, name in zip(backbone_ir, backbone_ours):
            check_pair(ir, name, modules[name])  # names the first layer that differs
        first_extra = backbone_ir[len(backbone_ours)].describe() if len(backbone_ir) > len(backbone_ours) else \
            f"our '{backbone_ours[len(backbone_ir)]}'"
        raise OteError(f"the IR's backbone has {len(backbone_ir)} convolutions, this template's "
                       f"{len(backbone_ours)}: no one-to-one mapping (first unmatched: {first_extra})")
    pairs = list(zip(backbone_ir, backbone_ours))
    for branch, levels in heads.items():
        for level, convs in enumerate(levels):
            name, module = branches[branch][level]
            prefix = f"bbox_head.{name}"
            names = [prefix + ("." + n if n else "") for n, m in module.named_modules() if isinstance(m, nn.Conv2d)]
            pairs.extend(zip(convs, names))
    for ir, name in pairs:
        check_pair(ir, name, modules[name])
    return pairs, heads, tracer


def fold_input_preprocessing(model, ev, first_ir, img_norm_cfg):
    """The first convolution absorbs the IR's input transform (scale, offset, channel order) against our
    normalisation ``img_norm_cfg``: ``first_ir.weight`` is replaced. An offset that differs from our mean
    is one line (zero padding would then differ)."""
    perm_ir, s_ir, t_ir, _ = read_preprocessing(model, ev, first_ir)
    mean, std = np.array(img_norm_cfg["mean"], np.float64), np.array(img_norm_cfg["std"], np.float64)
    perm_ours = np.array([2, 1, 0]) if img_norm_cfg.get("to_rgb", True) else np.arange(3)
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


def move_background_last(cls_levels, num_classes):
    """Reorder the last class convolution of each level (``[[IRConv]]``) of an IR with the background
    first so that it comes last, per anchor, as in our heads."""
    for convs in cls_levels:
        last = convs[-1]
        out = last.weight.shape[0]
        per = num_classes + 1
        order = np.arange(out).reshape(-1, per)
        order = np.concatenate([order[:, 1:], order[:, :1]], axis=1).reshape(-1)
        last.weight, last.bias = last.weight[order], last.bias[order]


def imported_state_dict(detector, pairs, bn_of):
    """``detector``'s state dict with each paired convolution's weight (and bias) from the IR; the
    BatchNorm after a convolution (``bn_of``: {conv name: BatchNorm name}) becomes ``x + b`` (weight 1,
    mean 0, variance 1 - eps, bias b), the head's training-only parameters zero. A parameter the IR does
    not give is one line."""
    modules = dict(detector.named_modules())
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
        bn_name = bn_of.get(name)
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
            put(bn_name + ".running_var", np.full(bn.num_features, identity_bn_var(bn.eps)))
    training_only = {f"bbox_head.{name}" for name in detector.bbox_head.training_only_parameters}
    for key in state:
        if key.endswith("num_batches_tracked"):
            continue
        if key in training_only:
            state[key] = torch.zeros_like(state[key])
            continue
        if key not in assigned:
            raise OteError(f"the IR has no weights for our '{key}'")
    return state


def import_ir_weights(task, ir_path, out_path, verify=True, calibration_images=None):
    """Read the IR's weights into ``task``'s model and save them as a checkpoint at ``out_path``.

    ``task``: the work dir's ``apis.task.Task`` (name, input size, img_norm_cfg, model builder, checkpoint
    meta). ``calibration_images`` (a folder, image files, or a comma-separated list): BatchNorm statistics
    are measured on them (see ``calibrate_batchnorm``), for fine-tuning with BatchNorm in train mode;
    without them every BatchNorm is an exact identity plus bias (weight 1, mean 0, variance 1 - eps), which
    is exact in eval mode but far from the batch statistics of train mode.

    Returns a dict with the checkpoint path and the verification figures (max |diff| of the head outputs
    on a test image between the IR run with the f32 hint and our model)."""
    import openvino as ov
    core = ov.Core()
    xml, bin_, model, (w, h), det = read_ssd_ir(ir_path, core, task.input_size, task.name)
    ev = ConstEvaluator()
    conv_nodes, ir_convs = ir_convolutions(model, ev, xml)

    detector = task.build_detector().eval()
    num_classes = detector.bbox_head.num_classes
    bg = background_label(det, num_classes)
    check_priors(model, det, InferenceModel(detector, task.img_norm_cfg).eval(), (w, h), ev)
    pairs, heads, tracer = pair_convolutions(detector, det, ev, conv_nodes, ir_convs, (w, h))
    fold_input_preprocessing(model, ev, pairs[0][0], task.img_norm_cfg)
    if bg == 0 and num_classes > 0:  # cls convs of an IR with the background first: move it last, per anchor
        move_background_last(heads["cls"], num_classes)
    detector.load_state_dict(imported_state_dict(detector, pairs, tracer.bn_of))
    calibrated = 0
    if calibration_images:
        modules = dict(detector.named_modules())
        bn_added = {tracer.bn_of[name]: (0.0 if modules[name].bias is not None else ir.bias)
                    for ir, name in pairs if name in tracer.bn_of}
        calibrated = calibrate_batchnorm(detector, task.img_norm_cfg, calibration_images, (w, h), bn_added)

    int8 = any(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())
    if int8:
        log.warning("%s is quantised (FakeQuantize layers): its weights were dequantised to FP32 and the "
                    "activation quantisation is dropped, so results differ from the INT8 IR", xml)
    # a published model has completed its template's schedule, as OTE's snapshot.pth had: with
    # --resume-from, train.py then continues after it (the seed's fine-tuning step)
    meta = task.checkpoint_meta().replace(input_size=(w, h), epoch=int(task.basic["epochs"]), source={
        "openvino_ir": os.path.abspath(xml), "xml_sha256": sha256sum(xml), "bin_sha256": sha256sum(bin_),
        "int8_dequantised": bool(int8), "batchnorm": "calibrated" if calibrated else "identity"})
    if calibrated:
        meta.source["batchnorm_calibration_images"] = calibrated
    report = {"checkpoint": os.path.abspath(out_path), "convolutions": len(pairs), "int8": int8,
              "batchnorm_calibration_images": calibrated}
    if verify:
        report.update(compare_head_outputs(task.img_norm_cfg, detector, core, model, det, (w, h)))
        meta.source["verify_max_abs_diff"] = {k: float(v) for k, v in report.items() if k.startswith("max_abs")}
    atomic_torch_save({"meta": meta.to_dict(), "state_dict": {k: v.detach().cpu() for k, v in detector.state_dict().items()}},
                      out_path)
    load_weights(task.build_detector(), out_path, expected_template=task.name)  # loads with no missing keys
    log.info("imported %d convolutions of %s into %s (%s); BatchNorm %s", len(pairs), os.path.basename(xml), out_path,
             ", ".join(f"{k}={v:.2e}" for k, v in report.items() if k.startswith("max_abs")),
             f"statistics calibrated on {calibrated} image(s)" if calibrated else
             "folded (identity statistics: fine-tune with --calibrate-bn IMAGES first, or BatchNorm in train mode "
             "collapses the model)")
    return report
