"""Datasets in any common format through Datumaro (--data-format), WIDER FACE's txt through Datumaro's
importer, and tools/convert_dataset.py. The VOC / YOLO / CVAT datasets are written by Datumaro itself."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import AIRPORT_ANN, AIRPORT_ROOT, REPO, SHARED, need_shared, run_here, run_tool, template_path
from ote_detection.data.coco import load_coco_files
from ote_detection.data.formats import datumaro_to_coco, export_with_datumaro, prepare_datasets
from ote_detection.utils.errors import OteError

# Datumaro export format -> its import format name
FORMATS = {"voc_detection": "voc", "yolo": "yolo", "cvat": "cvat"}


@pytest.fixture(scope="module")
def airport_coco():
    need_shared("data", "airport")
    return load_coco_files([AIRPORT_ANN], [AIRPORT_ROOT])


@pytest.fixture(scope="module")
def airport_formats(airport_coco, tmp_path_factory):
    """The airport set written by Datumaro as Pascal VOC, YOLO and CVAT (images copied)."""
    root = tmp_path_factory.mktemp("airport_formats")
    return {fmt: export_with_datumaro(airport_coco, str(root / fmt), out) for out, fmt in
            [(o, f) for o, f in FORMATS.items()]}


def _boxes(coco, name="face"):
    ids = {c["id"] for c in coco["categories"] if c["name"] == name}
    return sorted(tuple(a["bbox"]) for a in coco["annotations"] if a["category_id"] in ids)


@pytest.mark.parametrize("fmt", sorted(FORMATS.values()))
def test_formats_written_by_datumaro_read_back_as_our_coco(airport_coco, airport_formats, fmt):
    files, roots = prepare_datasets(airport_formats[fmt], None, fmt)
    coco = load_coco_files(files, roots)  # our checks: files, headers, sizes, boxes
    assert len(coco["images"]) == len(airport_coco["images"]) == 10
    a, b = np.array(_boxes(airport_coco)), np.array(_boxes(coco))
    assert a.shape == b.shape == (41, 4) and np.abs(a - b).max() <= 0.01  # YOLO/CVAT keep 2 decimals


@pytest.mark.slow
def test_no_face_category_and_bad_dataset_are_one_line(airport_coco, tmp_path):
    persons = dict(airport_coco, categories=[{"id": 1, "name": "person"}])
    out = export_with_datumaro(persons, str(tmp_path / "voc"), "voc_detection")
    with pytest.raises(OteError, match=r"no category named 'face' \(voc dataset; categories: \['background', "
                                       r"'person'\]\)"):
        prepare_datasets(out, None, "voc")
    r = run_here([os.path.join(REPO, "tools", "convert_dataset.py"), out, "--from", "voc", str(tmp_path / "c.json")])
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "categories:" in r.stderr, r.stderr
    with pytest.raises(OteError, match="cannot be read as a yolo dataset"):
        prepare_datasets(str(tmp_path), None, "yolo")
    with pytest.raises(OteError, match="--train-data-roots is for COCO files only"):
        prepare_datasets(out, "somewhere", "voc")


def test_data_checks_apply_to_any_format(airport_formats, tmp_path):
    """A truncated image in a Datumaro-read YOLO dataset is found by our pre-flight check, naming the file."""
    import shutil
    src = airport_formats["yolo"]
    dst = str(tmp_path / "yolo")
    shutil.copytree(src, dst)
    image = os.path.join(dst, "obj_train_data", "image_000003.jpg")
    data = open(image, "rb").read()
    open(image, "wb").write(data[: len(data) // 2])
    files, roots = prepare_datasets(dst, None, "yolo")
    with pytest.raises(OteError, match=r"image_000003.jpg: truncated JPEG"):
        load_coco_files(files, roots)


@pytest.mark.slow
def test_coco_path_does_not_import_datumaro():
    code = ("import sys; from ote_detection.apis import train, evaluate, compress, choose_input_size; "
            "from ote_detection.data.formats import prepare_datasets; from ote_detection.data.coco import "
            f"load_coco_files; f, r = prepare_datasets({AIRPORT_ANN!r}, {AIRPORT_ROOT!r}, 'coco'); "
            "load_coco_files(f, r); assert 'datumaro' not in sys.modules, 'datumaro imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=REPO))
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.slow
def test_convert_dataset_cli_voc_to_coco(airport_coco, airport_formats, tmp_path):
    out = tmp_path / "conv" / "annotations.json"
    r = run_tool([os.path.join(REPO, "tools", "convert_dataset.py"), airport_formats["voc"], "--from", "voc", "--to",
                  "coco", str(out)])
    assert r.returncode == 0, r.stderr
    coco = load_coco_files([str(out)], [str(out.parent)])
    assert np.abs(np.array(_boxes(coco)) - np.array(_boxes(airport_coco))).max() <= 0.01
    assert not os.path.isabs(json.load(open(out))["images"][0]["file_name"])


def _wider_layout(tmp_path, text=None):
    root = tmp_path / "wider"
    (root / "wider_face_split").mkdir(parents=True)
    dst = root / "wider_face_split" / "wider_face_val_bbx_gt.txt"
    if text is None:
        os.symlink(need_shared("data", "wider_val_gt", "wider_face_val_bbx_gt.txt"), dst)
    else:
        dst.write_text(text)
    return str(root)


def test_wider_face_txt_through_datumaro_equals_ours(tmp_path):
    """The real wider_face_val_bbx_gt.txt: Datumaro's importer gives our parser's boxes (39,707 kept: 10 of zero
    size among them; the 1 of negative size dropped, as ours) and, columns renamed back, the same attributes."""
    from ote_detection.data.wider import ATTRIBUTES, parse_wider_bbx_gt
    root = _wider_layout(tmp_path)
    ours = parse_wider_bbx_gt(os.path.join(root, "wider_face_split", "wider_face_val_bbx_gt.txt"))
    coco = datumaro_to_coco(root, "wider_face")
    assert len(coco["images"]) == len(ours) == 3226
    by_path = {}
    for ann in coco["annotations"]:
        by_path.setdefault(ann["image_id"], []).append(ann)
    images = {img["id"]: img["file_name"] for img in coco["images"]}
    theirs = {os.path.relpath(images[i], os.path.join(root, "WIDER_val", "images")): a for i, a in by_path.items()}
    total = zero = 0
    for entry in ours:
        anns = theirs.get(entry.path, [])
        assert [a["bbox"] for a in anns] == entry.boxes, entry.path
        assert [[a[k] for k in ATTRIBUTES] for a in anns] == entry.attrs, entry.path
        total += len(anns)
        zero += sum(1 for b in entry.boxes if b[2] == 0 or b[3] == 0)
    assert total == len(coco["annotations"]) == 39707 and zero == 10
    assert sum(e.negative_size for e in ours) == 1


def test_wider_face_truncated_file_datumaro_silent_ours_names_the_line(tmp_path):
    """What Datumaro loses (why tools/wider_to_coco.py keeps our parser): a file cut short is read without a word."""
    from ote_detection.data.wider import WiderFormatError, parse_wider_bbx_gt
    text = "0--Parade/0_Parade_a.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n"
    root = _wider_layout(tmp_path, text)
    assert len(datumaro_to_coco(root, "wider_face")["annotations"]) == 1
    with pytest.raises(WiderFormatError, match=r"wider_face_val_bbx_gt.txt:4: unexpected end of file"):
        parse_wider_bbx_gt(os.path.join(root, "wider_face_split", "wider_face_val_bbx_gt.txt"))


@pytest.mark.slow
def test_voc_yolo_cvat_evaluate_to_the_coco_ap_and_train(airport_formats, tmp_path):
    """eval.py's evaluate on the airport set as written by Datumaro (VOC, YOLO, CVAT) gives the COCO json's AP
    (within 0.1); train.py's train runs one epoch on the YOLO set."""
    from ote_detection.apis.evaluate import evaluate
    from ote_detection.apis.train import train
    from test_omz_import import imported_snapshot
    snap, _ = imported_snapshot("face-detection-0200")
    ref = evaluate(template_path(), snap, AIRPORT_ANN, AIRPORT_ROOT, cache_dir=None)
    assert ref["ap"] > 5
    for fmt, path in airport_formats.items():
        got = evaluate(template_path(), snap, path, None, cache_dir=None, data_format=fmt)
        assert abs(got["ap"] - ref["ap"]) <= 0.1, (fmt, got["ap"], ref["ap"])
    history = train(template_path(), airport_formats["yolo"], None, str(tmp_path / "out"), data_format="yolo",
                    load_weights=snap, epochs=1, batch_size=4, gpu_num=0, workers=0, input_size=(128, 128),
                    progress=False)
    assert len(history) == 1 and os.path.isfile(tmp_path / "out" / "latest.pth")


@pytest.mark.slow
def test_cluster_anchors_cli_reads_a_datumaro_format_like_coco(airport_formats):
    model_py = os.path.join(os.path.dirname(template_path()), "model.py")
    common = [os.path.join(REPO, "tools", "cluster_anchors.py"), model_py, "--restarts", "1"]
    coco = run_here(common + ["--train-ann-files", AIRPORT_ANN, "--train-data-roots", AIRPORT_ROOT])
    yolo = run_here(common + ["--train-ann-files", airport_formats["yolo"], "--data-format", "yolo"])
    assert coco.returncode == yolo.returncode == 0, yolo.stderr[-2000:]
    assert "clustered anchors" in yolo.stdout and yolo.stdout.splitlines()[0] == coco.stdout.splitlines()[0]
    import re
    numbers = [np.array([float(v) for v in re.findall(r"\d+\.\d+", r.stdout)]) for r in (coco, yolo)]
    # the same anchors; the boxes read back from YOLO differ by up to 0.01 px, so the last digit may move
    assert numbers[0].shape == numbers[1].shape and np.abs(numbers[0] - numbers[1]).max() <= 0.15
