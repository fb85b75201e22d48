"""The contract between a detector and its head: what every head family implements and declares.

A dense head turns the neck's (or backbone's) feature levels into per-location predictions. The
detector, the trainer, pruning, deployment sizes, config checks, export adapters and predictors call
only what is documented here (in the style of torchvision's ``models/detection/fcos.py``), so adding a
box-only dense head needs a head file and a template, and no change in ``engine/``, ``export/``,
``compression/`` or ``apis/``.

Shapes: ``B`` images, ``L`` feature levels (finest first), ``C`` = ``num_classes`` (no background),
``A`` candidates (anchors or points) of all levels, ``N`` detections. Boxes are (x1, y1, x2, y2) in
pixels of the network input, whose size is ``input_hw`` = (H, W).

What a head **declares** (class attributes, or a property / method where they depend on the config):

* ``strides`` (property): list of L ints, the input pixels per feature-map cell of each level.
* ``prediction_layers()``: the convolutions whose output channels are predictions (class logits, box
  regression, centerness); they must keep their shape under filter pruning.
* ``export_family``: which of the two Open Model Zoo output contracts its IR has
  (``ExportFamily.SSD`` or ``ExportFamily.NMS``; see ``ExportFamily``).
* ``train_cfg_keys``: the ``model.train_cfg`` keys the head reads (a config check warns about others).

What a head **computes**:

* ``forward(feats) -> outputs``: ``feats`` a list of L tensors ``[B, C_l, H_l, W_l]``; ``outputs`` a
  ``NamedTuple`` of per-level lists (``SSDOutputs`` or ``CenternessOutputs``), whose first field is
  always ``cls_scores``.
* ``loss(outputs, gt_bboxes, gt_labels) -> dict[str, Tensor]``: scalar losses that the trainer sums.
  ``gt_bboxes``: B float tensors ``[G_b, 4]`` in input pixels (``G_b`` may be 0); ``gt_labels``: B long
  tensors ``[G_b]`` in ``[0, C)``. Runs in fp32 even under autocast. An image without ground truth gives
  a finite loss (negatives only), and gradients flow.
* ``decode(outputs, input_hw) -> (boxes [B, A, 4], scores [B, A, C])``: every candidate box in input
  pixels, clipped to the image, and its per-class score in [0, 1], before thresholding and NMS. Only
  traceable tensor ops, so ``torch.export`` can put it in the graph.
* ``predict(outputs, input_hw) -> list of B Detections``: after score threshold and NMS with
  ``test_cfg``, best first. The default is ``decode`` then ``multiclass_nms``.
"""

import abc
import inspect
from typing import ClassVar, List, NamedTuple, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from ..postprocess import multiclass_nms


class ExportFamily:
    """The two Open Model Zoo output contracts of a face-detection IR (one name set for the export
    adapters, ``export_info.yaml``'s ``head_family`` and the OpenVINO predictor).

    * ``SSD`` = ``"ssd"``: one output ``detection_out`` [1, 1, N, 7] of OpenVINO's ``DetectionOutput``
      (image_id, label, confidence, x_min, y_min, x_max, y_max normalised to [0, 1]; face-detection-0200
      to 0204). A head of this family also provides ``export_raw``, ``prior_boxes``, ``prior_variances``
      and ``box_coder_info`` (see ``SSDHead``).
    * ``NMS`` = ``"nms"``: ``decode`` in the graph, then an NMS op; outputs ``boxes`` [N, 5] (x1, y1, x2,
      y2, score in input pixels) and ``labels`` [N] (face-detection-0205/0206).
    """

    SSD = "ssd"
    NMS = "nms"
    ALL = (SSD, NMS)


class SSDOutputs(NamedTuple):
    """Raw outputs of a softmax (background-class) anchor head, per level.

    ``cls_scores``: L tensors ``[B, A_l * (C + 1), H_l, W_l]`` logits, background last;
    ``bbox_preds``: L tensors ``[B, A_l * 4, H_l, W_l]`` box-coder deltas; anchors of a cell contiguous.
    """

    cls_scores: List[Tensor]
    bbox_preds: List[Tensor]


class CenternessOutputs(NamedTuple):
    """Raw outputs of a sigmoid head with a centerness branch (FCOS, ATSS), per level.

    ``cls_scores``: L tensors ``[B, A_l * C, H_l, W_l]`` logits; ``bbox_preds``: L tensors
    ``[B, A_l * 4, H_l, W_l]`` (FCOS: distances l, t, r, b; ATSS: box-coder deltas); ``centernesses``:
    L tensors ``[B, A_l, H_l, W_l]`` logits. ``A_l`` = 1 for FCOS (one point per cell).
    """

    cls_scores: List[Tensor]
    bbox_preds: List[Tensor]
    centernesses: List[Tensor]


def map_outputs(outputs, fn):
    """``outputs`` (a head-outputs NamedTuple) with ``fn`` applied to every per-level tensor."""
    return type(outputs)(*([fn(t) for t in level] for level in outputs))


class Detections(NamedTuple):
    """The detections of one image, best score first.

    ``boxes``: float ``[N, 4]`` (x1, y1, x2, y2) in input pixels; ``scores``: float ``[N]`` in [0, 1];
    ``labels``: long ``[N]`` class indices in ``[0, C)``.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor

    def to_rows(self) -> Tensor:
        """float ``[N, 6]`` with the columns of ``ROW_FIELDS``: x1, y1, x2, y2, score, label (as a float)."""
        return torch.cat([self.boxes, self.scores[:, None], self.labels[:, None].to(self.boxes.dtype)], dim=1)


# the columns of ``Detections.to_rows``: the [N, 6] layout of frame predictors, eval and drawing
ROW_FIELDS = ("x1", "y1", "x2", "y2", "score", "label")
ROW_WIDTH = len(ROW_FIELDS)


class BaseDenseHead(nn.Module, metaclass=abc.ABCMeta):
    """Base of every head family; see the module docstring for the contract.

    Args:
        num_classes: C, the number of object classes (no background).
        train_cfg: ``model.train_cfg`` (the keys in ``train_cfg_keys`` are read).
        test_cfg: ``model.test_cfg``: ``score_thr``, ``nms.iou_threshold``, ``nms_pre_classwise``,
            ``max_per_img`` (see ``postprocess.multiclass_nms``).
    """

    export_family: ClassVar[str]
    train_cfg_keys: ClassVar[Tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        family = getattr(cls, "export_family", None)
        if family is not None and family not in ExportFamily.ALL:
            raise TypeError(f"{cls.__name__}.export_family {family!r} is not one of {ExportFamily.ALL}")

    def __init__(self, num_classes, train_cfg=None, test_cfg=None):
        super().__init__()
        if getattr(type(self), "export_family", None) is None:
            raise TypeError(f"{type(self).__name__} declares no export_family")
        self.num_classes = int(num_classes)
        self.train_cfg = dict(train_cfg or {})
        self.test_cfg = dict(test_cfg or {})

    # -- declarations ------------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def strides(self) -> List[int]:
        """Input pixels per feature-map cell of each level, finest first (e.g. [8, 16, 32, 64, 128])."""

    @abc.abstractmethod
    def prediction_layers(self) -> List[nn.Conv2d]:
        """The convolutions whose output channels are predictions: pruning must keep their shape."""

    @classmethod
    def strides_of_config(cls, head_cfg) -> List[int]:
        """``strides`` from the head's config dict (no model built): ``head_cfg['strides']`` or its
        ``anchor_generator``'s. A head that keeps them elsewhere overrides this."""
        for owner in (head_cfg.get("anchor_generator") or {}, head_cfg):
            strides = owner.get("strides")
            if strides:
                return [int(s[0] if isinstance(s, (tuple, list)) else s) for s in strides]
        default = inspect.signature(cls.__init__).parameters.get("strides")
        if default is not None and default.default is not inspect.Parameter.empty:
            return [int(s) for s in default.default]
        raise ValueError(f"{cls.__name__}: the config gives no strides")

    # -- computation -------------------------------------------------------------------------------
    @abc.abstractmethod
    def forward(self, feats: Sequence[Tensor]):
        """L feature maps ``[B, C_l, H_l, W_l]`` -> the family's outputs NamedTuple of per-level maps."""

    @abc.abstractmethod
    def loss(self, outputs, gt_bboxes: Sequence[Tensor], gt_labels: Sequence[Tensor]) -> dict:
        """Scalar losses (``{'loss_cls': ..., 'loss_bbox': ..., ...}``); see the module docstring."""

    @abc.abstractmethod
    def decode(self, outputs, input_hw: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
        """(boxes ``[B, A, 4]`` in input pixels, clipped; scores ``[B, A, C]`` in [0, 1]), before NMS."""

    @torch.no_grad()
    def predict(self, outputs, input_hw: Tuple[int, int]) -> List[Detections]:
        """B ``Detections`` after score threshold and class-wise NMS with ``test_cfg``, best first."""
        boxes, scores = self.decode(outputs, input_hw)
        return [Detections(*multiclass_nms(b.float(), s.float(), self.test_cfg)) for b, s in zip(boxes, scores)]

    # -- helpers for the families ------------------------------------------------------------------
    @staticmethod
    def flatten_levels(maps, channels):
        """Per-level maps [B, K * channels, H_l, W_l] -> [B, sum_l(H_l * W_l * K), channels], cell-major
        with the K predictions of a cell contiguous: the order of the anchors / points of every head."""
        batch = maps[0].shape[0]
        return torch.cat([m.permute(0, 2, 3, 1).reshape(batch, -1, channels) for m in maps], 1)

    @staticmethod
    def featmap_sizes(outputs) -> List[Tuple[int, int]]:
        """[(H_l, W_l)] of the levels of ``outputs``."""
        return [tuple(t.shape[-2:]) for t in outputs.cls_scores]
