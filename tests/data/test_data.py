"""Datasets: merged files, clipping, and one clear line for each kind of bad input."""

import os

import pytest

from conftest import copy_airport_subset, need_shared, run_here, run_tool, write_json
from ote_detection.data.coco import CocoDataset, load_coco_files
from ote_detection.utils.errors import OteError


def test_two_files_merge_with_unique_ids(tmp_path):
    ann, data = copy_airport_subset(str(tmp_path / "a"), n=2)
    ann2, data2 = copy_airport_subset(str(tmp_path / "b"), n=3)
    coco = load_coco_files(f"{ann},{ann2}", f"{tmp_path / 'a'},{tmp_path / 'b'}")
    assert len(coco["images"]) == 5
    assert len({i["id"] for i in coco["images"]}) == 5
    assert len(coco["annotations"]) == len(data["annotations"]) + len(data2["annotations"])
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])


def test_boxes_past_the_border_are_clipped_and_counted(tmp_path, caplog):
    ann, data = copy_airport_subset(str(tmp_path), n=1)
    img = data["images"][0]
    data["annotations"][0]["bbox"] = [img["width"] - 10, 5, 50, 40]
    write_json(ann, data)
    with caplog.at_level("WARNING"):
        coco = load_coco_files(ann, str(tmp_path))
    assert coco["annotations"][0]["bbox"][2] == pytest.approx(10)
    assert "1 box(es) reached past the image border" in caplog.text


def _bad(tmp_path, change):
    ann, data = copy_airport_subset(str(tmp_path), n=2)
    change(data, tmp_path)
    write_json(ann, data)
    with pytest.raises(OteError) as err:
        load_coco_files(ann, str(tmp_path))
    return str(err.value)


def test_missing_image(tmp_path):
    msg = _bad(tmp_path, lambda d, t: os.remove(os.path.join(t, d["images"][0]["file_name"])))
    assert "image file not found" in msg and "image_" in msg


def test_zero_size_box_is_kept_and_said_negative_size_is_refused(tmp_path, caplog):
    """Zero-size boxes (WIDER FACE's own ground truth has them) load, counted and said once; training
    skips them; a negative size stays one line."""
    from ote_detection.data.coco import CocoDataset
    ann, data = copy_airport_subset(str(tmp_path), n=2)
    data["annotations"][0]["bbox"][2] = 0
    write_json(ann, data)
    with caplog.at_level("WARNING"):
        coco = load_coco_files(ann, str(tmp_path))
        dataset = CocoDataset(ann, str(tmp_path), [], min_size=None)
    assert len(coco["annotations"]) == len(data["annotations"]) and coco["annotations"][0]["area"] == 0
    assert caplog.text.count("1 box(es) of zero width or height") == 1
    assert "narrower or shorter than 1 pixel" not in caplog.text  # said once, above (issue 15.13)
    assert sum(len(item[1]) for item in dataset.items) == len(data["annotations"]) - 1

    def change(d, t):
        d["annotations"][0]["bbox"][3] = -1
    assert "negative size" in _bad(tmp_path, change)


def test_no_images(tmp_path):
    assert "has no images" in _bad(tmp_path, lambda d, t: d.update(images=[]))


def test_no_face_category(tmp_path):
    assert "no category named 'face'" in _bad(tmp_path, lambda d, t: d.update(categories=[{"id": 1, "name": "person"}]))


@pytest.mark.slow
def test_train_cli_reports_bad_input_in_one_line(tmp_path, work_dir_0200):
    """Corrupt and truncated images, a bad JSON: exit code 2, one line naming the file, no traceback."""
    need_shared("data", "airport")
    ann, data = copy_airport_subset(str(tmp_path), n=2)
    first = os.path.join(str(tmp_path), data["images"][0]["file_name"])
    cases = []
    with open(first, "rb") as f:
        jpeg = f.read()
    with open(first, "wb") as f:  # truncated JPEG
        f.write(jpeg[: len(jpeg) // 2])
    cases.append((ann, "truncated JPEG"))
    bad_json = tmp_path / "broken.json"
    bad_json.write_text("{ not json")
    cases.append((str(bad_json), "not a valid JSON file"))
    for run, (ann_file, expected) in zip((run_tool, run_here), cases):  # libjpeg's output: a process of its own
        r = run([os.path.join(work_dir_0200, "train.py"), "--train-ann-files", ann_file, "--train-data-roots",
                      str(tmp_path), "--save-checkpoints-to", str(tmp_path / "out"), "--epochs", "1",
                      "--batch-size", "2", "--input-size", "64", "--workers", "0"])
        assert r.returncode == 2, r.stderr[-2000:]
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and expected in last, r.stderr[-2000:]
        assert "Traceback" not in r.stderr
    with open(first, "wb") as f:  # not an image at all
        f.write(b"this is not a jpeg")
    r = run_tool([os.path.join(work_dir_0200, "train.py"), "--train-ann-files", ann, "--train-data-roots", str(tmp_path),
                  "--save-checkpoints-to", str(tmp_path / "out"), "--epochs", "1", "--batch-size", "2",
                  "--input-size", "64", "--workers", "1"])
    assert r.returncode == 2 and "cannot decode image" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert not os.path.exists(tmp_path / "out" / "latest.pth")


def test_crowd_flags_read_by_meaning_and_ignore_folded_into_iscrowd(tmp_path):
    """COCO files written by other tools spell the flags as strings ("False", "0") or use an ``ignore`` key
    (which pycocotools overwrites with iscrowd): read by their meaning, an ignored box is an iscrowd box, so
    evaluation and training leave out the same boxes; a value that is neither is one line."""
    from ote_detection.data.coco import CocoDataset
    ann, data = copy_airport_subset(str(tmp_path), n=2)
    anns = data["annotations"]
    anns[0]["iscrowd"], anns[1]["iscrowd"], anns[2]["ignore"], anns[3]["ignore"] = "False", "1", 1, "no"
    write_json(ann, data)
    coco = load_coco_files(ann, str(tmp_path))
    assert [a["iscrowd"] for a in coco["annotations"][:4]] == [0, 1, 1, 0]
    assert sum(a["iscrowd"] for a in coco["annotations"]) == 2
    dataset = CocoDataset(ann, str(tmp_path), [], min_size=None)
    assert sum(len(item[1]) for item in dataset.items) == len(anns) - 2
    anns[0]["iscrowd"] = "maybe"
    write_json(ann, data)
    with pytest.raises(OteError, match=r"annotation id .* has iscrowd = 'maybe', neither true nor false"):
        load_coco_files(ann, str(tmp_path))


def test_zero_size_box_is_reported_once(tmp_path, caplog):
    """One zero-size box: one line (load_coco_files' with the example and its AP meaning), not a second
    one from the training dataset."""
    ann, data = copy_airport_subset(str(tmp_path), n=2)
    data["annotations"][0]["bbox"][2] = 0
    write_json(ann, data)
    with caplog.at_level("INFO"):
        dataset = CocoDataset(ann, str(tmp_path), [], min_size=None)
    mentions = [r.getMessage() for r in caplog.records
                if any(t in r.getMessage() for t in ("zero width", "1 pixel", "under 1 px"))]
    assert len(mentions) == 1, mentions
    assert "1 box(es) of zero width or height" in mentions[0]
    assert f"{len(data['annotations']) - 1} of {len(data['annotations']) - 1} face(s) used" in dataset.summary
