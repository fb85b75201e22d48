"""COCO-format face datasets: one or several annotation files (each with its image root), merged."""

import json
import logging
import math
import os

import numpy as np
import torch
from torch.utils.data import Dataset

from ..utils.errors import OteError
from .checks import check_images as _check_images
from .images import probe_image, read_image
from .transforms import Compose

log = logging.getLogger(__name__)


_TRUE = frozenset(("1", "true", "yes", "y", "t", "on"))
_FALSE = frozenset(("0", "false", "no", "n", "f", "off", "none", ""))


def flag_value(value):
    """An attribute value read by its meaning: a bool as it is; a number: not 0; a string: '1', 'true', 'yes',
    'y', 't', 'on' are true and '0', 'false', 'no', 'n', 'f', 'off', 'none', '' false (any case), another
    number string: not 0. None for anything else (e.g. 'maybe'). Datumaro gives VOC's and CVAT's
    <attribute> values as strings: a Datumaro-written VOC of a COCO set has is_crowd = "False"."""
    if isinstance(value, bool) or value is None:
        return bool(value)
    if isinstance(value, (int, float)):
        return None if isinstance(value, float) and math.isnan(value) else value != 0
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    try:
        number = float(text)
    except ValueError:
        return None
    return None if math.isnan(number) else number != 0

def split_paths(value):
    """The paths of a --*-ann-files / --*-data-roots value: 'a,b' -> ['a', 'b'] (the comma-separated form);
    a list (the flag repeated) -> each item's paths, in order. An item that exists as it is (a file or
    folder whose name holds a comma) is one path; any other item is split on commas. None -> []."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for item in items:
        item = str(item)
        out.extend([item] if os.path.exists(item) else [v for v in item.split(",") if v])
    return out


def check_data_flags(ann_files, data_roots, prefix):
    """One line when a ``{prefix}-ann-files`` / ``{prefix}-data-roots`` pair is given half (e.g. prefix
    '--test'): the missing flag is named."""
    if split_paths(ann_files) and not split_paths(data_roots):
        raise OteError(f"{prefix}-data-roots is missing: give the image folder of each {prefix}-ann-files file "
                       f"({', '.join(split_paths(ann_files))}), comma-separated in the same order")
    if split_paths(data_roots) and not split_paths(ann_files):
        raise OteError(f"{prefix}-ann-files is missing: {prefix}-data-roots ({', '.join(split_paths(data_roots))}) "
                       f"needs the COCO annotation file that lists its images")


def _id_type_mismatch(ann_ids, image_ids):
    """'annotation 1 -> image_id 0 (int), but the images' ids are str, e.g. '0'' when the ids differ
    only in type (JSON 0 vs "0"), else None."""
    by_text = {str(i): i for i in image_ids}
    for ann_id, ref in ann_ids:
        match = by_text.get(str(ref))
        if match is not None and type(match) is not type(ref):
            return (f"annotation {ann_id} -> image_id {ref!r} ({type(ref).__name__}), but the images' ids are "
                    f"{type(match).__name__}s, e.g. {match!r}: JSON {json.dumps(ref)} and {json.dumps(match)} "
                    "differ; make the types agree")
    return None


def real_path(path, real_dirs):
    """``os.path.realpath(path)``, with the real paths of folders kept in ``real_dirs`` ({folder: real
    path}): a file in a folder seen before costs one lstat, not one per path component."""
    folder, name = os.path.split(path)
    real_folder = real_dirs.get(folder)
    if real_folder is None:
        real_folder = real_dirs[folder] = os.path.realpath(folder)
    joined = os.path.join(real_folder, name)
    return os.path.realpath(joined) if os.path.islink(joined) else joined


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


def _finite_number(value):
    """float(value) for a finite JSON number; None for NaN, infinity, strings, booleans, null."""
    kind = type(value)  # the two kinds JSON numbers are, first (called for every box value)
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is int:
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


_SAID = set()


def _say_once(level, msg, *args):
    """Log a data warning once per process (the same files are loaded by several steps of a run)."""
    text = msg % args
    if text not in _SAID:
        _SAID.add(text)
        log.log(level, text)


def load_coco_files(ann_files, img_roots, classes=("face",), require_boxes=True, check_images=True, flags=None,
                    quiet=False):
    """Merge COCO files into one COCO dict with new, unique image and annotation ids.

    Every image gets ``path`` (root + file_name). Category ids are remapped to 1..len(classes) by
    name; annotations of other categories are dropped (counted, said once). Every field our tools
    rely on is checked against the data it describes; a problem is one OteError naming the file,
    with a count and an example:

    * images: ``id`` and ``file_name`` present, ids unique, no image listed twice (in one file or
      across the merged files: it would count twice in AP), the file exists and its header decodes
      (``data.checks``: truncated JPEG/PNG are found here, before training), ``width``/``height`` equal
      the real size (read from the header when absent);
    * annotations: ids unique, ``image_id`` known, ``category_id`` present and declared in
      ``categories``, ``bbox`` = 4 finite numbers, no negative size, not entirely outside the image.

    Boxes reaching past the image border are clipped (counted, said once). Boxes of zero width or
    height (WIDER FACE's own ground truth has 10 of them) are kept, counted and said once: training
    skips them (``CocoDataset``, w or h < 1, as mmdetection), and COCO AP keeps OTE's semantics for
    them: OTE evaluated with pycocotools on the annotation file as it is, where a zero-area box with
    iscrowd 0 is a ground-truth face no detection can match (IoU 0), i.e. a missed face.
    Exact duplicate boxes are counted and said once (they are in WIDER FACE's val set too).
    ``require_boxes``: no box of ``classes`` at all is an error (AP would be undefined: nan).
    ``check_images``: False reads no image file where the JSON gives width/height (they are taken as
    they are: e.g. a DDP process whose parent checked the same files), and only the header elsewhere.
    No image is decoded here either way: start-up costs a header read per image (~0.1 ms), and damage
    inside the pixel data is found when the image is first decoded (``data.images.read_image``, one
    line naming the file).
    ``quiet``: say nothing (the data was loaded and reported before, e.g. by the parent process of DDP
    training processes).
    ``flags``: the command-line prefix of the pair (e.g. '--test'), named when one of them is missing.

    An image with an EXIF orientation is read as displayed (``data.images``); boxes are read in that
    frame. A width/height equal to the stored (unrotated) size is an error naming the orientation; an
    orientation the sizes cannot confirm (180 degrees, mirrors, square images) is said once, counted.
    """
    say = (lambda *a: None) if quiet else _say_once
    if flags:
        check_data_flags(ann_files, img_roots, flags)
    ann_files, img_roots = split_paths(ann_files), split_paths(img_roots)
    if not ann_files:
        raise OteError(f"no annotation file given{f' ({flags}-ann-files)' if flags else ''}")
    if not img_roots:
        raise OteError(f"no image folder given for {', '.join(ann_files)}"
                       f"{f' ({flags}-data-roots is missing)' if flags else ''}")
    if len(ann_files) != len(img_roots):
        raise OteError(f"{len(ann_files)} annotation file(s) but {len(img_roots)} data root(s): give one root per file")
    merged = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": c} for i, c in enumerate(classes)]}
    clipped, zero_size, other_category, duplicates, unconfirmed = 0, [], 0, [], []
    boxes_read, corner_like = 0, 0  # boxes whose [x, y, w, h] reads as well as corners [x1, y1, x2, y2]
    seen_paths = {}
    for ann_file, root in zip(ann_files, img_roots):
        data = _load_json(ann_file)
        if not os.path.isdir(root):
            raise OteError(f"{root}: image folder not found (data root of {ann_file})")
        categories = data.get("categories") or []
        if not isinstance(categories, list) or not all(isinstance(c, dict) and "id" in c for c in categories):
            raise OteError(f"{ann_file}: 'categories' must be a list of {{'id', 'name'}} entries")
        cats = {c["id"]: c.get("name") for c in categories}
        cat_map = {cid: classes.index(name) + 1 for cid, name in cats.items() if name in classes}
        if not cat_map:
            raise OteError(f"{ann_file}: no category named {' or '.join(repr(c) for c in classes)} "
                           f"(categories: {sorted(str(v) for v in cats.values())})")
        if not isinstance(data["images"], list) or not all(isinstance(i, dict) for i in data["images"]):
            raise OteError(f"{ann_file}: 'images' must be a list of image entries")
        # images: fields, unique ids, no image twice
        by_id, dup_ids, dup_files, real_dirs = {}, [], [], {}
        for img in data["images"]:
            for key in ("id", "file_name"):
                if key not in img:
                    raise OteError(f"{ann_file}: an image entry has no '{key}' (e.g. {json.dumps(img)[:120]})")
            if img["id"] in by_id:
                dup_ids.append(img["id"])
            by_id[img["id"]] = img
            path = os.path.join(root, str(img["file_name"]))
            real = real_path(path, real_dirs)
            if real in seen_paths:
                dup_files.append((img["file_name"], seen_paths[real]))
            else:
                seen_paths[real] = (ann_file, img["id"])
        if dup_ids:
            raise OteError(f"{ann_file}: {len(dup_ids)} image id(s) used more than once, e.g. {dup_ids[0]}")
        if dup_files:
            name, (first_file, first_id) = dup_files[0]
            where = "" if first_file == ann_file else f" (first in {first_file})"
            raise OteError(f"{ann_file}: {len(dup_files)} image(s) listed more than once, e.g. {name}{where}: each "
                           f"would count twice; list every image once")
        paths = [os.path.join(root, str(img["file_name"])) for img in data["images"]]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise OteError(f"{missing[0]}: image file not found{more} (listed in {ann_file})")
        infos = _check_images(paths, what=ann_file) if check_images else {}
        id_map, wrong_size = {}, []
        for img, path in zip(data["images"], paths):
            new = dict(img, id=len(merged["images"]) + 1, path=path, source_id=img["id"], source=ann_file)
            info = infos.get(path)
            if info is None and ("width" not in img or "height" not in img):
                info = probe_image(path)  # check_images=False: the size from the header all the same
            real = info.size if info is not None else None
            confirmed = False
            if "width" in img or "height" in img:
                w, h = _finite_number(img.get("width")), _finite_number(img.get("height"))
                if w is None or h is None or w <= 0 or h <= 0:
                    raise OteError(f"{ann_file}: image {img['file_name']} has width/height "
                                   f"{img.get('width')!r}/{img.get('height')!r}, not positive numbers")
                if real is not None and (int(w), int(h)) != tuple(real):
                    if info.orientation != 1 and (int(w), int(h)) == info.stored:
                        wrong_size.append(
                            f"{img['file_name']} has {info.describe_orientation()}: {int(w)}x{int(h)} in the file is "
                            f"its stored size, but the tools read it as displayed, {real[0]}x{real[1]} (EXIF applied, "
                            "as cv2.imread and image viewers do), and read its boxes in that frame; if the boxes were "
                            "drawn on the stored pixels, remove the tag (e.g. exiftool -Orientation=1 -n FILE) "
                            "or give the displayed size and boxes")
                    else:
                        wrong_size.append(f"{img['file_name']} ({int(w)}x{int(h)} in the file, {real[0]}x{real[1]} "
                                          "real)")
                confirmed = real is not None and real[0] != real[1] and info.orientation in (5, 6, 7, 8)
            if real is not None:
                new.update(width=real[0], height=real[1])
            if info is not None and info.orientation != 1 and not confirmed:
                unconfirmed.append(f"{img['file_name']} ({info.describe_orientation()})")
            id_map[img["id"]] = new
            merged["images"].append(new)
        if wrong_size:
            raise OteError(f"{ann_file}: {len(wrong_size)} image(s) whose width/height differ from the image file, "
                           f"e.g. {wrong_size[0]}" + ("" if "EXIF orientation" in wrong_size[0] else
                                                      ": the boxes may be of another image size"))
        if unconfirmed:
            say(logging.WARNING, "%s: %d image(s) carry an EXIF orientation that width/height cannot confirm, "
                "e.g. %s: boxes are read in the frame as displayed (EXIF applied, as cv2.imread and image "
                "viewers do); if they were drawn on the stored pixels, remove the tag (e.g. exiftool "
                "-Orientation=1 -n FILE)", ann_file, len(unconfirmed), unconfirmed[0])
            unconfirmed = []
        # annotations
        anns = data.get("annotations", [])
        if not isinstance(anns, list) or not all(isinstance(a, dict) for a in anns):
            raise OteError(f"{ann_file}: 'annotations' must be a list of annotation entries")
        no_cat = [a.get("id") for a in anns if "category_id" not in a]
        if no_cat:
            raise OteError(f"{ann_file}: {len(no_cat)} annotation(s) without category_id, e.g. id {no_cat[0]}")
        unknown_cat = [a for a in anns if a["category_id"] not in cats]
        if unknown_cat:
            raise OteError(f"{ann_file}: {len(unknown_cat)} annotation(s) with a category_id not in 'categories', "
                           f"e.g. id {unknown_cat[0].get('id')} (category_id {unknown_cat[0]['category_id']!r})")
        ann_ids = [a["id"] for a in anns if "id" in a]
        if len(set(map(str, ann_ids))) != len(ann_ids):
            seen, again = set(), []
            for i in ann_ids:
                if str(i) in seen:
                    again.append(i)
                seen.add(str(i))
            raise OteError(f"{ann_file}: {len(again)} annotation id(s) used more than once, e.g. {again[0]}")
        bad_box, negative, outside, unknown_img = [], [], [], []
        boxes_seen = set()
        for ann in anns:
            if ann["category_id"] not in cat_map:
                other_category += 1
                continue
            img = id_map.get(ann.get("image_id"))
            if img is None:
                unknown_img.append(ann)
                continue
            box = ann.get("bbox")
            values = [_finite_number(v) for v in box] if isinstance(box, (list, tuple)) and len(box) == 4 else None
            if values is None or None in values:
                bad_box.append(ann)
                continue
            x, y, w, h = values
            if w < 0 or h < 0:
                negative.append(ann)
                continue
            W, H = img["width"], img["height"]
            boxes_read += 1
            corner_like += x < w <= W and y < h <= H
            if x > W or y > H or x + w < 0 or y + h < 0 or (w > 0 and (x >= W or x + w <= 0)) or (
                    h > 0 and (y >= H or y + h <= 0)):
                outside.append(ann)
                continue
            x1, y1 = max(x, 0.0), max(y, 0.0)
            x2, y2 = min(x + w, W), min(y + h, H)
            if (x1, y1, x2, y2) != (x, y, x + w, y + h):
                clipped += 1
            if x2 - x1 <= 0 or y2 - y1 <= 0:
                zero_size.append(f"{img['file_name']} {[x, y, w, h]}")
            key = (img["id"], x1, y1, x2, y2)
            if key in boxes_seen:
                duplicates.append(f"{img['file_name']} {[x, y, w, h]}")
            boxes_seen.add(key)
            # pycocotools scores a box by its iscrowd alone (COCOeval._prepare overwrites 'ignore' with it):
            # an 'ignore' flag is folded in, so evaluation and training leave out the same boxes
            crowd = [flag_value(ann.get(key, 0)) for key in ("iscrowd", "ignore")]
            if None in crowd:
                key = ("iscrowd", "ignore")[crowd.index(None)]
                raise OteError(f"{ann_file}: annotation id {ann.get('id')} has {key} = {ann.get(key)!r}, neither true "
                               "nor false (0/1, true/false)")
            crowd = any(crowd)
            merged["annotations"].append(dict(
                ann, id=len(merged["annotations"]) + 1, image_id=img["id"], category_id=cat_map[ann["category_id"]],
                bbox=[x1, y1, x2 - x1, y2 - y1], area=(x2 - x1) * (y2 - y1), iscrowd=int(crowd)))
        if unknown_img:
            a = unknown_img[0]
            mismatch = _id_type_mismatch([(x.get("id"), x.get("image_id")) for x in unknown_img], id_map)
            if mismatch:
                raise OteError(f"{ann_file}: {len(unknown_img)} annotation(s) refer to their image by an id of "
                               f"another type, e.g. {mismatch}")
            raise OteError(f"{ann_file}: {len(unknown_img)} annotation(s) refer to unknown images, e.g. annotation "
                           f"{a.get('id')} -> image {a.get('image_id')!r}")
        if bad_box:
            a = bad_box[0]
            raise OteError(f"{ann_file}: {len(bad_box)} annotation(s) without a valid bbox (4 finite numbers "
                           f"[x, y, w, h]), e.g. annotation {a.get('id')}: {json.dumps(a.get('bbox'))}")
        if negative:
            a = negative[0]
            img = id_map[a["image_id"]]
            raise OteError(f"{ann_file}: {len(negative)} annotation(s) with a bbox of negative size, e.g. annotation "
                           f"{a.get('id')} of {img['file_name']}: {a['bbox']}")
        if outside:
            a = outside[0]
            img = id_map[a["image_id"]]
            raise OteError(f"{ann_file}: {len(outside)} annotation(s) lie outside their image, e.g. annotation "
                           f"{a.get('id')} of {img['file_name']} ({img['width']}x{img['height']}): {a['bbox']}")
    if clipped:
        corners = ("; every box looks like corner coordinates [x1, y1, x2, y2] (w > x and h > y): COCO's bbox is "
                   "[x, y, width, height]" if corner_like == boxes_read else "")
        say(logging.WARNING, "%d box(es) reached past the image border and were clipped (%s)%s", clipped,
                  ", ".join(ann_files), corners)
    if zero_size:
        say(logging.WARNING, "%d box(es) of zero width or height, e.g. %s: not used for training; COCO AP "
                  "counts them as faces no detection can match, as OTE's evaluation did (%s)", len(zero_size),
                  zero_size[0], ", ".join(ann_files))
    if duplicates:
        say(logging.WARNING, "%d box(es) listed twice on the same image, e.g. %s (%s)", len(duplicates),
                  duplicates[0], ", ".join(ann_files))
    if other_category:
        say(logging.INFO, "%d annotation(s) of other categories than %s are not used (%s)", other_category,
                  "/".join(classes), ", ".join(ann_files))
    if require_boxes and not merged["annotations"]:
        raise OteError(f"{', '.join(ann_files)}: no {'/'.join(classes)} box in "
                       f"{len(merged['images'])} image(s): nothing to train or evaluate on (AP would be undefined)")
    return merged


class CocoDataset(Dataset):
    """Training dataset: pipeline output with ``img`` [3, H, W], ``gt_bboxes`` [N, 4], ``gt_labels`` [N].

    ``min_size``: boxes narrower or shorter than this (in original pixels) are not used as targets (OTE).
    ``filter_empty_gt``: images without usable boxes are dropped (mmdetection's default); set False
    (``data.train.filter_empty_gt`` in model.py) to keep them as negatives (every anchor a background
    target). What is left out, and why, is said in one line (``summary``); ``quiet``: not said (a DDP
    process whose parent said it). ``check_images``: as ``load_coco_files``. ``items``: (path, boxes
    [N, 4] float32, labels [N] int64, (width, height)) per image; ``coco``: the merged COCO dict.
    """

    def __init__(self, ann_files, img_roots, pipeline, classes=("face",), min_size=None, filter_empty_gt=True,
                 quiet=False, check_images=True):
        self.coco = load_coco_files(ann_files, img_roots, tuple(classes), check_images=check_images, quiet=quiet)
        self.pipeline = Compose(pipeline)
        by_image = {img["id"]: [] for img in self.coco["images"]}
        for ann in self.coco["annotations"]:
            by_image[ann["image_id"]].append(ann)
        self.items = []
        # faces left out, by reason; zero-size boxes are said (once) by load_coco_files and not counted here
        faces, sub_pixel, crowd, small, no_face, no_usable = 0, 0, 0, 0, 0, 0
        for img in self.coco["images"]:
            boxes, labels = [], []
            for ann in by_image[img["id"]]:
                x, y, w, h = ann["bbox"]
                if w <= 0 or h <= 0:
                    continue
                faces += 1
                if w < 1 or h < 1:
                    sub_pixel += 1
                elif ann["iscrowd"]:  # iscrowd or ignore (folded in when read)
                    crowd += 1
                elif min_size is not None and (w < min_size or h < min_size):
                    small += 1
                else:
                    boxes.append([x, y, x + w, y + h])
                    labels.append(ann["category_id"] - 1)
            if not boxes:
                if by_image[img["id"]]:
                    no_usable += 1
                else:
                    no_face += 1
                if filter_empty_gt:
                    continue
            self.items.append((img["path"], np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64),
                               (img["width"], img["height"])))
        used = sum(len(item[1]) for item in self.items)
        files = ", ".join(split_paths(ann_files))
        left = []
        if filter_empty_gt and no_face + no_usable:
            why = " and ".join(t for t in (f"{no_face} without a face" if no_face else "",
                                           f"{no_usable} whose faces are all left out" if no_usable else "") if t)
            left.append(f"{no_face + no_usable} image(s) ({why}; filter_empty_gt=True: set data.train's "
                        f"filter_empty_gt=False in model.py to keep them as negatives)")
        if small:
            left.append(f"{small} face(s) under min_size={min_size:g} px wide or high (data.train's min_size in "
                        f"model.py, original pixels)")
        if sub_pixel:
            left.append(f"{sub_pixel} face(s) under 1 px wide or high (as mmdetection)")
        if crowd:
            left.append(f"{crowd} crowd/ignore box(es)")
        self.summary = (f"training data ({files}): {len(self.items)} of {len(self.coco['images'])} image(s) and "
                        f"{used} of {faces} face(s) used"
                        + (f" ({no_face + no_usable} without a usable face kept as negatives: filter_empty_gt=False)"
                           if not filter_empty_gt and no_face + no_usable else "")
                        + ("; left out: " + "; ".join(left) if left else ""))
        if not quiet:
            _say_once(logging.WARNING if (small or sub_pixel or (filter_empty_gt and no_face + no_usable))
                      else logging.INFO, "%s", self.summary)
        if not used:
            raise OteError(f"{files}: no image with usable face boxes (min_size={min_size})")

    def __getstate__(self):
        """A pickled copy (a spawned DDP process, a spawned data-loader worker) leaves out ``coco``, the merged
        COCO dict: training reads ``items`` (5,000 WIDER-size images: 1.5 MB instead of 8.5 MB)."""
        return dict(self.__dict__, coco=None)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        path, boxes, labels, (width, height) = self.items[index]
        return self.pipeline({"filename": path, "img_info": {"width": width, "height": height},
                              "gt_bboxes": boxes.copy(), "gt_labels": labels.copy()})


class RepeatDataset(Dataset):
    def __init__(self, dataset, times):
        self.dataset, self.times = dataset, times

    def __len__(self):
        return self.times * len(self.dataset)

    def __getitem__(self, index):
        return self.dataset[index % len(self.dataset)]


def collate_train(batch):
    return (torch.stack([b["img"] for b in batch]), [b["gt_bboxes"] for b in batch], [b["gt_labels"] for b in batch])


class FrameDataset(Dataset):
    """Test-time frames: ``(key, BGR uint8 [H, W, 3])`` at the original size (predictors resize)."""

    def __init__(self, paths, keys=None):
        self.paths = list(paths)
        self.keys = list(keys) if keys is not None else list(range(len(self.paths)))

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        return self.keys[index], read_image(self.paths[index])


def collate_frames(batch):
    return [b[0] for b in batch], [b[1] for b in batch]
