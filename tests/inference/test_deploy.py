"""Deployment input size, tiling, the face-size report, the input-size sweep and anchor re-clustering."""

import json
import math
import os
import shutil

import numpy as np
import pytest

from conftest import (AIRPORT_ANN, AIRPORT_ROOT, REPO, TEMPLATES, copy_airport_subset, need_shared, run_here, run_tool,
                      template_path)

OMZ_0200 = ("models", "omz", "face-detection-0200", "FP16", "face-detection-0200.xml")


def _airport():
    need_shared("data", "airport")
    with open(AIRPORT_ANN, encoding="utf-8") as f:
        return json.load(f)


def _frame(image_id):
    import cv2
    data = _airport()
    img = next(i for i in data["images"] if i["id"] == image_id)
    frame = cv2.imread(os.path.join(AIRPORT_ROOT, img["file_name"]))
    boxes = np.array([a["bbox"] for a in data["annotations"] if a["image_id"] == image_id], np.float64)
    return frame, np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def _found(dets, gt_xyxy, score_thr=0.5):
    """Per gt box: is there a detection (score >= thr) with IoU >= 0.5."""
    import torch
    from torchvision.ops import box_iou
    d = np.asarray(dets)[np.asarray(dets)[:, 4] >= score_thr] if len(dets) else np.zeros((0, 6))
    if not len(d):
        return np.zeros(len(gt_xyxy), bool)
    iou = box_iou(torch.as_tensor(gt_xyxy, dtype=torch.float64), torch.as_tensor(d[:, :4], dtype=torch.float64))
    return (iou.max(dim=1).values >= 0.5).numpy()


# ---- deployment input size ------------------------------------------------------------------------------


def test_deployment_input_size_rules():
    from ote_detection.inference.deploy import deployment_input_size, parse_aspect
    from ote_detection.utils.errors import OteError
    hd = (1080, 1920)
    assert deployment_input_size((1280, None), frame_hw=hd) == (1280, 736)   # 720 rounded up to stride 32
    assert deployment_input_size((960, None), frame_hw=hd) == (960, 544)
    assert deployment_input_size((640, None), frame_hw=hd) == (640, 384)
    assert deployment_input_size((640, None), frame_hw=(480, 640)) == (640, 480)  # already a multiple
    assert deployment_input_size((1280, None)) == (1280, 736)                # export: 16:9 by default
    assert deployment_input_size((1280, None), aspect="4:3") == (1280, 960)
    assert deployment_input_size((448, None), frame_hw=(1920, 1080), stride=64) == (448, 832)  # portrait
    assert deployment_input_size((1280, None), frame_hw=hd, aspect="1:1") == (1280, 736)  # frames win
    assert deployment_input_size(256) == (256, 256)
    assert deployment_input_size((320, 200)) == (320, 200)                   # WxH exactly as given
    assert deployment_input_size(None, default=(256, 256)) == (256, 256)     # the snapshot's own size
    assert parse_aspect("16/9") == pytest.approx(16 / 9) and parse_aspect(1.5) == 1.5
    with pytest.raises(OteError):
        parse_aspect("wide")
    with pytest.raises(OteError):
        deployment_input_size((0, 10))


def test_model_stride_of_the_ssd_templates():
    from ote_detection.config import load_config
    from ote_detection.inference.deploy import model_stride
    for name in ("face-detection-0200", "face-detection-0207"):
        assert model_stride(load_config(os.path.join(TEMPLATES, name, "model.py")).model) == 32


def test_keep_ratio_maps_boxes_back_on_a_real_frame(one_torch_thread):
    """A 384x216 (16:9) airport crop letterboxed into the OMZ IR's 256x256 input: the detections come back in
    the crop's pixels on the two faces (as they do stretched), = the network's boxes / the letterbox scale."""
    from ote_detection.inference.predictor import letterbox
    from ote_detection.inference.openvino_predictor import OpenVINOPredictor
    ir = need_shared(*OMZ_0200)
    frame, gt = _frame(0)
    x0, y0, w, h = 1050, 120, 384, 216
    crop = np.ascontiguousarray(frame[y0:y0 + h, x0:x0 + w])
    gt_crop = gt - [x0, y0, x0, y0]
    inside = (gt_crop[:, 0] >= 0) & (gt_crop[:, 2] <= w) & (gt_crop[:, 1] >= 0) & (gt_crop[:, 3] <= h)
    gt_crop = gt_crop[inside]
    assert len(gt_crop) == 2
    canvas, scale = letterbox(crop, (256, 256), keep_ratio=True)
    assert canvas.shape == (256, 256, 3) and scale == pytest.approx((256 / w, 144 / h))
    assert not canvas[145:].any()  # padding at the bottom
    for keep_ratio in (True, False):
        pred = OpenVINOPredictor(ir, precision="f32", threads=1, keep_ratio=keep_ratio)
        dets = pred.predict_frames([crop])[0]
        assert _found(dets, gt_crop).all(), (keep_ratio, dets[:5])
        assert dets[:, [0, 2]].max() <= w and dets[:, [1, 3]].max() <= h
        if keep_ratio:
            net = pred.infer_batch(pred.preprocess(crop)[0][None])[0]
            net = net[np.argsort(-net[:, 4], kind="stable")]
            assert np.allclose(dets[:, :4], np.clip(net[:, :4] / np.tile(scale, 2), 0, [w, h, w, h]), atol=1e-3)


# ---- tiling ---------------------------------------------------------------------------------------------


def test_tile_grid_covers_the_frame_with_overlap():
    from ote_detection.inference.tiling import tile_grid
    tiles = tile_grid((1080, 1920), (256, 256), 0.2)
    xs = sorted({t[0] for t in tiles})
    ys = sorted({t[1] for t in tiles})
    assert xs[0] == 0 and ys[0] == 0 and max(t[2] for t in tiles) == 1920 and max(t[3] for t in tiles) == 1080
    assert all(t[2] - t[0] == 256 and t[3] - t[1] == 256 for t in tiles)
    assert all(b - a <= 256 * 0.8 + 1 for a, b in zip(xs, xs[1:]))  # overlap >= 20 %
    assert len(tiles) == len(xs) * len(ys)
    assert tile_grid((200, 300), (256, 256), 0.2) == [(0, 0, 256, 200), (44, 0, 300, 200)]


def test_tiling_finds_faces_the_256_input_misses(one_torch_thread):
    """OMZ 0200 at 256x256 on a whole 1920x1080 airport frame sees faces of 2-6 px; tiles at native resolution
    (+ the full frame) find them; the merge leaves no duplicate boxes."""
    import torch
    from torchvision.ops import box_iou

    from ote_detection.inference.tiling import TiledPredictor
    from ote_detection.inference.openvino_predictor import OpenVINOPredictor
    ir = need_shared(*OMZ_0200)
    frame, gt = _frame(4)
    plain = OpenVINOPredictor(ir, precision="default", threads=1)
    tiled = TiledPredictor(plain, overlap=0.2, tile_scale=1.0)
    assert tiled.runs_per_frame(frame.shape[:2]) == 1 + len(tiled.tiles(frame.shape[:2]))
    found_plain = _found(plain.predict_frames([frame])[0], gt)
    dets = tiled.predict_frames([frame])[0]
    found_tiled = _found(dets, gt)
    assert found_tiled.sum() > found_plain.sum() and (found_tiled & ~found_plain).any()
    assert found_tiled.sum() >= len(gt) - 1
    assert dets.shape[1] == 6 and np.all(np.diff(dets[:, 4]) <= 0)
    strong = torch.as_tensor(dets[dets[:, 4] >= 0.5, :4])
    iou = box_iou(strong, strong).fill_diagonal_(0)
    assert float(iou.max()) <= 0.45 if len(strong) > 1 else True


# ---- face-size report -----------------------------------------------------------------------------------


def test_size_report_bins_add_up_to_the_total():
    from ote_detection.evaluation.size_report import BINS, face_size_report, format_size_report
    data = _airport()
    # detections: every gt box itself (score 0.9) for even ids, shifted off (no match) for odd ones, plus
    # low-score copies of the odd ones
    dets = {}
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        hit = a["id"] % 2 == 0
        rows = [[x, y, x + w, y + h, 0.9 if hit else 0.1, 0]]
        if not hit:
            rows.append([x + 3 * w, y, x + 4 * w, y + h, 0.95, 0])
        dets.setdefault(a["image_id"], []).extend(rows)
    dets = {k: np.array(v, np.float32) for k, v in dets.items()}
    rep = face_size_report(data, dets, score_thr=0.5)
    keys = [b[0] for b in BINS]
    assert sum(rep[f"faces_{k}"] for k in keys) == rep["faces_all"] == len(data["annotations"])
    n_even = sum(1 for a in data["annotations"] if a["id"] % 2 == 0)
    assert rep["recall_all"] == pytest.approx(100.0 * n_even / len(data["annotations"]))
    assert rep["best_recall_all"] == pytest.approx(100.0)
    hits = sum(rep[f"recall_{k}"] * rep[f"faces_{k}"] for k in keys if rep[f"faces_{k}"])
    assert hits / 100.0 == pytest.approx(n_even)
    assert all(math.isnan(rep[f"recall_{k}"]) for k in keys if rep[f"faces_{k}"] == 0)
    assert rep["faces_lt16"] == 1 and rep["faces_ge256"] == 0  # airport: one face of 13x16 px
    table = format_size_report(rep)
    assert "< 16" in table and str(len(data["annotations"])) in table


# ---- input-size sweep -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_choose_input_size_exports_and_evaluates_a_non_square_size(tmp_path, one_torch_thread):
    """The OMZ weights imported into a snapshot, exported at 640x (-> 640x384 for 1080p frames), letterboxed
    airport frames: the IR keeps the OMZ contract and finds faces the 256x256 input misses."""
    import openvino as ov

    from ote_detection.apis.choose_input_size import choose_input_size, format_sweep
    from ote_detection.apis.import_weights import import_openvino_weights
    ir = need_shared(*OMZ_0200)
    ann, _ = copy_airport_subset(str(tmp_path / "air"), n=2)
    snap = str(tmp_path / "0200.pth")
    import_openvino_weights(template_path(), ir, snap, verify=False)
    rows, choice = choose_input_size(template_path(), snap, [ann], [str(tmp_path / "air")], "640x",
                                     save_irs_to=str(tmp_path / "irs"), all_threads=False, progress=False)
    assert [r["size"] for r in rows] == [(640, 384)] and choice == 0
    model = ov.Core().read_model(rows[0]["xml"])
    assert list(model.inputs[0].get_shape()) == [1, 3, 384, 640]
    assert list(model.outputs[0].get_shape()) == [1, 1, 200, 7]
    # 2 frames, 9 faces of 18-52 px: the OMZ IR at 256x256 has AP50 ~35 on them; here the faces are found
    assert rows[0]["ap50"] > 60 and rows[0]["ms_1"] > 0 and rows[0]["cpu_ms_1"] > 0
    assert "640x384" in format_sweep(rows, choice)


# ---- anchor clustering ----------------------------------------------------------------------------------


def _synthetic_boxes(seed=0):
    rng = np.random.default_rng(seed)
    groups = [((3, 4), 300), ((5, 6), 200), ((30, 14), 200), ((200, 200), 100)]
    wh = [np.exp(np.log(m) + rng.normal(0, 0.12, size=(n, 2))) for m, n in groups]
    return np.concatenate(wh)


def test_clustering_count_levels_and_coverage():
    from ote_detection.config import load_config
    from ote_detection.models.anchor_clustering import (anchor_coverage, flat_anchors, kmeans_anchors,
                                                        split_levels, template_anchors)
    cfg = load_config(os.path.join(TEMPLATES, "face-detection-0200", "model.py"))
    widths, heights, strides, thr = template_anchors(cfg)
    per_level = [len(w) for w in widths]
    assert per_level == [4, 5] and thr == 0.4
    wh = _synthetic_boxes()
    anchors, mean_iou = kmeans_anchors(wh, sum(per_level), restarts=2)
    assert anchors.shape == (9, 2) and np.all(np.diff(anchors[:, 0] * anchors[:, 1]) >= 0)
    new_w, new_h = split_levels(anchors, per_level)
    assert [len(w) for w in new_w] == per_level
    assert max(a * b for a, b in zip(new_w[0], new_h[0])) <= min(a * b for a, b in zip(new_w[1], new_h[1]))
    like_w, like_h = split_levels(anchors, per_level, like=(widths, heights))  # slots keep the area ranks
    for level in range(2):
        old = np.argsort([w * h for w, h in zip(widths[level], heights[level])])
        new = np.argsort([w * h for w, h in zip(like_w[level], like_h[level])])
        assert list(old) == list(new) and sorted(like_w[level]) == sorted(new_w[level])
    before = anchor_coverage(wh, flat_anchors(widths, heights), thr)
    after = anchor_coverage(wh, anchors, thr)
    assert after > before + 0.2 and after > 0.95, (before, after)
    few, _ = kmeans_anchors(np.array([[10.0, 12.0], [30.0, 40.0]]), 9)  # fewer boxes than anchors
    assert few.shape == (9, 2)


@pytest.mark.slow
def test_cluster_anchors_tool_rewrites_model_py(tmp_path):
    need_shared("data", "airport")
    work = tmp_path / "wd"
    work.mkdir()
    src = os.path.join(TEMPLATES, "face-detection-0200")
    shutil.copy(os.path.join(src, "model.py"), work / "model.py")
    base = os.path.join(TEMPLATES, "_base_")
    if os.path.isdir(base):
        shutil.copytree(base, tmp_path / "_base_")
    original = (work / "model.py").read_text()
    args = [os.path.join(REPO, "tools", "cluster_anchors.py"), str(work / "model.py"), "--train-ann-files",
            AIRPORT_ANN, "--input-size", "1280x", "--min-size", "0", "--write"]
    # airport's 8-35 px faces at 1280x736: the template's anchors already cover all of them (IoU >= 0.4), so
    # the clustered ones are not written (issue 15.4) unless forced
    r = run_tool(args)
    assert r.returncode == 2 and "do not improve the coverage (100.0% -> 100.0%)" in r.stderr, r.stderr
    assert (work / "model.py").read_text() == original
    r = run_here(args + ["--force"])
    assert r.returncode == 0, r.stderr
    assert "41 faces" in r.stdout and "at input 1280x736" in r.stdout
    assert (work / "model.py.orig").read_text() == original
    import importlib.util

    from ote_detection.config import load_config
    from ote_detection.models.anchors import SSDAnchorGeneratorClustered
    from ote_detection.utils.errors import OteError
    cfg = load_config(str(work / "model.py"))
    gen = dict(cfg.model["bbox_head"]["anchor_generator"])
    assert [len(w) for w in gen["widths"]] == [4, 5]
    assert max(max(w) for w in gen["widths"]) < 60  # airport faces at 1280x736 are 8-35 px
    gen.pop("type")
    assert SSDAnchorGeneratorClustered(**gen).num_base_anchors == [4, 5]  # the rewritten config still builds
    spec = importlib.util.spec_from_file_location("cluster_anchors", os.path.join(REPO, "tools", "cluster_anchors.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with pytest.raises(OteError, match="missing.json"):
        tool.main([str(work / "model.py"), "--train-ann-files", str(tmp_path / "missing.json")])
