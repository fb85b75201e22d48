"""Model size and complexity counted as OTE reported them.

OTE's ``get_flops.py`` used mmcv's ``get_model_complexity_info`` (a port of ptflops): it counts
multiply-adds of convolutions, linear layers, BatchNorm, activations, pooling and upsampling with
module hooks, and OTE printed 2 x that count as GFLOPs and the parameter count (BatchNorm
included) as Mp. We call ptflops' 'pytorch' backend with module hooks only (``count_functional``
off: mmcv counted no functional ops such as ShuffleNet's channel split) on the detector's forward
(backbone + neck + head, no post-processing) at the template's input size.
"""

import torch
import torch.nn as nn
from ptflops import get_model_complexity_info


class _RawForward(nn.Module):
    def __init__(self, detector):
        super().__init__()
        self.detector = detector

    def forward(self, x):
        return self.detector(x)


def model_complexity(detector, input_size):
    """(GFLOPs, Mp) of ``detector`` for an input of ``input_size`` (w, h)."""
    width, height = input_size
    was_training = detector.training
    detector.eval()
    with torch.no_grad():
        macs, params = get_model_complexity_info(_RawForward(detector), (3, height, width), as_strings=False,
                                                 print_per_layer_stat=False, verbose=False, backend="pytorch",
                                                 backend_specific_config={"count_functional": False})
    detector.train(was_training)
    return 2 * macs / 1e9, params / 1e6


def complexity_record(detector, input_size):
    """``{gflops, mparams, input_size, counted_by}`` of ``detector`` at ``input_size`` (w, h): what an
    export writes into export_info.yaml's ``complexity``, so that readers of the IR report the exported
    model's own figures (a pruned model's, not its template's)."""
    gflops, mparams = model_complexity(detector, input_size)
    return {"gflops": round(float(gflops), 4), "mparams": round(float(mparams), 4),
            "input_size": [int(v) for v in input_size], "counted_by": "ptflops module hooks on the PyTorch model"}
