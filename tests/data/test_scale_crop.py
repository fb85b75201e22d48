"""The deployment geometry in training: the letterbox step, the deployment-scale crop, and the one decision
of size and letterboxing (``inference.deploy.deployment_geometry``) that train, export, eval and the demo share."""

import random

import numpy as np
import pytest

from ote_detection.data.scale_crop import DeploymentScaleCrop, Letterbox, deployment_scale, letterbox, with_geometry
from ote_detection.utils.errors import OteError

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]


def drawn_frame(w, h, seed):
    """A grey frame with up to 6 filled rectangles of distinct pure colours; (image float32, boxes, colours)."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 128, np.float32)
    boxes, colours = [], []
    for colour in COLOURS:
        bw, bh = rng.integers(max(4, w // 40), max(8, w // 6), size=2)
        x, y = rng.integers(0, w - bw), rng.integers(0, h - bh)
        if any(x < b[2] + 2 and b[0] < x + bw + 2 and y < b[3] + 2 and b[1] < y + bh + 2 for b in boxes):
            continue  # rectangles do not touch: each colour's pixels are one face
        img[y:y + bh, x:x + bw] = colour
        boxes.append([x, y, x + bw, y + bh])
        colours.append(colour)
    return img, np.array(boxes, np.float32), colours


def colour_extent(img, colour, tol=40):
    """(x1, y1, x2, y2) of the pixels of ``colour`` (pixel edges), or None."""
    mask = (np.abs(img - np.array(colour, np.float32)).max(axis=2) < tol)
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def check_boxes_follow_pixels(out, boxes, colours, slack=1.5):
    """Every kept box covers its rectangle's pixels, and its edges are those pixels' (within ``slack`` px:
    bilinear edges); a face wholly out of view has no box."""
    assert out["img"].shape[:2] == out["img_shape"]
    for box, label in zip(out["gt_bboxes"], out["gt_labels"]):
        extent = colour_extent(out["img"], colours[int(label)])
        assert extent is not None, (box, colours[int(label)])
        assert np.all(np.abs(np.array(extent, np.float32) - box) <= slack), (extent, box)
    kept = set(int(v) for v in out["gt_labels"])
    for i, colour in enumerate(colours):  # a face seen in full (not cut by the border) keeps its box
        extent = colour_extent(out["img"], colour, tol=10)
        if extent is not None and i not in kept:
            x1, y1, x2, y2 = extent
            h, w = out["img"].shape[:2]
            assert x1 <= 1 or y1 <= 1 or x2 >= w - 1 or y2 >= h - 1, (i, extent)


@pytest.mark.parametrize("frame,size,keep", [((640, 360), (320, 192), True), ((300, 500), (160, 288), True),
                                             ((640, 360), (256, 256), False)])
def test_deployment_scale_crop_boxes_follow_the_pixels(frame, size, keep):
    for seed in range(8):
        img, boxes, colours = drawn_frame(*frame, seed)
        random.seed(seed)
        step = DeploymentScaleCrop(scale_range=(0.5, 2.0), img_scale=size, keep_ratio=keep)
        out = step({"img": img.copy(), "gt_bboxes": boxes.copy(), "gt_labels": np.arange(len(boxes)),
                    "scale_factor": (1.0, 1.0)})
        assert out["img"].shape == (size[1], size[0], 3) and out["img"].dtype == np.float32
        check_boxes_follow_pixels(out, boxes, colours)


def test_deployment_scale_crop_shows_faces_at_the_deployment_size():
    """Zoom 1: every face is as large as in the letterboxed frame the deployed network sees."""
    img, boxes, colours = drawn_frame(640, 360, 3)
    step = DeploymentScaleCrop(scale_range=(1.0, 1.0), img_scale=(320, 192), keep_ratio=True)
    scale = deployment_scale((640, 360), (320, 192), True)
    assert scale == (0.5, 0.5)
    for seed in range(4):
        random.seed(seed)
        out = step({"img": img.copy(), "gt_bboxes": boxes.copy(), "gt_labels": np.arange(len(boxes))})
        assert len(out["gt_bboxes"]) == len(boxes)  # the window is the whole frame (192 rows: 180 + 12 of padding)
        sizes = out["gt_bboxes"][:, 2:] - out["gt_bboxes"][:, :2]
        np.testing.assert_allclose(sizes, (boxes[:, 2:] - boxes[:, :2]) * 0.5, atol=1e-4)
        check_boxes_follow_pixels(out, boxes, colours)


def test_deployment_scale_crop_falls_back_to_the_whole_frame():
    """A window that holds no face centre is drawn again; after max_tries the deployment view is used."""
    img, boxes, colours = drawn_frame(640, 360, 1)
    step = DeploymentScaleCrop(scale_range=(8.0, 8.0), img_scale=(320, 192), keep_ratio=True, max_tries=0)
    out = step({"img": img.copy(), "gt_bboxes": boxes.copy(), "gt_labels": np.arange(len(boxes))})
    np.testing.assert_allclose(out["gt_bboxes"], boxes * 0.5, atol=1e-4)
    np.testing.assert_allclose(out["img"][:180], letterbox(img, (320, 192), True)[0][:180], atol=2.0)
    assert not out["img"][181:].any()  # the padding rows are zero, as the letterbox's
    with pytest.raises(OteError, match="scale_range"):
        DeploymentScaleCrop(scale_range=(2.0, 1.0))


def test_letterbox_step_is_the_inference_letterbox():
    img, boxes, colours = drawn_frame(300, 500, 2)
    out = Letterbox(img_scale=(160, 288))({"img": img.copy(), "gt_bboxes": boxes.copy(),
                                           "gt_labels": np.arange(len(boxes))})
    same, (sx, sy) = letterbox(img, (160, 288), keep_ratio=True)
    np.testing.assert_array_equal(out["img"], same)
    np.testing.assert_allclose(out["gt_bboxes"], boxes * np.array([sx, sy, sx, sy], np.float32), rtol=1e-6)
    check_boxes_follow_pixels(out, boxes, colours)


def test_with_geometry_sizes_and_letterboxes_the_pipeline():
    pipeline = [dict(type="MinIoURandomCrop"), dict(type="Resize", keep_ratio=False),
                dict(type="DeploymentScaleCrop", scale_range=(0.8, 1.25)), dict(type="Normalize")]
    stretched = with_geometry(pipeline, (320, 192), keep_ratio=False)
    assert stretched[1] == dict(type="Resize", keep_ratio=False, img_scale=(320, 192))
    assert stretched[2] == dict(type="DeploymentScaleCrop", scale_range=(0.8, 1.25), img_scale=(320, 192),
                                keep_ratio=False)
    boxed = with_geometry(pipeline, (320, 192), keep_ratio=True)
    assert boxed[1] == dict(type="Letterbox", img_scale=(320, 192)) and boxed[2]["keep_ratio"] is True
    assert pipeline[1] == dict(type="Resize", keep_ratio=False)  # the config is not changed


def test_one_geometry_decision():
    from ote_detection.inference.deploy import deployment_geometry
    own = ((960, 544), True)  # a snapshot trained with --input-size 960x
    assert deployment_geometry(None, default=own) == ((960, 544), True)
    assert deployment_geometry(None, default=((256, 256), False)) == ((256, 256), False)
    assert deployment_geometry((640, None), frame_hw=(1080, 1920), default=own) == ((640, 384), True)
    assert deployment_geometry((608, None), frame_hw=(1080, 608), default=own) == ((608, 1088), True)
    assert deployment_geometry((640, None), aspect="4:3") == ((640, 480), True)
    assert deployment_geometry((640, 360), default=own) == ((640, 360), False)  # WxH: stretched
    assert deployment_geometry((640, 360), keep_ratio=True) == ((640, 360), True)  # unless asked
    assert deployment_geometry((640, None), frame_hw=(1080, 1920), keep_ratio=False) == ((640, 384), False)
    with pytest.raises(OteError, match="--aspect 4:3 is only for --input-size Wx"):
        deployment_geometry((640, 360), aspect="4:3")
