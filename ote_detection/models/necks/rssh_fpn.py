"""RSSH-FPN of OTE's mmdetection fork: an FPN whose every output passes a small context module."""

import torch
import torch.nn as nn

from ...registry import NECKS
from ..layers import ConvModule
from .fpn import FPN


class RSSH(nn.Module):
    """Context module: three chained 1x1 convs (C -> C/2 -> C/4 -> C/4) whose outputs are concatenated
    back to C channels. No norm and no activation unless ``norm_cfg`` / ``act_cfg`` say so."""

    def __init__(self, in_channels, norm_cfg=None, act_cfg=None):
        super().__init__()
        self.conv1 = ConvModule(in_channels, in_channels // 2, 1, norm_cfg=norm_cfg, act_cfg=act_cfg, inplace=False)
        self.conv2 = ConvModule(in_channels // 2, in_channels // 4, 1, norm_cfg=norm_cfg, act_cfg=act_cfg,
                                inplace=False)
        self.conv3 = ConvModule(in_channels // 4, in_channels // 4, 1, norm_cfg=norm_cfg, act_cfg=act_cfg,
                                inplace=False)

    def forward(self, x):
        x1 = self.conv1(x)
        x2 = self.conv2(x1)
        x3 = self.conv3(x2)
        return torch.cat((x1, x2, x3), dim=1)


@NECKS.register()
class RSSH_FPN(FPN):  # noqa: N801  (the config's type name)
    """``FPN`` (same arguments), then one ``RSSH`` context module per output level (``context_modules.i``).
    Its convolutions start from Xavier-uniform weights like the FPN's."""

    def __init__(self, in_channels, out_channels, num_outs, start_level=0, end_level=-1, add_extra_convs=False,
                 extra_convs_on_inputs=True, relu_before_extra_convs=False, no_norm_on_lateral=False,
                 conv_cfg=None, norm_cfg=None, act_cfg=None):
        super().__init__(in_channels, out_channels, num_outs, start_level, end_level, add_extra_convs,
                         extra_convs_on_inputs, relu_before_extra_convs, no_norm_on_lateral, conv_cfg, norm_cfg,
                         act_cfg)
        self.context_modules = nn.ModuleList(RSSH(out_channels, norm_cfg, act_cfg) for _ in self.fpn_convs)
        self.init_weights()

    def forward(self, inputs):
        return tuple(ctx(out) for ctx, out in zip(self.context_modules, super().forward(inputs)))
