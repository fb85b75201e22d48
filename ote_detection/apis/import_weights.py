"""Import of an OpenVINO IR's weights (Open Model Zoo face detectors) into a template's snapshot: the
orchestration behind tools/import_openvino_weights.py. The graph reading is ``omz_import/ir_graph.py``, the
SSD mapping ``omz_import/ssd_mapping.py``, the BatchNorm calibration ``engine/bn_calibration.py``."""

import logging
import os

import numpy as np
import torch
import torch.nn as nn

from ..engine.bn_calibration import calibrate_batchnorm
from ..engine.checkpoint import load_weights
from ..omz_import.ir_graph import CONV_TYPES, ConstEvaluator, IRConv, node_name
from ..omz_import.ssd_mapping import (check_pair, check_priors, ConvTracer, head_convs, identity_bn_var,
                              read_preprocessing, compare_head_outputs)
from ..inference.openvino_predictor import detection_output_node, find_ir_pair, read_ir, static_input
from ..models.inference import InferenceModel
from ..utils.errors import OteError
from ..utils.fileio import atomic_torch_save, sha256sum
from .task import Task

log = logging.getLogger(__name__)


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
    model, reshaped = static_input(read_ir(xml, core), xml, task.input_size,
                                   f"the template's input size {task.input_size[0]}x{task.input_size[1]}")
    if reshaped:
        log.info(reshaped)
    _, _, h, w = (int(d) for d in model.inputs[0].get_partial_shape().to_shape())
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
        raise OteError(f"IR layer {node_name(det)}: background_label_id {bg}; expected {num_classes} (background last, "
                       f"ours) or 0")
    check_priors(model, det, InferenceModel(detector, task.img_norm_cfg).eval(), (w, h), ev)

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

    # the first convolution absorbs the IR's input transform against our normalisation
    first_ir, first_name = pairs[0]
    perm_ir, s_ir, t_ir, fq_in = read_preprocessing(model, ev, first_ir)
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
            put(bn_name + ".running_var", np.full(bn.num_features, identity_bn_var(bn.eps)))
    for key in state:
        if key.endswith("num_batches_tracked"):
            continue
        if key in {f"bbox_head.{name}" for name in head.training_only_parameters}:
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


