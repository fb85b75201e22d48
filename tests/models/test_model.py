"""SSD building blocks on crafted cases, and that the loss goes down when fitting real images."""

import numpy as np
import pytest
import torch

from conftest import AIRPORT_ANN, AIRPORT_ROOT, need_shared, template_path
from ote_detection.apis.task import Task
from ote_detection.apis.train import build_train_dataset
from ote_detection.data.coco import collate_train
from ote_detection.models.anchors import SSDAnchorGeneratorClustered
from ote_detection.models.assigners import MaxIoUAssigner
from ote_detection.models.box_coder import DeltaXYWHBBoxCoder


def test_anchor_order_is_cell_major_with_centres_at_half_stride():
    gen = SSDAnchorGeneratorClustered(strides=(16, 32), widths=([8, 20], [100]), heights=([10, 30], [120]))
    anchors = gen.grid_anchors([(2, 3), (1, 2)])
    assert anchors.shape == (2 * 3 * 2 + 1 * 2 * 1, 4)
    # first cell, both anchors; then the next cell to the right
    np.testing.assert_allclose(anchors[0].numpy(), [8 - 4, 8 - 5, 8 + 4, 8 + 5])
    np.testing.assert_allclose(anchors[1].numpy(), [8 - 10, 8 - 15, 8 + 10, 8 + 15])
    np.testing.assert_allclose(anchors[2].numpy(), [24 - 4, 8 - 5, 24 + 4, 8 + 5])
    np.testing.assert_allclose(anchors[6].numpy(), [8 - 4, 24 - 5, 8 + 4, 24 + 5])  # second row
    np.testing.assert_allclose(anchors[-1].numpy(), [48 - 50, 16 - 60, 48 + 50, 16 + 60])


def test_coder_round_trip_and_clipping():
    coder = DeltaXYWHBBoxCoder(target_stds=(0.1, 0.1, 0.2, 0.2))
    anchors = torch.tensor([[10.0, 10, 50, 70], [0, 0, 20, 20]])
    boxes = torch.tensor([[12.0, 8, 60, 66], [2, 3, 15, 25]])
    deltas = coder.encode(anchors, boxes)
    np.testing.assert_allclose(coder.decode(anchors, deltas).numpy(), boxes.numpy(), rtol=1e-5)
    clipped = coder.decode(anchors, deltas, max_shape=(20, 40))
    assert clipped[:, 3].max() <= 20 and clipped[:, 2].max() <= 40


def test_max_iou_assigner_semantics():
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 9, 10], [50, 50, 60, 60], [100, 100, 110, 110]])
    gt = torch.tensor([[0.0, 0, 10, 10], [80, 80, 200, 200]])
    a = MaxIoUAssigner(pos_iou_thr=0.4, neg_iou_thr=0.4, min_pos_iou=0.0, gt_max_assign_all=False).assign(anchors, gt)
    # anchors 0, 1 overlap gt 0 well; anchor 2 overlaps nothing -> negative; gt 1's best anchor (3) is forced positive
    assert a.tolist() == [1, 1, 0, 2]
    assert MaxIoUAssigner(0.4, 0.4).assign(anchors, torch.zeros(0, 4)).tolist() == [0, 0, 0, 0]


@pytest.mark.usefixtures("one_torch_thread")
def test_frame_predictor_maps_boxes_to_each_frame():
    """Frames of any size in, boxes in each frame's pixels out (stretched and keep-ratio resizing)."""
    from ote_detection.inference.predictor import TorchPredictor, letterbox
    task = Task(template_path())
    model = task.build_inference_model().eval()
    frames = [np.random.default_rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8)
              for i, (h, w) in enumerate([(120, 500), (600, 300)])]
    for keep_ratio in (False, True):
        pred = TorchPredictor(model, (256, 192), keep_ratio=keep_ratio, batch_size=2)
        dets = pred.predict_frames(frames)
        assert len(dets) == 2
        for det, frame in zip(dets, frames):
            h, w = frame.shape[:2]
            assert det.shape[1] == 6 and det.dtype == np.float32 and len(det) <= task.cfg.model.test_cfg.max_per_img
            assert det[:, [0, 2]].max() <= w + 1e-3 and det[:, [1, 3]].max() <= h + 1e-3
            assert (np.diff(det[:, 4]) <= 0).all()
    # keep-ratio: one scale factor, padding at the right/bottom; a box maps back by that factor
    img, scale = letterbox(frames[0], (256, 192), keep_ratio=True)
    assert img.shape == (192, 256, 3) and scale[0] == 256 / 500 and scale[1] == round(120 * 256 / 500) / 120
    assert img[round(120 * scale[1]):].max() == 0 and img[:round(120 * scale[1])].max() > 0  # padding below


@pytest.mark.slow
def test_loss_falls_when_fitting_real_images():
    need_shared("data", "airport")
    torch.manual_seed(0)
    task = Task(template_path())
    task.set_input_size((160, 160))
    # no random augmentation: the same batch each step, so the loss must go down
    task.cfg.data.train.dataset.pipeline = [t for t in task.cfg.train_pipeline
                                            if t["type"] not in ("PhotoMetricDistortion", "MinIoURandomCrop", "RandomFlip")]
    dataset = build_train_dataset(task.cfg, AIRPORT_ANN, AIRPORT_ROOT, task.classes)
    imgs, boxes, labels = collate_train([dataset[i] for i in range(4)])
    detector = task.build_detector().train()
    opt = torch.optim.SGD(detector.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(15):
        loss = sum(detector(imgs, boxes, labels).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:3]), losses
