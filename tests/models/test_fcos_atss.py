"""FCOS (face-detection-0205) and ATSS (face-detection-0206): necks, anchors, assigner, targets, losses,
decode and its export, and learning on real images."""

import json
import math
import os
import warnings

import cv2
import numpy as np
import pytest
import torch

from conftest import AIRPORT_ANN, AIRPORT_ROOT, need_shared, template_path
from ote_detection.apis.task import Task
from ote_detection.models.anchors import AnchorGenerator
from ote_detection.models.assigners import ATSSAssigner
from ote_detection.models.heads.atss_head import ATSSHead
from ote_detection.models.heads.fcos_head import INF, FCOSHead
from ote_detection.models.necks.fpn import FPN
from ote_detection.models.necks.rssh_fpn import RSSH_FPN

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _detector(name, input_size=None):
    torch.manual_seed(0)
    task = Task(template_path(name))
    return task, task.build_detector()


@pytest.fixture(scope="module")
def fcos():
    return _detector("face-detection-0205")


@pytest.fixture(scope="module")
def atss():
    return _detector("face-detection-0206")


# -- necks ---------------------------------------------------------------------------------------------
def test_fpn_0205_levels_and_extra_convs_on_output():
    torch.manual_seed(0)
    fpn = FPN([32, 96, 320], 48, num_outs=5, add_extra_convs=True, extra_convs_on_inputs=False,
              relu_before_extra_convs=True).eval()
    # MobileNetV2 stages 3-5 at a 128x128 input: strides 8, 16, 32
    feats = [torch.randn(1, 32, 16, 16), torch.randn(1, 96, 8, 8), torch.randn(1, 320, 4, 4)]
    outs = fpn(feats)
    assert [tuple(o.shape) for o in outs] == [(1, 48, 16, 16), (1, 48, 8, 8), (1, 48, 4, 4), (1, 48, 2, 2),
                                              (1, 48, 1, 1)]  # strides 8 .. 128
    with torch.no_grad():
        # P6 from the P5 output (not the backbone feature), P7 from ReLU(P6)
        assert torch.allclose(outs[3], fpn.fpn_convs[3](outs[2]))
        assert torch.allclose(outs[4], fpn.fpn_convs[4](torch.relu(outs[3])))
        # top-down path: P4 = conv3x3(lateral(C4) + up(lateral(C5)))
        lat = fpn.lateral_convs[1](feats[1]) + torch.nn.functional.interpolate(fpn.lateral_convs[2](feats[2]),
                                                                                size=(8, 8))
        assert torch.allclose(outs[1], fpn.fpn_convs[1](lat), atol=1e-6)
    assert fpn.fpn_convs[3].conv.in_channels == 48 and fpn.fpn_convs[3].conv.stride == (2, 2)


def test_rssh_fpn_levels_and_context_modules():
    torch.manual_seed(0)
    neck = RSSH_FPN([16, 32, 64, 128], 32, num_outs=5, add_extra_convs=True, extra_convs_on_inputs=False,
                    relu_before_extra_convs=True).eval()
    feats = [torch.randn(1, c, 32 // 2 ** i, 32 // 2 ** i) for i, c in enumerate([16, 32, 64, 128])]
    outs = neck(feats)
    assert [tuple(o.shape) for o in outs] == [(1, 32, 32, 32), (1, 32, 16, 16), (1, 32, 8, 8), (1, 32, 4, 4),
                                              (1, 32, 2, 2)]  # strides 4 .. 64 on a ResNet's stages 1-4
    assert len(neck.context_modules) == 5
    ctx = neck.context_modules[0]
    assert [ctx.conv1.conv.out_channels, ctx.conv2.conv.out_channels, ctx.conv3.conv.out_channels] == [16, 8, 8]
    with torch.no_grad():
        plain = FPN.forward(neck, feats)
        x1 = ctx.conv1(plain[0])
        x2 = ctx.conv2(x1)
        assert torch.allclose(outs[0], torch.cat([x1, x2, ctx.conv3(x2)], 1))


# -- anchors and ATSS assignment -----------------------------------------------------------------------
def test_anchor_generator_0206():
    gen = AnchorGenerator(strides=[4, 8, 16, 32, 64], ratios=[1.0], octave_base_scale=8, scales_per_octave=1)
    assert gen.num_base_anchors == [1] * 5
    anchors = gen.grid_anchors([(2, 3), (1, 1), (1, 1), (1, 1), (1, 1)])
    assert anchors.shape == (10, 4)
    # side 8 * stride, centred on the cell corner (mmdetection's center_offset 0), row by row
    assert anchors[0].tolist() == [-16, -16, 16, 16]
    assert anchors[1].tolist() == [-12, -16, 20, 16]
    assert anchors[3].tolist() == [-16, -12, 16, 20]
    assert anchors[6].tolist() == [-32, -32, 32, 32]
    assert anchors[-1].tolist() == [-256, -256, 256, 256]
    two = AnchorGenerator(strides=[8], ratios=[0.5, 1.0], scales=[1.0])
    wh = two.base_anchors(0)[:, 2:] - two.base_anchors(0)[:, :2]
    assert torch.allclose(wh, torch.tensor([[8 * math.sqrt(2), 8 / math.sqrt(2)], [8.0, 8.0]]))


def _grid_anchors(size, stride, side):
    c = torch.arange(size, dtype=torch.float32) * stride
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    ctr = torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)
    return torch.cat([ctr - side / 2, ctr + side / 2], -1)


def test_atss_assigner_hand_made():
    # anchors 16x16 centred at multiples of 8 on a 6x6 grid
    anchors = _grid_anchors(6, 8, 16)
    gt = torch.tensor([[6.0, 6.0, 22.0, 20.0]])  # centre (14, 13)
    # the 3 closest centres: (16,16) d=3.6, (16,8) d=5.4, (8,16) d=6.7; IoU 0.538, 0.412, 0.333;
    # threshold mean + std = 0.428 + 0.103 = 0.531: only (16,16) (index 2 * 6 + 2 = 14) passes
    assigned = ATSSAssigner(topk=3).assign(anchors, [36], gt)
    expected = torch.zeros(36, dtype=torch.long)
    expected[14] = 1
    assert torch.equal(assigned, expected)
    # no ground truth: all background
    assert torch.equal(ATSSAssigner(topk=3).assign(anchors, [36], torch.zeros(0, 4)), torch.zeros(36, dtype=torch.long))
    # a box between anchor centres: candidates exist but no centre lies inside it -> no positive
    assert ATSSAssigner(topk=3).assign(anchors, [36], torch.tensor([[9.0, 9.0, 15.0, 15.0]])).sum() == 0


def test_atss_assigner_levels_and_conflicts():
    # two levels: 6x6 anchors of side 16 (stride 8), then 3x3 of side 32 (stride 16); topk counts per level
    anchors = torch.cat([_grid_anchors(6, 8, 16), _grid_anchors(3, 16, 32)])
    gts = torch.tensor([[21.0, 5.0, 34.0, 23.0], [16.0, 8.0, 27.0, 35.0]])
    assigner = ATSSAssigner(topk=3)
    alone = [set((assigner.assign(anchors, [36, 9], gts[g:g + 1]) > 0).nonzero().flatten().tolist())
             for g in range(2)]
    assert alone == [{15}, {15, 21}]
    # anchor 15 (box 16,8,32,24) is positive for both: IoU 0.508 with the first, 0.467 with the second
    assigned = assigner.assign(anchors, [36, 9], gts)
    expected = torch.zeros(45, dtype=torch.long)
    expected[15], expected[21] = 1, 2
    assert torch.equal(assigned, expected)
    # the same steps written plainly, one ground truth at a time
    from torchvision.ops import box_iou
    iou = box_iou(anchors, gts)
    ctr = (anchors[:, :2] + anchors[:, 2:]) / 2
    best = torch.full((45,), -1.0)
    reference = torch.zeros(45, dtype=torch.long)
    for g in range(2):
        dist = (ctr - (gts[g, :2] + gts[g, 2:]) / 2).norm(dim=1)
        cand = torch.cat([dist[:36].topk(3, largest=False).indices, dist[36:].topk(3, largest=False).indices + 36])
        thr = iou[cand, g].mean() + iou[cand, g].std()
        for a in cand.tolist():
            inside = min(ctr[a, 0] - gts[g, 0], ctr[a, 1] - gts[g, 1], gts[g, 2] - ctr[a, 0],
                         gts[g, 3] - ctr[a, 1]) > 0.01
            if iou[a, g] >= thr and inside and iou[a, g] > best[a]:
                best[a], reference[a] = iou[a, g], g + 1
    assert torch.equal(assigned, reference)


# -- FCOS targets ----------------------------------------------------------------------------------------
def test_fcos_targets_by_regression_range_and_area():
    head = FCOSHead(num_classes=2, in_channels=8, feat_channels=8, stacked_convs=1, strides=(8, 16),
                    regress_ranges=((-1, 16), (16, INF)), norm_cfg=None)
    points = head.points([(4, 4), (2, 2)], "cpu")  # a 32x32 input
    assert points[0][:2].tolist() == [[4, 4], [12, 4]] and points[1][0].tolist() == [8, 8]
    big = torch.tensor([[0.0, 0.0, 24.0, 24.0]])
    labels, targets = head.get_targets(points, [big], [torch.tensor([0])])
    labels, targets = labels[0], targets[0]
    # stride 8: only (12, 12) has its largest side distance (12) within (-1, 16]; stride 16: (8, 8) has 16 (ends
    # inclusive) within [16, INF); every other location is outside the box or out of range
    pos = (labels < 2).nonzero().flatten().tolist()
    assert pos == [5, 16]
    assert targets[5].tolist() == [12, 12, 12, 12] and targets[16].tolist() == [8, 8, 16, 16]
    ctr = FCOSHead.centerness_target(targets[[5, 16]])
    assert torch.allclose(ctr, torch.tensor([1.0, 0.5]))
    # two boxes contain (12, 12) in range: the smaller one wins
    small = torch.tensor([[8.0, 8.0, 16.0, 16.0]])
    labels2, targets2 = head.get_targets(points, [torch.cat([big, small])], [torch.tensor([0, 1])])
    assert labels2[0, 5] == 1 and targets2[0, 5].tolist() == [4, 4, 4, 4]
    assert labels2[0, 16] == 0
    # center sampling narrows the positives to the centre region (radius 1.5 * stride)
    head.center_sampling = True
    labels3, _ = head.get_targets(points, [torch.tensor([[0.0, 0.0, 120.0, 120.0]])], [torch.tensor([0])])
    assert labels3.shape == (1, 20)


# -- losses and gradients ----------------------------------------------------------------------------------
def _gt_batch():
    return ([torch.tensor([[20.0, 24.0, 60.0, 70.0], [70.0, 30.0, 110.0, 90.0]]), torch.zeros(0, 4)],
            [torch.tensor([0, 0]), torch.zeros(0, dtype=torch.long)])


@pytest.mark.parametrize("which", ["fcos", "atss"])
def test_loss_with_and_without_faces(which, request):
    task, det = request.getfixturevalue(which)
    det.train()
    head = det.bbox_head
    cls_conv = head.conv_cls if which == "fcos" else head.atss_cls
    img = torch.randn(2, 3, 128, 128)
    gt_boxes, gt_labels = _gt_batch()
    # a batch with faces in one image and none in the other; then one image without faces
    for boxes, labels in [(gt_boxes, gt_labels), ([torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)])]:
        det.zero_grad()
        losses = det(img[:len(boxes)], boxes, labels)
        assert set(losses) == {"loss_cls", "loss_bbox", "loss_centerness"}
        for k, v in losses.items():
            assert v.dim() == 0 and torch.isfinite(v), (k, v)
        if boxes[0].numel():
            assert losses["loss_bbox"] > 0 and losses["loss_centerness"] > 0
        else:
            assert losses["loss_bbox"] == 0 and losses["loss_centerness"] == 0
        sum(losses.values()).backward()
        assert cls_conv.weight.grad is not None and cls_conv.weight.grad.abs().sum() > 0
        assert all(torch.isfinite(p.grad).all() for p in det.parameters() if p.grad is not None)


@pytest.mark.parametrize("which", ["fcos", "atss"])
def test_decode_shapes_and_predict(which, request):
    task, det = request.getfixturevalue(which)
    det.eval()
    img = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        outs = det(img)
        boxes, scores = det.bbox_head.decode(outs, (128, 96))
    num = sum(h * w for h, w in det.bbox_head.featmap_sizes(outs))
    assert boxes.shape == (2, num, 4) and scores.shape == (2, num, 1)
    assert boxes[..., 0::2].min() >= 0 and boxes[..., 0::2].max() <= 96
    assert boxes[..., 1::2].min() >= 0 and boxes[..., 1::2].max() <= 128
    assert scores.min() >= 0 and scores.max() <= 1
    # initial score: focal prior 0.01 times sigmoid(centerness ~ 0)
    assert abs(float(scores.mean()) - 0.005) < 0.002
    det.bbox_head.test_cfg["score_thr"] = 0.0
    try:
        dets = det.predict(img)
    finally:
        det.bbox_head.test_cfg["score_thr"] = task.cfg.model.test_cfg.score_thr
    assert len(dets) == 2 and dets[0].boxes.shape[1] == 4
    assert 0 < len(dets[0].scores) == len(dets[0].labels) <= det.bbox_head.test_cfg["max_per_img"]


class _Decoded(torch.nn.Module):
    def __init__(self, detector, hw):
        super().__init__()
        self.detector, self.hw = detector, hw

    def forward(self, img):
        return self.detector.bbox_head.decode(self.detector(img), self.hw)


@pytest.mark.slow
def test_fcos_decode_exports(fcos):
    _, det = fcos
    det.eval()
    module = _Decoded(det, (128, 128)).eval()
    img = torch.randn(1, 3, 128, 128)
    program = torch.export.export(module, (img,), strict=False)
    with torch.no_grad():
        want = module(img)
        got = program.module()(img)
    assert torch.allclose(want[0], got[0], atol=1e-4) and torch.allclose(want[1], got[1], atol=1e-6)


@pytest.mark.parametrize("name", ["face-detection-0205", "face-detection-0200"])
def test_decode_traces_alike_twice_from_an_empty_cache(name):
    """TorchScript tracing (the export path of NNCF-compressed models) runs the model twice and compares the
    graphs: the first run must not fill the head's point / anchor cache that the second then reads (a QAT
    0205 checkpoint failed to export with "Graphs differed across invocations")."""
    task, det = _detector(name)
    module = _Decoded(det.eval(), (64, 64)).eval()
    with torch.no_grad(), warnings.catch_warnings():  # as the export: tracer and deprecation warnings are expected
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, torch.zeros(1, 3, 64, 64), check_trace=True)
        img = torch.rand(1, 3, 64, 64)
        assert torch.allclose(traced(img)[0], module(img)[0], atol=1e-4)


@pytest.mark.slow
def test_atss_head_decode_exports():
    torch.manual_seed(0)
    head = ATSSHead(num_classes=1, in_channels=32, feat_channels=32, stacked_convs=1,
                    anchor_generator=dict(type="AnchorGenerator", ratios=[1.0], octave_base_scale=8,
                                          scales_per_octave=1, strides=[4, 8]),
                    bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_stds=[0.1, 0.1, 0.2, 0.2])).eval()

    class HeadDecode(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = head

        def forward(self, a, b):
            return self.head.decode(self.head([a, b]), (64, 64))

    feats = (torch.randn(1, 32, 16, 16), torch.randn(1, 32, 8, 8))
    program = torch.export.export(HeadDecode(), feats, strict=False)
    with torch.no_grad():
        want = HeadDecode()(*feats)
        got = program.module()(*feats)
    assert got[0].shape == (1, 320, 4) and torch.allclose(want[0], got[0], atol=1e-4)


# -- learning on real images -----------------------------------------------------------------------------
def _airport_crops(task, size=160, crop=(980, 80, 1380, 480), n=3):
    """Crops of real airport frames around the faces in the middle, resized to ``size``, normalised as the
    template says; boxes clipped to the crop."""
    need_shared("data", "airport")
    with open(AIRPORT_ANN, encoding="utf-8") as f:
        data = json.load(f)
    x0, y0, x1, y1 = crop
    scale = size / (x1 - x0)
    norm = task.img_norm_cfg
    imgs, boxes = [], []
    for info in data["images"][:n]:
        bgr = cv2.imread(os.path.join(AIRPORT_ROOT, info["file_name"]))[y0:y1, x0:x1]
        rgb = cv2.resize(bgr, (size, size))[..., ::-1].astype(np.float32)
        rgb = (rgb - np.array(norm["mean"], np.float32)) / np.array(norm["std"], np.float32)
        imgs.append(torch.from_numpy(rgb.copy()).permute(2, 0, 1))
        b = torch.tensor([a["bbox"] for a in data["annotations"] if a["image_id"] == info["id"]], dtype=torch.float32)
        b = torch.cat([b[:, :2], b[:, :2] + b[:, 2:]], 1) - torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
        b = b.clamp(min=0, max=x1 - x0)
        b = b[(b[:, 2] - b[:, 0] > 4) & (b[:, 3] - b[:, 1] > 4)] * scale
        boxes.append(b)
    return torch.stack(imgs), boxes


def test_fcos_learns_on_airport_crops():
    task, det = _detector("face-detection-0205")
    imgs, boxes = _airport_crops(task)
    assert sum(len(b) for b in boxes) >= 5
    labels = [torch.zeros(len(b), dtype=torch.long) for b in boxes]
    det.train()
    opt = torch.optim.SGD(det.parameters(), lr=0.01, momentum=0.9)
    history = []
    for it in range(12):
        idx = [it % 3, (it + 1) % 3]  # batch 2
        losses = det(imgs[idx], [boxes[i] for i in idx], [labels[i] for i in idx])
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    assert all(math.isfinite(v) for v in history)
    print("FCOS loss per iteration:", [round(v, 3) for v in history])
    assert np.mean(history[-3:]) < 0.8 * np.mean(history[:3]), history


# -- backbone ---------------------------------------------------------------------------------------------
def test_resnet152b_stages_and_quiet_offline_imagenet_weights(capfd, caplog):
    from ote_detection.models.backbones.pytorchcv_backbone import PytorchcvBackbone, _cached_weights, _reachable
    backbone = PytorchcvBackbone("resnet152b", out_indices=(1, 2, 3, 4)).eval()
    with torch.no_grad():
        feats = backbone(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in feats] == [(256, 16, 16), (512, 8, 8), (1024, 4, 4), (2048, 2, 2)]
    # the 'b' variant: stride 2 in the 3x3 conv of a bottleneck
    unit = backbone.features.stage2.unit1.body
    assert unit.conv1.conv.stride == (1, 1) and unit.conv2.conv.stride == (2, 2)
    if _cached_weights("mobilenetv2_w1") is not None or _reachable("github.com"):
        pytest.skip("the ImageNet weights are cached or can be downloaded here: nothing offline to check")
    small = PytorchcvBackbone("mobilenetv2_w1", out_indices=(3, 4, 5))
    capfd.readouterr()
    with caplog.at_level("INFO"):
        assert small.load_imagenet_weights() is False
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert len(caplog.records) == 1 and "cannot be reached" in caplog.records[0].getMessage()
