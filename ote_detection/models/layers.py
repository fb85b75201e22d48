"""Small building blocks shared by necks and heads (FPN, RSSH-FPN, FCOS, ATSS).

``ConvModule`` is conv -> optional norm -> optional ReLU with mmcv's attribute names (``conv``, ``gn`` /
``bn``, ``activate``), so OTE snapshots of those necks and heads load key for key.
"""

import torch
import torch.nn as nn


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
