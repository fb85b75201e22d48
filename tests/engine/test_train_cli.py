"""train.py / eval.py as a user runs them: checkpoints, resume semantics, metrics.yaml, DDP with gloo."""

import os

import pytest
import torch
import yaml

from conftest import run_here, run_tool, template_path
from ote_detection.artefacts.checkpoint import load_checkpoint_file

COMMON = ["--batch-size", "4", "--input-size", "96", "--workers", "0"]


def _train(work, ann, root, out, *extra, run=run_tool):
    r = run([os.path.join(work, "train.py"), "--train-ann-files", ann, "--train-data-roots", root,
             "--save-checkpoints-to", str(out), *COMMON, *extra])
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.slow
def test_train_resume_load_and_eval(work_dir_0200, synthetic_data, tmp_path):
    ann, root = synthetic_data
    out = tmp_path / "out"
    r = _train(work_dir_0200, ann, root, out, "--epochs", "2", "--val-ann-files", ann, "--val-data-roots", root,
               "--tensorboard-dir", str(tmp_path / "tb"))
    assert "training face-detection-0200: 2 epochs, batch 4" in r.stderr, r.stderr[-3000:]
    assert sorted(os.listdir(out)) == ["epoch_1.pth", "epoch_2.pth", "latest.pth"]  # no temp files left
    meta = load_checkpoint_file(str(out / "latest.pth"))["meta"]
    assert meta["epoch"] == 2 and meta["template"] == "face-detection-0200" and meta["input_size"] == [96, 96]
    assert "ap" in meta["metrics"] and 0.0 <= meta["metrics"]["ap"] <= 100.0
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tb"))

    # --resume-from with --epochs not above the stored epoch: ends at once, nothing written
    before = os.path.getmtime(out / "latest.pth")
    r = _train(work_dir_0200, ann, root, out, "--epochs", "2", "--resume-from", str(out / "latest.pth"), run=run_here)
    assert "nothing to train" in r.stderr
    assert os.path.getmtime(out / "latest.pth") == before
    # one more epoch continues the count and the optimizer state
    r = run_here([os.path.join(work_dir_0200, "train.py"), "--train-ann-files", ann, "--train-data-roots", root,
                  "--save-checkpoints-to", str(out), "--batch-size", "4", "--workers", "0", "--epochs", "3",
                  "--resume-from", str(out / "latest.pth")])  # no --input-size: the checkpoint's is kept
    assert r.returncode == 0, r.stderr[-3000:]
    assert "face-detection-0200: epochs 3-3 of 3 (resumed after epoch 2)" in r.stderr, r.stderr[-3000:]
    meta = load_checkpoint_file(str(out / "latest.pth"))["meta"]
    assert meta["epoch"] == 3 and meta["input_size"] == [96, 96]
    # --load-weights starts a fresh schedule
    out2 = tmp_path / "fresh"
    r = _train(work_dir_0200, ann, root, out2, "--epochs", "1", "--load-weights", str(out / "latest.pth"),
               run=run_here)
    assert "face-detection-0200: 1 epoch, batch 4" in r.stderr, r.stderr[-3000:]
    assert load_checkpoint_file(str(out2 / "latest.pth"))["meta"]["epoch"] == 1

    metrics_path = tmp_path / "metrics.yaml"
    r = run_tool([os.path.join(work_dir_0200, "eval.py"), "--load-weights", str(out / "latest.pth"),
                  "--test-ann-files", ann, "--test-data-roots", root, "--save-metrics-to", str(metrics_path),
                  "--cache-dir", str(tmp_path / "cache")])
    assert r.returncode == 0, r.stderr[-3000:]
    entries = {e["key"]: e for e in yaml.safe_load(metrics_path.read_text())["metrics"]}
    assert entries["ap"]["display_name"] == "AP @ [IoU=0.50:0.95]" and entries["ap"]["unit"] == "%"
    assert entries["size"]["value"] == 1.83 and entries["complexity"]["unit"] == "GFLOPs"
    assert os.listdir(tmp_path / "cache")  # detections cached
    # a second run reads the cache and gives the same numbers
    r2 = run_here([os.path.join(work_dir_0200, "eval.py"), "--load-weights", str(out / "latest.pth"),
                   "--test-ann-files", ann, "--test-data-roots", root, "--cache-dir", str(tmp_path / "cache")])
    assert r2.returncode == 0 and "from the cache" in r2.stderr


@pytest.mark.slow
def test_snapshot_of_another_template_is_refused(work_dir_0200, synthetic_data, tmp_path):
    from ote_detection.apis.task import Task
    from ote_detection.artefacts.checkpoint import save_checkpoint
    task = Task(template_path("face-detection-0207"))
    ckpt = tmp_path / "other.pth"
    save_checkpoint(str(ckpt), task.build_detector(), meta=task.checkpoint_meta())
    ann, root = synthetic_data
    r = run_here([os.path.join(work_dir_0200, "eval.py"), "--load-weights", str(ckpt), "--test-ann-files", ann,
                  "--test-data-roots", root, "--cache-dir", ""])
    assert r.returncode == 2 and "not of 'face-detection-0200'" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_ddp_two_processes_gloo(work_dir_0200, synthetic_data, tmp_path):
    """A real two-process DistributedDataParallel run on the CPU (gloo); both ranks step the same weights."""
    ann, root = synthetic_data
    out = tmp_path / "ddp"
    r = _train(work_dir_0200, ann, root, out, "--epochs", "1", "--gpu-num", "2")
    assert "2 process(es) on CPU (gloo)" in r.stderr
    assert "Grad strides do not match" not in r.stderr, r.stderr[-3000:]  # engine.distributed.wrap_ddp
    state = load_checkpoint_file(str(out / "latest.pth"))["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_load_backbone_takes_the_backbone_of_another_template(tmp_path, synthetic_data):
    """--load-backbone: 0205 (FCOS) starts its mobilenetv2_w1 from a 0200 (SSD) snapshot, its neck and head from
    their initialisation; a snapshot with another backbone (0207) and a clash with --load-weights are one line."""
    from ote_detection.apis.task import Task
    from ote_detection.apis.train import train
    from ote_detection.artefacts.checkpoint import load_backbone_weights, save_checkpoint
    from ote_detection.utils.errors import OteError
    torch.manual_seed(0)
    donor_task = Task(template_path("face-detection-0200"))
    donor = donor_task.build_detector()
    snap = tmp_path / "donor.pth"
    save_checkpoint(str(snap), donor, meta=donor_task.checkpoint_meta())
    model = Task(template_path("face-detection-0205")).build_detector()
    head_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    count = load_backbone_weights(model, str(snap))
    own = model.state_dict()
    assert count == sum(k.startswith("backbone.") for k in own) > 300
    assert all(torch.equal(own[k], v) for k, v in donor.state_dict().items() if k.startswith("backbone."))
    assert all(torch.equal(own[k], v) for k, v in head_before.items())
    other_task = Task(template_path("face-detection-0207"))
    other = tmp_path / "other.pth"
    save_checkpoint(str(other), other_task.build_detector(), meta=other_task.checkpoint_meta())
    with pytest.raises(OteError, match=r"other\.pth \(template face-detection-0207\): .*backbone"):
        load_backbone_weights(model, str(other))
    ann, root = synthetic_data
    with pytest.raises(OteError, match="--load-backbone .* not with --resume-from or --load-weights"):
        train(template_path("face-detection-0205"), ann, root, str(tmp_path / "out"), load_backbone=str(snap),
              load_weights=str(snap))
