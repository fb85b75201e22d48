"""The one dataset reader (``formats.convert.load_dataset``, issue 25 item 4): every entry point that reads a dataset
(train, compress, evaluate, the input-size sweep, the anchor clustering) reads any format through it, and the
format conversion has one home (``formats/convert.py``). The VOC dataset is written by Datumaro, as in
test_formats.py: the airport frames, images 0-4 in subset train and 5-9 in subset val."""

import os
import re

import pytest

from conftest import AIRPORT_ANN, AIRPORT_ROOT, REPO, need_shared, template_path
from ote_detection.data.coco import load_coco_files
from ote_detection.formats.convert import DatasetFiles, export_with_datumaro, load_dataset
from ote_detection.utils.errors import OteError


@pytest.fixture(scope="module")
def voc_splits(tmp_path_factory):
    need_shared("data", "airport")
    coco = load_coco_files([AIRPORT_ANN], [AIRPORT_ROOT])
    images = [dict(img, subset="train" if n < 5 else "val") for n, img in enumerate(coco["images"])]
    return export_with_datumaro(dict(coco, images=images), str(tmp_path_factory.mktemp("voc") / "voc"),
                                "voc_detection")


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    """A (random) 0200 snapshot: compress and the size sweep read the weights before the data."""
    from ote_detection.apis.task import Task
    from ote_detection.artefacts.checkpoint import save_checkpoint
    task = Task(template_path())
    path = str(tmp_path_factory.mktemp("snap") / "snap.pth")
    save_checkpoint(path, task.build_detector(), meta=task.checkpoint_meta())
    return path


def test_load_dataset_reads_coco_and_a_datumaro_format_alike(voc_splits):
    coco_set = load_dataset(AIRPORT_ANN, AIRPORT_ROOT)
    assert isinstance(coco_set, DatasetFiles) and coco_set.ann_files == AIRPORT_ANN and coco_set.flags == "--train"
    train = load_dataset(voc_splits, None, "voc", role="train").load()
    val = load_dataset(voc_splits, None, "voc", role="val").load()
    assert {i["subset"] for i in train["images"]} == {"train"} and len(train["images"]) == 5
    assert {i["subset"] for i in val["images"]} == {"val"} and len(val["images"]) == 5
    assert len(train["annotations"]) + len(val["annotations"]) == len(coco_set.load()["annotations"]) == 41
    assert not load_dataset(None, None, "voc", role="val")  # no file given: nothing to read
    with pytest.raises(OteError, match="--val-data-roots is missing"):
        load_dataset(AIRPORT_ANN, None, role="val")
    assert load_dataset(AIRPORT_ANN, None, need_roots=False).data_roots is None  # sizes from the json alone


def _entry_points(voc, snap, out):
    """Each entry point given the VOC dataset with the subset 'nope' of its role."""
    from ote_detection.apis.choose_input_size import choose_input_size
    from ote_detection.apis.cluster_anchors import cluster_anchors
    from ote_detection.apis.compress import compress
    from ote_detection.apis.evaluate import evaluate
    from ote_detection.apis.train import train
    model_py = os.path.join(os.path.dirname(template_path()), "model.py")
    return {
        "--train-subset": [
            lambda: train(template_path(), voc, None, str(out / "t"), data_format="voc", train_subset="nope"),
            lambda: compress(template_path(), voc, None, str(out / "c"), load_weights=snap, data_format="voc",
                             nncf_quantization=True, train_subset="nope"),
            lambda: cluster_anchors(model_py, voc, data_format="voc", train_subset="nope")],
        "--val-subset": [
            lambda: compress(template_path(), voc, None, str(out / "p"), load_weights=snap, data_format="voc",
                             nncf_quantization=True, ptq=True, val_ann_files=voc, val_subset="nope"),
            lambda: choose_input_size(template_path(), snap, voc, None, "128x128", data_format="voc",
                                      val_subset="nope")],
        "--test-subset": [
            lambda: evaluate(template_path(), snap, voc, None, data_format="voc", test_subset="nope", cache_dir=None)],
    }


def test_every_entry_point_reads_the_format_through_load_dataset(voc_splits, snapshot, tmp_path):
    """train, compress (QAT and --ptq), evaluate, choose_input_size and the anchor clustering each reach the one
    reader with their dataset's role: a subset the dataset lacks is the reader's one line, naming the role's flag
    and the dataset's subsets."""
    calls = 0
    for flag, entries in _entry_points(voc_splits, snapshot, tmp_path).items():
        for call in entries:
            with pytest.raises(OteError, match=re.escape(f"no subset named 'nope' ({flag}); its subsets (images): "
                                                         "train 5, val 5")):
                call()
            calls += 1
    assert calls == 6


def test_cluster_anchors_reads_the_subset_of_its_role(voc_splits):
    """apis.cluster_anchors on the VOC dataset reads its train subset (the faces of images 0-4), as from the COCO
    json of those images."""
    from ote_detection.apis.cluster_anchors import cluster_anchors
    model_py = os.path.join(os.path.dirname(template_path()), "model.py")
    lines = []
    cluster_anchors(model_py, voc_splits, data_format="voc", train_subset="train", restarts=1, min_size=0,
                    force=True, report=lines.append)
    train_faces = len(load_dataset(voc_splits, None, "voc", "train").load()["annotations"])
    assert lines[0].startswith(f"{train_faces} faces (>= 0 px)") and 0 < train_faces < 41, lines


def test_one_place_converts_formats():
    """The Datumaro conversion is called in formats/convert.py alone (tools/convert_dataset.py included: it calls
    formats.convert.convert_dataset):
    no entry point converts by itself."""
    found = []
    for folder in ("ote_detection", "tools", "benchmarks"):
        for root, _, files in os.walk(os.path.join(REPO, folder)):
            for name in files:
                path = os.path.join(root, name)
                if not name.endswith(".py") or path.endswith(os.path.join("formats", "convert.py")):
                    continue
                text = open(path, encoding="utf-8").read()
                if re.search(r"\b(prepare_datasets|datumaro_to_coco|temporary_json)\b", text):
                    found.append(os.path.relpath(path, REPO))
    assert found == [], found

