"""Small building blocks shared by necks and heads (FPN, RSSH-FPN, FCOS, ATSS).

``ConvModule`` is conv -> optional norm -> optional ReLU with mmcv's attribute names (``conv``, ``gn`` /
``bn``, ``activate``), so OTE snapshots of those necks and heads load key for key.
"""

import torch
import torch.nn as nn


class _Fp32BackwardConv(torch.autograd.Function):
    """conv2d in the inputs' dtype (bf16) whose backward runs in fp32 (cast up, computed, cast back)."""

    @staticmethod
    def forward(ctx, x, weight, stride, padding, dilation, groups):
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, dilation, groups)
        return torch.nn.functional.conv2d(x, weight, None, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
            grad.float().contiguous(memory_format=fmt), x.float(), weight.float(), None, stride, padding, dilation,
            False, [0, 0], groups, [ctx.needs_input_grad[0], ctx.needs_input_grad[1], False])
        return (None if grad_x is None else grad_x.to(x.dtype), None if grad_w is None else grad_w.to(weight.dtype),
                None, None, None, None)


class Fp32DepthwiseConv2d(nn.Conv2d):
    """A depthwise ``nn.Conv2d`` whose backward runs in fp32 under bf16 autocast (the forward stays bf16,
    as autocast runs it); without autocast it is a plain ``nn.Conv2d`` (same parameters, same state_dict
    keys, same export).

    Why: on the CPU, oneDNN's bf16 depthwise-convolution backward is slow. In a bf16 + channels_last
    training step of face-detection-0200 (256x256, batch 8, 1 thread, AMD EPYC with AVX512-BF16, no AMX)
    the depthwise convolutions' backward took 896 ms (38 % of the step) against 373 ms in fp32
    channels_last, while their forward took 40 ms (benchmarks/bench_amp.py --profile).
    """

    def forward(self, x):
        kind = x.device.type
        if not (torch.is_autocast_enabled(kind) and self.padding_mode == "zeros"
                and torch.get_autocast_dtype(kind) == torch.bfloat16):
            return super().forward(x)
        dtype = torch.bfloat16
        out = _Fp32BackwardConv.apply(x.to(dtype), self.weight.to(dtype), self.stride, self.padding, self.dilation,
                                      self.groups)
        return out if self.bias is None else out + self.bias.to(dtype).view(1, -1, 1, 1)


def is_depthwise(module):
    """A plain ``nn.Conv2d`` with one input and one output channel per group (groups = channels > 1)."""
    return (type(module) is nn.Conv2d and module.groups > 1
            and module.groups == module.in_channels == module.out_channels)


def depthwise_convs_in_fp32(model):
    """Make every depthwise ``nn.Conv2d`` of ``model`` (in place) an ``Fp32DepthwiseConv2d``; returns how
    many. Parameters, state_dict and behaviour outside autocast are unchanged."""
    count = 0
    for module in model.modules():
        if is_depthwise(module):
            module.__class__ = Fp32DepthwiseConv2d
            count += 1
    return count


def _build_norm(norm_cfg, channels):
    """(attribute name, module) of an mmcv-style ``norm_cfg``: GN (``num_groups``) or BN."""
    cfg = dict(norm_cfg)
    kind = cfg.pop("type")
    requires_grad = cfg.pop("requires_grad", True)
    if kind == "GN":
        name, layer = "gn", nn.GroupNorm(cfg.pop("num_groups"), channels, **cfg)
    elif kind in ("BN", "BN2d"):
        name, layer = "bn", nn.BatchNorm2d(channels, **cfg)
    else:
        raise ValueError(f"norm type '{kind}' is not supported (GN, BN)")
    for p in layer.parameters():
        p.requires_grad = requires_grad
    return name, layer


class ConvModule(nn.Module):
    """Conv2d, then the norm of ``norm_cfg`` (if any), then ReLU when ``act_cfg`` asks for it.

    ``bias='auto'`` (mmcv's rule): a bias only when there is no norm layer.
    ``act_cfg``: None (no activation) or ``dict(type='ReLU')``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias="auto",
                 norm_cfg=None, act_cfg=None, inplace=True):
        super().__init__()
        if bias == "auto":
            bias = norm_cfg is None
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
        self.norm_name = None
        if norm_cfg is not None:
            self.norm_name, norm = _build_norm(norm_cfg, out_channels)
            self.add_module(self.norm_name, norm)
        if act_cfg is not None:
            if act_cfg.get("type") != "ReLU":
                raise ValueError(f"activation '{act_cfg.get('type')}' is not supported (ReLU)")
            self.activate = nn.ReLU(inplace=inplace)
        else:
            self.activate = None

    def forward(self, x):
        x = self.conv(x)
        if self.norm_name is not None:
            norm = getattr(self, self.norm_name)
            if isinstance(norm, nn.GroupNorm) and x.shape[0] * x.shape[1] // norm.num_groups * x[0, 0].numel() == 1:
                # one value per group (batch 1, a 1x1 level, one channel per group: FCOS's P7 at inputs up to
                # 128 px): F.group_norm refuses it, although the result (the bias) is well defined
                x = torch.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)
            else:
                x = norm(x)
        if self.activate is not None:
            x = self.activate(x)
        return x


def conv_tower(in_channels, feat_channels, num_convs, norm_cfg=None, bias="auto"):
    """A dense head's stacked 3x3 convolutions (conv, norm, ReLU) as mmdetection builds them; the
    ``ModuleList`` keeps mmdetection's names (``cls_convs.0.conv``...) so OTE snapshots load."""
    return nn.ModuleList(
        ConvModule(in_channels if i == 0 else feat_channels, feat_channels, 3, padding=1, bias=bias,
                   norm_cfg=norm_cfg, act_cfg=dict(type="ReLU")) for i in range(num_convs))


def run_tower(tower, x):
    for conv in tower:
        x = conv(x)
    return x


def init_towers(*towers, std=0.01):
    for tower in towers:
        for module in tower:
            normal_init(module.conv, std=std)


class Scale(nn.Module):
    """A learnable scalar multiplier (mmcv's ``Scale``; parameter ``scale``)."""

    def __init__(self, scale=1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(scale)))

    def forward(self, x):
        return x * self.scale


def normal_init(module, std=0.01, bias=0.0):
    nn.init.normal_(module.weight, 0.0, std)
    if module.bias is not None:
        nn.init.constant_(module.bias, bias)


def bias_init_with_prob(prior_prob):
    """The bias that makes a sigmoid output ``prior_prob`` (focal-loss initialisation)."""
    return float(-torch.log(torch.tensor((1 - prior_prob) / prior_prob)))
