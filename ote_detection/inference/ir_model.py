"""What an OpenVINO IR's own graph says, read with no model of ours: the numeric values of its constant
sub-graphs (``ConstEvaluator``), its convolutions' weight shapes (``ir_conv_shapes``, the architecture
fingerprint the predictor factory compares with a template's model) and its complexity (``ir_complexity``).
The weight import's walks through the graph are ``omz_import/ir_graph.py``."""

import numpy as np

from ..utils.errors import OteError

CONV_TYPES = ("Convolution", "GroupConvolution")


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
    ``inference.factory`` compares with a template's model to tell whether an IR without export_info.yaml
    has that template's architecture."""
    shapes = []
    for op in model.get_ordered_ops():
        t = op.get_type_name()
        if t in CONV_TYPES and op.get_input_partial_shape(1).is_static:
            w = [int(d) for d in op.get_input_shape(1)]
            shapes.append(tuple(w) if t == "Convolution" else (w[0] * w[1], *w[2:]))
    return sorted(shapes)
