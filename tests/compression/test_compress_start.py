"""What compress.py (QAT) does before NNCF quantizes: its range-initialisation and BatchNorm-adaptation
images are shown to the network as the run's frames are (letterboxed when the run is, ``--input-size Wx``;
stretched otherwise), the --load-weights snapshot is read once, and without --input-size the run keeps the
snapshot's geometry (size and letterboxing) and records it in its checkpoints.

Runs the real compress.py path (``apis.compress.compress`` -> ``apis.train.train`` -> the compression plugin)
on two real 1920x1080 airport frames up to the call of NNCF's quantization, which is wrapped to keep the
images it is given and stop there (the quantization itself is covered by the slow tests of
test_compression.py); the geometry test runs sparsity fine-tuning (one iteration) to its checkpoint.
"""

import json
import os

import pytest
import torch

from conftest import REPO, copy_airport_subset, template_path

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Stop(Exception):
    pass


def _until_quantization(tmp_path, monkeypatch, **geometry):
    """What compress.py QAT of a snapshot gives NNCF's quantization: {"init": range-init images, "bn":
    BN-adaptation batches, "norm": the task's img_norm_cfg, "reads": how often the snapshot file was
    unpickled (``torch.load``, wrapped: the real one runs)}."""
    from ote_detection.apis.compress import compress
    from ote_detection.apis.task import Task
    from ote_detection.artefacts.checkpoint import save_checkpoint
    from ote_detection.compression import plugin as plugin_module

    root = str(tmp_path / "data")
    ann, _ = copy_airport_subset(root, n=2)
    task = Task(template_path())
    weights = str(tmp_path / "snapshot.pth")  # any train.py snapshot of the template: quantization stops first
    save_checkpoint(weights, task.build_detector(), meta=task.checkpoint_meta().to_dict())
    with open(os.path.join(REPO, "model_templates", "face-detection", "face-detection-0200",
                           "compression_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    initializer = config["nncf_quantization"]["nncf_config"]["compression"][0]["initializer"]
    initializer["batchnorm_adaptation"]["num_bn_adaptation_samples"] = 2  # the template's is 0
    config_path = tmp_path / "compression_config.json"
    config_path.write_text(json.dumps(config))
    seen = {"reads": 0, "norm": task.img_norm_cfg}
    real_load = torch.load

    def counting_load(f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)) and os.fspath(f) == weights:
            seen["reads"] += 1
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)

    def keep_and_stop(model, init_images, bn_batches=(), device="cpu", preset=None):
        seen["init"], seen["bn"] = init_images, list(bn_batches)
        raise _Stop

    monkeypatch.setattr(plugin_module, "quantize_model", keep_and_stop)
    with pytest.raises(_Stop):
        compress(template_path(), ann, root, str(tmp_path / "out"), nncf_quantization=True, load_weights=weights,
                 compression_config=str(config_path), batch_size=2, workers=0, epochs=1, progress=False, **geometry)
    return seen


def _normalised_black(img_norm_cfg):
    """[3] the value a zero (padding) pixel has after the model's normalisation."""
    from ote_detection.models.inference import InferenceModel
    return InferenceModel(torch.nn.Identity(), img_norm_cfg).normalize(torch.zeros(1, 3, 1, 1)).flatten()


def test_letterboxed_run_calibrates_on_letterboxed_frames(tmp_path, monkeypatch):
    # 384x at 4:3: 384x288, letterboxed; a 1920x1080 frame fills 384x216 and the 72 rows below are padding
    seen = _until_quantization(tmp_path, monkeypatch, input_size=(384, None), aspect="4:3")
    init, bn, norm_cfg = seen["init"], seen["bn"], seen["norm"]
    assert len(init) == 2 and all(tuple(img.shape) == (1, 3, 288, 384) for img in init)
    assert bn and all(tuple(b.shape[1:]) == (3, 288, 384) for b in bn)
    black = _normalised_black(norm_cfg)[:, None, None]
    for img in init + bn:
        assert torch.equal(img[:, :, 216:, :], black.expand(img.shape[0], 3, 72, 384))
        assert img[:, :, 206:216, :].std() > 0.02  # the frame's last rows: picture, not padding


def test_stretched_run_calibrates_on_stretched_frames(tmp_path, monkeypatch):
    seen = _until_quantization(tmp_path, monkeypatch, input_size=(384, 288))
    init, bn, norm_cfg = seen["init"], seen["bn"], seen["norm"]
    assert len(init) == 2 and all(tuple(img.shape) == (1, 3, 288, 384) for img in init)
    black = _normalised_black(norm_cfg)[:, None, None]
    for img in init + bn:
        bottom = img[:, :, 216:, :]
        assert (bottom == black).all(dim=1).float().mean() < 0.01  # picture, not padding
        assert bottom.std() > 0.02


def test_load_weights_is_read_once(tmp_path, monkeypatch):
    # compress() checks it, train() checks its meta, the training process loads its weights: one read
    assert _until_quantization(tmp_path, monkeypatch, input_size=(384, 288))["reads"] == 1


def _letterboxed_snapshot(tmp_path):
    """(data folder, its annotation file, a snapshot path): the template's model saved with the meta train.py
    --input-size 128x writes on the 1920x1080 airport frames (128x96 letterboxed, ``Task.resolve_geometry``)."""
    from ote_detection.apis.task import Task
    from ote_detection.artefacts.checkpoint import save_checkpoint
    root = str(tmp_path / "data")
    ann, _ = copy_airport_subset(root, n=2)
    task = Task(template_path())
    assert task.resolve_geometry((128, None), frame_hw=(1080, 1920)) == ((128, 96), True)
    weights = str(tmp_path / "snapshot.pth")
    save_checkpoint(weights, task.build_detector(), meta=task.checkpoint_meta().to_dict())
    return root, ann, weights


def test_compression_keeps_the_snapshots_geometry_unless_given_one(tmp_path, caplog):
    """compress.py --load-weights of a letterboxed 128x96 snapshot, without --input-size, fine-tunes (sparsity,
    one iteration on two real airport frames) at 128x96 letterboxed and says so; its checkpoint records that
    geometry (export.py / eval.py need no flag); --input-size 160x128 wins (stretched) and warns.
    compress_without_training decides the same way; train.py --load-weights keeps the template's geometry."""
    from ote_detection.apis.compress import compress, compress_without_training
    from ote_detection.apis.task import Task
    from ote_detection.apis.train import train
    from ote_detection.artefacts.checkpoint import load_checkpoint_file
    from ote_detection.inference.factory import make_predictor
    root, ann, weights = _letterboxed_snapshot(tmp_path)
    common = dict(nncf_sparsity=True, load_weights=weights, batch_size=2, workers=0, epochs=1, progress=False,
                  gpu_num=0)

    def meta(path):
        m = load_checkpoint_file(path)["meta"]
        return m["input_size"], m["keep_ratio"], m["compression"]["parts"]

    caplog.set_level("INFO", logger="ote_detection")
    compress(template_path(), ann, root, str(tmp_path / "kept"), **common)
    assert meta(str(tmp_path / "kept" / "latest.pth")) == ([128, 96], True, ["nncf_sparsity"])
    said = [r.getMessage() for r in caplog.records if "compressing at its input size" in r.getMessage()]
    assert said == [f"{weights}: compressing at its input size 128x96 letterboxed (the template's is 256x256 "
                    "stretched)"], said
    assert not [r for r in caplog.records if "was trained at" in r.getMessage()]
    # eval.py's (and the demo's) reader of it, given no flag: that geometry
    predictor = make_predictor(Task(template_path()), str(tmp_path / "kept" / "latest.pth"))
    assert (tuple(predictor.input_size), predictor.keep_ratio) == ((128, 96), True)

    caplog.clear()
    compress(template_path(), ann, root, str(tmp_path / "given"), input_size=(160, 128), **common)
    assert meta(str(tmp_path / "given" / "latest.pth")) == ([160, 128], False, ["nncf_sparsity"])
    warned = [r.getMessage() for r in caplog.records if "was trained at" in r.getMessage()]
    assert len(warned) == 1 and "128x96 letterboxed; compression runs at --input-size 160x128 stretched" in \
        warned[0], warned

    compress_without_training(template_path(), weights, str(tmp_path / "once.pth"), nncf_sparsity=True)
    assert meta(str(tmp_path / "once.pth")) == ([128, 96], True, ["nncf_sparsity"])
    # train.py --load-weights: the snapshot only starts the weights; the geometry stays the template's
    train(template_path(), ann, root, str(tmp_path / "trained"), **{k: v for k, v in common.items()
                                                                   if k != "nncf_sparsity"})
    m = load_checkpoint_file(str(tmp_path / "trained" / "latest.pth"))["meta"]
    assert (m["input_size"], m["keep_ratio"]) == ([256, 256], False)
