"""models/detectors.py: the SSD detector's forward, decode, predict and loss, as the head contract says."""

import pytest
import torch

from conftest import template_path
from ote_detection.apis.task import Task

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_head_contract_ssd(synthetic_data):
    task = Task(template_path())
    det = task.build_detector()
    img = torch.rand(2, 3, 96, 128)
    outs = det(img)
    boxes, scores = det.bbox_head.decode(outs, (96, 128))
    assert boxes.shape[:2] == scores.shape[:2] and boxes.shape[-1] == 4 and scores.shape[-1] == 1
    assert boxes[..., [0, 2]].max() <= 128 and boxes[..., [1, 3]].max() <= 96
    preds = det.predict(img)
    assert len(preds) == 2 and all(p.boxes.shape[1] == 4 and p.scores.shape == p.labels.shape == p.boxes.shape[:1]
                                   and p.to_rows().shape[1] == 6 for p in preds)
    losses = det(img, [torch.tensor([[10.0, 10, 40, 50]]), torch.zeros(0, 4)], [torch.tensor([0]), torch.zeros(0).long()])
    assert set(losses) == {"loss_cls", "loss_bbox"} and all(torch.isfinite(v) for v in losses.values())
