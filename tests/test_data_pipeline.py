"""Start-up at scale (image sizes from headers, no decoding) and the training pipeline's augmentation
(the same distribution as OTE's recipe, at a fraction of the cost: benchmarks/bench_data_pipeline.py)."""

import os

import cv2
import numpy as np
import pytest
from PIL import ImageFile

from conftest import AIRPORT_ROOT, need_shared, template_path, write_json
from ote_detection.data.coco import load_coco_files
from ote_detection.data.synthetic import replicate_dataset


@pytest.fixture
def count_decodes(monkeypatch):
    """{'cv2': n, 'pil': n}: full decodes by OpenCV (imread, imdecode) and Pillow (ImageFile.load) while
    the test runs."""
    counts = {"cv2": 0, "pil": 0}

    def counted(fn, key):
        def wrapper(*args, **kwargs):
            counts[key] += 1
            return fn(*args, **kwargs)
        return wrapper
    monkeypatch.setattr(cv2, "imread", counted(cv2.imread, "cv2"))
    monkeypatch.setattr(cv2, "imdecode", counted(cv2.imdecode, "cv2"))
    monkeypatch.setattr(ImageFile.ImageFile, "load", counted(ImageFile.ImageFile.load, "pil"))
    return counts


def test_start_up_over_thousands_of_images_decodes_none(tmp_path, count_decodes):
    """2,000 JPEG files (distinct files, copies of two small airport frames, one with EXIF orientation 6):
    loading them without width/height in the JSON, building the training dataset, and loading with
    width/height but without checks read headers (or nothing) and decode no image; the sizes are the
    ones decoding gives (EXIF applied). 1.7 s on 2 shared cores."""
    from PIL import Image

    from ote_detection.apis.task import Task
    from ote_detection.apis.train import build_train_dataset
    from ote_detection.data.images import read_image
    need_shared("data", "airport")
    src = tmp_path / "src"
    os.makedirs(src / "img")
    frame = cv2.resize(cv2.imread(os.path.join(AIRPORT_ROOT, "train", "image_000000.jpg")), (96, 54))
    rgb = Image.fromarray(frame[:, :, ::-1].copy())
    rgb.save(src / "img" / "a.jpg", quality=90)
    exif = rgb.getexif()
    exif[0x0112] = 6
    rgb.save(src / "img" / "b.jpg", quality=90, exif=exif)
    images = [dict(id=1, file_name="img/a.jpg"), dict(id=2, file_name="img/b.jpg")]
    anns = [dict(id=1, image_id=1, category_id=1, bbox=[10, 10, 30, 30]),
            dict(id=2, image_id=2, category_id=1, bbox=[5, 20, 30, 30])]
    write_json(src / "ann.json", dict(images=images, annotations=anns, categories=[dict(id=1, name="face")]))
    write_json(src / "sized.json", dict(images=[dict(images[0], width=96, height=54), dict(images[1], width=54,
                                                                                          height=96)],
                                        annotations=anns, categories=[dict(id=1, name="face")]))
    big = replicate_dataset(str(src / "ann.json"), str(src), str(tmp_path / "big"), 2000)
    sized = replicate_dataset(str(src / "sized.json"), str(src), str(tmp_path / "sized"), 2000)
    count_decodes.update(cv2=0, pil=0)
    coco = load_coco_files(big, str(tmp_path / "big"))
    assert [(i["width"], i["height"]) for i in coco["images"][:2]] == [(96, 54), (54, 96)]  # EXIF 6: displayed
    assert {(i["width"], i["height"]) for i in coco["images"]} == {(96, 54), (54, 96)}
    task = Task(template_path())
    dataset = build_train_dataset(task.cfg, big, str(tmp_path / "big"), task.classes, quiet=True)
    assert len(dataset.dataset) == 2000
    assert len(load_coco_files(sized, str(tmp_path / "sized"), check_images=False)["images"]) == 2000
    assert count_decodes == {"cv2": 0, "pil": 0}
    assert read_image(coco["images"][1]["path"]).shape == (96, 54, 3)  # the counter counts
    assert count_decodes["cv2"] == 1
