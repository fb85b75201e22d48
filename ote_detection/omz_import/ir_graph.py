"""Reading an OpenVINO IR's graph for the weight import: convolutions with their folded weights and biases
(``IRConv``), and walks from an output back to the convolution that produced it. Constant folding, the
convolution types and the IR's complexity are ``inference/ir_model.py``."""

import logging

import numpy as np

from ..inference.ir_model import CONV_TYPES, node_name
from ..utils.errors import OteError

log = logging.getLogger(__name__)

# ops that pass one data input through unchanged in layout terms (walking from a head back to its conv)
PASS_THROUGH = ("Add", "Multiply", "Subtract", "Relu", "Clamp", "Transpose", "Reshape", "Squeeze", "Unsqueeze",
                "FakeQuantize", "Convert", "SoftMax", "Softmax", "Sigmoid", "Concat")


def consumers(output):
    return [i.get_node() for i in output.get_target_inputs()]


SHAPE_ARG_OPS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Gather", "StridedSlice", "Broadcast", "Tile")


def data_inputs(node, ev):
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
            raise OteError(f"IR layer {node_name(node)}: auto_pad '{attrs['auto_pad']}' is not supported")
        self.stride = tuple(int(v) for v in attrs["strides"])
        self.dilation = tuple(int(v) for v in attrs["dilations"])
        pads_begin, pads_end = tuple(int(v) for v in attrs["pads_begin"]), tuple(int(v) for v in attrs["pads_end"])
        if pads_begin != pads_end:
            raise OteError(f"IR layer {node_name(node)}: asymmetric padding {pads_begin}/{pads_end} has no Conv2d "
                           f"equivalent")
        self.padding = pads_begin
        # folded BatchNorm: per-channel Multiply then Add of constants after the convolution
        out = node.output(0)
        scale = np.ones(w.shape[0])
        bias = np.zeros(w.shape[0])
        while True:
            users = consumers(out)
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


def walk_back_to_conv(output, ev, conv_nodes, stop_at_concat=False):
    """From an output, follow the single data input back to the nearest convolution (or Concat)."""
    node = output.get_node()
    seen = 0
    while node.get_type_name() not in CONV_TYPES:
        if stop_at_concat and node.get_type_name() == "Concat":
            return node
        data = data_inputs(node, ev)
        if node.get_type_name() not in PASS_THROUGH or len(data) != 1:
            raise OteError(f"IR layer {node_name(node)}: the importer cannot follow the graph through it "
                           f"(expected one data input on the way from a head output to its convolution)")
        node = data[0].get_node()
        seen += 1
        if seen > 64:
            raise OteError(f"IR layer {node_name(node)}: no convolution found within 64 layers")
    return conv_nodes[node.get_instance_id()]


def find_level_concat(output, ev):
    node = output.get_node()
    for _ in range(32):
        if node.get_type_name() == "Concat":
            return node
        if node.get_type_name() in CONV_TYPES:
            return None  # a single level, no Concat
        data = data_inputs(node, ev)
        if len(data) != 1:
            raise OteError(f"IR layer {node_name(node)}: the importer cannot follow the graph through it "
                           f"(looking for the Concat of the head levels)")
        node = data[0].get_node()
    raise OteError(f"IR layer {node_name(node)}: no Concat of head levels found")
