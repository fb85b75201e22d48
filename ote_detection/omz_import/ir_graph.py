"""Reading an OpenVINO IR's graph: constant folding of weight subgraphs, convolutions with their
weights, and walks from an output back to the convolution that produced it."""

import logging

import numpy as np

from ..utils.errors import OteError

log = logging.getLogger(__name__)

CONV_TYPES = ("Convolution", "GroupConvolution")
# ops that pass one data input through unchanged in layout terms (walking from a head back to its conv)
PASS_THROUGH = ("Add", "Multiply", "Subtract", "Relu", "Clamp", "Transpose", "Reshape", "Squeeze", "Unsqueeze",
                "FakeQuantize", "Convert", "SoftMax", "Softmax", "Sigmoid", "Concat")



def node_name(node):
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
        raise OteError(f"constant sub-graph with layer {node_name(node)} is not supported by the importer")


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




# element-wise activations that ptflops counts as one operation per output element
_ACTIVATIONS = ("Relu", "Clamp", "PRelu", "Sigmoid", "HSwish", "HSigmoid", "Swish", "Elu", "Gelu", "Mish")


def _numel(shape):
    n = 1
    for d in shape:
        n *= int(d)
    return n


def ir_complexity(model):
    """(GFLOPs, Mp) of an OpenVINO IR (``openvino.Model``), counted from its own graph.

    Parameters: the elements of every convolution's (Convolution, GroupConvolution) and MatMul's
    weight input, plus the constant bias added right after it (BatchNorm is folded into these in an IR,
    so a model's ptflops count, which lists BatchNorm's 2 parameters per channel apart, is a little
    higher). GFLOPs: 2 x multiply-adds of those layers and their biases, plus one operation per output
    element of the activations (ReLU, Clamp, ...), the same rules as ``utils.complexity`` applies to
    a PyTorch model (ptflops module hooks) except that the folded BatchNorm costs nothing. FakeQuantize
    and dequantisation (INT8 IRs) are not counted. Shapes must be static (IRs of ours and of OMZ are)."""
    macs = params = 0
    ev = ConstEvaluator()
    for op in model.get_ordered_ops():
        t = op.get_type_name()
        if t in CONV_TYPES or t == "MatMul":
            if not op.get_output_partial_shape(0).is_static or not op.get_input_partial_shape(1).is_static:
                continue
            if t == "MatMul" and not ev.is_const(op.input(1).get_source_output()):
                continue  # a product of two activations has no weights
            w = list(op.get_input_shape(1))
            out = list(op.get_output_shape(0))
            if t == "Convolution":
                per_output = _numel(w[1:])
            elif t == "GroupConvolution":
                per_output = _numel(w[2:])
            else:
                per_output = int(w[-1] if op.get_transpose_b() else w[-2]) if len(w) >= 2 else 1
            macs += _numel(out) * per_output
            params += _numel(w)
            for target in op.output(0).get_target_inputs():
                add = target.get_node()
                if add.get_type_name() != "Add":
                    continue
                other = add.input(1 - target.get_index()).get_source_output()
                if ev.is_const(other) and other.get_partial_shape().is_static:
                    params += _numel(other.get_shape())
                    macs += _numel(out)
        elif t in _ACTIVATIONS and op.get_output_partial_shape(0).is_static:
            macs += _numel(op.get_output_shape(0))
    return 2 * macs / 1e9, params / 1e6


def ir_conv_shapes(model):
    """Sorted weight shapes of an IR's convolutions in PyTorch's layout [out, in / groups, kh, kw] (a
    GroupConvolution's [G, out/G, in/G, kh, kw] becomes [out, in/G, kh, kw]): the fingerprint that
    ``apis.predictor`` compares with a template's model to tell whether an IR without export_info.yaml
    has that template's architecture."""
    shapes = []
    for op in model.get_ordered_ops():
        t = op.get_type_name()
        if t in CONV_TYPES and op.get_input_partial_shape(1).is_static:
            w = [int(d) for d in op.get_input_shape(1)]
            shapes.append(tuple(w) if t == "Convolution" else (w[0] * w[1], *w[2:]))
    return sorted(shapes)
