"""Feature Pyramid Network (Lin et al., 2017) as mmdetection 2.x configures it."""

import torch.nn as nn
import torch.nn.functional as F

from ...registry import NECKS
from ..layers import ConvModule


@NECKS.register()
class FPN(nn.Module):
    """Top-down pyramid over backbone levels ``start_level .. end_level``, plus extra stride-2 levels.

    * a 1x1 lateral conv per used input level, then from the coarsest level down: the upper level is
      upsampled (nearest, to the lower level's size) and added;
    * a 3x3 output conv per level;
    * ``num_outs - used levels`` extra levels: with ``add_extra_convs`` a 3x3 stride-2 conv each, the first on
      the raw backbone feature (``'on_input'``, or ``True`` with ``extra_convs_on_inputs=True``), on the last
      lateral (``'on_lateral'``), or on the last output (``'on_output'``, or ``True`` with
      ``extra_convs_on_inputs=False``); every later one on the previous extra level, after a ReLU when
      ``relu_before_extra_convs``. Without extra convs: stride-2 subsampling (max-pool of size 1).

    No norm and no activation inside the pyramid unless ``norm_cfg`` / ``act_cfg`` say so (mmdetection's
    defaults). Convolutions start from Xavier-uniform weights and zero biases.
    Module names are mmdetection's (``lateral_convs.i.conv``, ``fpn_convs.i.conv``).
    """

    def __init__(self, in_channels, out_channels, num_outs, start_level=0, end_level=-1, add_extra_convs=False,
                 extra_convs_on_inputs=True, relu_before_extra_convs=False, no_norm_on_lateral=False,
                 conv_cfg=None, norm_cfg=None, act_cfg=None, upsample_cfg=None):
        super().__init__()
        if conv_cfg is not None:
            raise ValueError("FPN: conv_cfg is not supported")
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.num_outs = num_outs
        self.relu_before_extra_convs = relu_before_extra_convs
        self.upsample_cfg = dict(upsample_cfg or {"mode": "nearest"})
        num_ins = len(self.in_channels)
        if end_level == -1:
            self.backbone_end_level = num_ins
            if num_outs < num_ins - start_level:
                raise ValueError("FPN: num_outs is smaller than the number of used input levels")
        else:
            self.backbone_end_level = end_level
            if end_level > num_ins or num_outs != end_level - start_level:
                raise ValueError("FPN: end_level does not fit in_channels / num_outs")
        self.start_level = start_level
        if isinstance(add_extra_convs, str):
            if add_extra_convs not in ("on_input", "on_lateral", "on_output"):
                raise ValueError(f"FPN: add_extra_convs '{add_extra_convs}' is not one of on_input, on_lateral, "
                                 "on_output")
            self.add_extra_convs = add_extra_convs
        elif add_extra_convs:
            self.add_extra_convs = "on_input" if extra_convs_on_inputs else "on_output"
        else:
            self.add_extra_convs = False

        self.lateral_convs = nn.ModuleList()
        self.fpn_convs = nn.ModuleList()
        for i in range(self.start_level, self.backbone_end_level):
            self.lateral_convs.append(ConvModule(self.in_channels[i], out_channels, 1,
                                                 norm_cfg=None if no_norm_on_lateral else norm_cfg,
                                                 act_cfg=act_cfg, inplace=False))
            self.fpn_convs.append(ConvModule(out_channels, out_channels, 3, padding=1, norm_cfg=norm_cfg,
                                             act_cfg=act_cfg, inplace=False))
        extra_levels = num_outs - self.backbone_end_level + self.start_level
        if self.add_extra_convs and extra_levels >= 1:
            for i in range(extra_levels):
                if i == 0 and self.add_extra_convs == "on_input":
                    channels = self.in_channels[self.backbone_end_level - 1]
                else:
                    channels = out_channels
                self.fpn_convs.append(ConvModule(channels, out_channels, 3, stride=2, padding=1, norm_cfg=norm_cfg,
                                                 act_cfg=act_cfg, inplace=False))
        self.init_weights()

    def init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, inputs):
        if len(inputs) != len(self.in_channels):
            raise ValueError(f"FPN: {len(inputs)} input levels, expected {len(self.in_channels)}")
        laterals = [conv(inputs[i + self.start_level]) for i, conv in enumerate(self.lateral_convs)]
        used = len(laterals)
        for i in range(used - 1, 0, -1):
            if "scale_factor" in self.upsample_cfg:
                up = F.interpolate(laterals[i], **self.upsample_cfg)
            else:
                up = F.interpolate(laterals[i], size=laterals[i - 1].shape[2:], **self.upsample_cfg)
            laterals[i - 1] = laterals[i - 1] + up
        outs = [self.fpn_convs[i](laterals[i]) for i in range(used)]
        if self.num_outs > used:
            if not self.add_extra_convs:
                for _ in range(self.num_outs - used):
                    outs.append(F.max_pool2d(outs[-1], 1, stride=2))
            else:
                source = {"on_input": inputs[self.backbone_end_level - 1], "on_lateral": laterals[-1],
                          "on_output": outs[-1]}[self.add_extra_convs]
                outs.append(self.fpn_convs[used](source))
                for i in range(used + 1, self.num_outs):
                    x = F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]
                    outs.append(self.fpn_convs[i](x))
        return tuple(outs)
