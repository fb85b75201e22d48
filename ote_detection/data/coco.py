"""COCO-format face datasets: one or several annotation files (each with its image root), merged."""

import json
import logging
import os

import numpy as np
import torch
from torch.utils.data import Dataset

from ..utils.errors import OteError
from .transforms import Compose, read_image, resize_image

log = logging.getLogger(__name__)


def split_paths(value):
    """'a,b' -> ['a', 'b'] (the comma-separated form of --*-ann-files / --*-data-roots)."""
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [v for v in str(value).split(",") if v]


def _load_json(path):
    if not os.path.isfile(path):
        raise OteError(f"{path}: annotation file not found")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OteError(f"{path}: not a valid JSON file ({exc})") from exc
    if not isinstance(data, dict) or not data.get("images"):
        raise OteError(f"{path}: annotation file has no images")
    return data


def load_coco_files(ann_files, img_roots, classes=("face",)):
    """Merge COCO files into one COCO dict with new, unique image and annotation ids.

    Every image gets ``path`` (root + file_name). Category ids are remapped to 1..len(classes) by
    name; annotations of other categories are dropped. Problems are reported with the file name:
    missing images, bad boxes, no category of ``classes``. Boxes reaching past the image border are
    clipped (counted, reported once).
    """
    ann_files, img_roots = split_paths(ann_files), split_paths(img_roots)
    if len(ann_files) != len(img_roots):
        raise OteError(f"{len(ann_files)} annotation file(s) but {len(img_roots)} data root(s): give one root per file")
    merged = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": c} for i, c in enumerate(classes)]}
    clipped = 0
    for ann_file, root in zip(ann_files, img_roots):
        data = _load_json(ann_file)
        cats = {c["id"]: c["name"] for c in data.get("categories", [])}
        cat_map = {cid: classes.index(name) + 1 for cid, name in cats.items() if name in classes}
        if not cat_map:
            raise OteError(f"{ann_file}: no category named {' or '.join(repr(c) for c in classes)} "
                           f"(categories: {sorted(cats.values())})")
        id_map = {}
        for img in data["images"]:
            for key in ("id", "file_name"):
                if key not in img:
                    raise OteError(f"{ann_file}: an image entry has no '{key}'")
            path = os.path.join(root, img["file_name"])
            if not os.path.isfile(path):
                raise OteError(f"{path}: image file not found (listed in {ann_file})")
            new = dict(img, id=len(merged["images"]) + 1, path=path, source_id=img["id"], source=ann_file)
            if "width" not in img or "height" not in img:
                h, w = read_image(path).shape[:2]
                new.update(width=w, height=h)
            id_map[img["id"]] = new
            merged["images"].append(new)
        for ann in data.get("annotations", []):
            if ann.get("category_id") not in cat_map:
                continue
            img = id_map.get(ann.get("image_id"))
            if img is None:
                raise OteError(f"{ann_file}: annotation {ann.get('id')} refers to unknown image {ann.get('image_id')}")
            try:
                x, y, w, h = (float(v) for v in ann["bbox"])
            except (KeyError, TypeError, ValueError) as exc:
                raise OteError(f"{ann_file}: annotation {ann.get('id')} has no valid bbox") from exc
            if w <= 0 or h <= 0:
                raise OteError(f"{ann_file}: annotation {ann.get('id')} of {img['file_name']} has a bbox of zero or "
                               f"negative size {[x, y, w, h]}")
            x1, y1 = max(x, 0.0), max(y, 0.0)
            x2, y2 = min(x + w, img["width"]), min(y + h, img["height"])
            if (x1, y1, x2, y2) != (x, y, x + w, y + h):
                clipped += 1
                if x2 <= x1 or y2 <= y1:
                    raise OteError(f"{ann_file}: annotation {ann.get('id')} of {img['file_name']} lies outside the image")
            merged["annotations"].append(dict(
                ann, id=len(merged["annotations"]) + 1, image_id=img["id"], category_id=cat_map[ann["category_id"]],
                bbox=[x1, y1, x2 - x1, y2 - y1], area=(x2 - x1) * (y2 - y1), iscrowd=int(ann.get("iscrowd", 0))))
    if clipped:
        log.warning("%d box(es) reached past the image border and were clipped (%s)", clipped, ", ".join(ann_files))
    return merged


class CocoDataset(Dataset):
    """Training dataset: pipeline output with ``img`` [3, H, W], ``gt_bboxes`` [N, 4], ``gt_labels`` [N].

    ``min_size``: boxes narrower or shorter than this (in original pixels) are not used as targets (OTE).
    ``filter_empty_gt``: images without usable boxes are dropped (mmdetection's default); set False to
    keep them as negatives.
    """

    def __init__(self, ann_files, img_roots, pipeline, classes=("face",), min_size=None, filter_empty_gt=True):
        self.coco = load_coco_files(ann_files, img_roots, tuple(classes))
        self.pipeline = Compose(pipeline)
        by_image = {img["id"]: [] for img in self.coco["images"]}
        for ann in self.coco["annotations"]:
            by_image[ann["image_id"]].append(ann)
        self.items = []
        for img in self.coco["images"]:
            boxes, labels = [], []
            for ann in by_image[img["id"]]:
                x, y, w, h = ann["bbox"]
                if ann.get("ignore", False) or ann["iscrowd"] or w < 1 or h < 1:
                    continue
                if min_size is not None and (w < min_size or h < min_size):
                    continue
                boxes.append([x, y, x + w, y + h])
                labels.append(ann["category_id"] - 1)
            if filter_empty_gt and not boxes:
                continue
            self.items.append((img["path"], np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64)))
        if not self.items:
            raise OteError(f"{', '.join(split_paths(ann_files))}: no image with usable face boxes "
                           f"(min_size={min_size})")

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        path, boxes, labels = self.items[index]
        return self.pipeline({"filename": path, "gt_bboxes": boxes.copy(), "gt_labels": labels.copy()})


class RepeatDataset(Dataset):
    def __init__(self, dataset, times):
        self.dataset, self.times = dataset, times

    def __len__(self):
        return self.times * len(self.dataset)

    def __getitem__(self, index):
        return self.dataset[index % len(self.dataset)]


def collate_train(batch):
    return (torch.stack([b["img"] for b in batch]), [b["gt_bboxes"] for b in batch], [b["gt_labels"] for b in batch])


class ImageListDataset(Dataset):
    """Test-time images: BGR uint8 resized to ``input_size`` (w, h), plus the scale back to the original.

    Normalisation happens inside the model (see ``InferenceModel``), so PyTorch and OpenVINO get the
    same input.
    """

    def __init__(self, paths, input_size, keys=None):
        self.paths = list(paths)
        self.keys = list(keys) if keys is not None else list(range(len(self.paths)))
        self.input_size = tuple(input_size)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        img = read_image(self.paths[index])
        h, w = img.shape[:2]
        resized = resize_image(img, self.input_size)
        scale = (self.input_size[0] / w, self.input_size[1] / h)
        return self.keys[index], resized, scale


def collate_test(batch):
    keys = [b[0] for b in batch]
    imgs = torch.from_numpy(np.stack([b[1] for b in batch])).permute(0, 3, 1, 2).float()
    scales = torch.tensor([b[2] for b in batch], dtype=torch.float32)
    return keys, imgs, scales
