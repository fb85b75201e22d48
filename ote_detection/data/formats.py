"""Face datasets in any common format, read through Datumaro (OpenVINO's dataset library) into our COCO dict.

``--data-format NAME`` takes Datumaro's format names: ``voc`` / ``voc_detection`` (Pascal VOC), ``yolo``,
``cvat``, ``wider_face``, ``kitti``, ``datumaro``, ``coco_instances``, ... (``datumaro.Environment().importers``
lists them). ``coco`` (the default) is our own reader, ``data.coco.load_coco_files``, with no Datumaro import.

With a Datumaro format each ``--*-ann-files`` entry is a dataset as Datumaro imports it (its folder, or for
some formats the annotation file) and ``--*-data-roots`` is not given: the images are where the dataset
says. ``prepare_datasets`` converts each into our in-memory COCO dict (``datumaro_to_coco``): the category
named ``face`` (found by name; a dataset without one is one line listing its categories), every bounding
box with its attributes, image paths and sizes as Datumaro reports them. The dict is written to a COCO
json in a temporary folder (removed when the process ends) and read back by ``load_coco_files``: the
same checks (files present, headers readable, sizes, boxes degenerate, outside, clipped, duplicated,
other categories counted) apply whatever the format.

WIDER FACE's txt (``wider_face``): Datumaro's importer gives the same boxes as ``data.wider`` (all 39,708 of
wider_face_val_bbx_gt.txt, the 10 of zero size and the one of negative size included; a negative size is
dropped here, as OTE's converter did) but names three of the six attribute columns wrongly (it reads the
file's ``invalid occlusion pose`` as ``occluded pose invalid``): they are renamed back by column here.
It also accepts a file cut short without a word (a count of 2 boxes followed by 1 line gives 1 box);
``tools/wider_to_coco.py`` keeps our parser, which names the file and line of such damage.
"""

import atexit
import json
import logging
import os
import shutil
import tempfile

from ..utils.errors import OteError
from .coco import check_data_flags, split_paths

log = logging.getLogger(__name__)

COCO = "coco"
# Datumaro's wider_face column names, in file order, -> the file's own (WIDER FACE readme)
_WIDER_COLUMNS = {"occluded": "invalid", "pose": "occlusion", "invalid": "pose"}
_WIDER_ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")


def is_coco(data_format):
    return data_format in (None, "", COCO)


def _datumaro():
    try:
        import datumaro as dm
    except ImportError as exc:
        raise OteError(f"--data-format other than coco needs Datumaro: pip install datumaro ({exc})") from exc
    return dm


def _first_line(exc):
    text = str(exc).strip()
    cause = exc.__cause__
    if cause is not None and str(cause).strip():
        text = f"{text} {str(cause).strip()}"
    return text.splitlines()[0] if text else type(exc).__name__


def _number(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return float(value)
        except (TypeError, ValueError):
            return value


def datumaro_to_coco(path, data_format, classes=("face",)):
    """The dataset at ``path`` in Datumaro format ``data_format`` as a COCO dict (``file_name`` absolute
    image paths; categories: all of the dataset's labels, ids 1..n; boxes as [x, y, w, h] with their
    attributes). One OteError line when it cannot be read or has no category named as ``classes``."""
    dm = _datumaro()
    if not os.path.exists(path):
        raise OteError(f"{path}: dataset not found (--data-format {data_format})")
    logging.getLogger("datumaro").setLevel(logging.ERROR)
    try:
        dataset = dm.Dataset.import_from(path, data_format)
    except KeyError as exc:
        known = sorted(dm.Environment().importers)
        raise OteError(f"--data-format {data_format}: not a Datumaro format (e.g. {', '.join(known[:12])}, ...)") from exc
    except Exception as exc:  # Datumaro raises many kinds of errors for a dataset it cannot read
        raise OteError(f"{path}: cannot be read as a {data_format} dataset ({_first_line(exc)})") from exc
    label_cat = dataset.categories().get(dm.AnnotationType.label)
    names = [c.name for c in label_cat.items] if label_cat is not None else []
    if not any(c in names for c in classes):
        raise OteError(f"{path}: no category named {' or '.join(repr(c) for c in classes)} "
                       f"({data_format} dataset; categories: {sorted(names)})")
    coco = {"images": [], "annotations": [],
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}
    wider = data_format == "wider_face"
    for item in dataset:
        media = item.media
        image_path = getattr(media, "path", None)
        if not image_path:
            raise OteError(f"{path}: item {item.id} has no image ({data_format} dataset)")
        image = {"id": len(coco["images"]) + 1, "file_name": os.path.abspath(image_path),
                 "datumaro_id": str(item.id), "subset": str(item.subset)}
        size = None
        try:
            size = media.size if getattr(media, "has_size", False) else None
        except Exception:  # noqa: BLE001 - a size Datumaro cannot tell is read from the header later
            size = None
        if size:
            image.update(height=int(size[0]), width=int(size[1]))
        coco["images"].append(image)
        for ann in item.annotations:
            if ann.type != dm.AnnotationType.bbox or ann.label is None:
                continue
            x, y, w, h = (float(v) for v in ann.get_bbox())
            if wider and (w < 0 or h < 0):
                continue  # as OTE's WIDER converter (data.wider): a negative size is dropped
            attrs = {(_WIDER_COLUMNS.get(k, k) if wider else k): _number(v) for k, v in ann.attributes.items()}
            entry = {"id": len(coco["annotations"]) + 1, "image_id": image["id"], "category_id": int(ann.label) + 1,
                     "bbox": [x, y, w, h], "area": max(w, 0.0) * max(h, 0.0),
                     "iscrowd": int(bool(attrs.pop("is_crowd", 0) or 0))}
            entry.update({k: v for k, v in attrs.items() if k not in entry})
            coco["annotations"].append(entry)
    if not coco["images"]:
        raise OteError(f"{path}: no images in this {data_format} dataset")
    return coco


_TMP = []


def _tmp_dir():
    if not _TMP:
        folder = tempfile.mkdtemp(prefix="ote_face_datasets_")
        _TMP.append(folder)
        atexit.register(shutil.rmtree, folder, True)
    return _TMP[0]


def prepare_datasets(ann_files, data_roots, data_format=COCO, classes=("face",), prefix="--train"):
    """``(ann_files, data_roots)`` that ``load_coco_files`` reads: unchanged for ``coco`` (no Datumaro
    import); for another format each dataset in ``ann_files`` converted into a COCO json (temporary
    folder), with ``/`` as its data root (the image paths are absolute). ``prefix``: of the flags, for
    the messages (``--train``, ``--val``, ``--test``)."""
    if is_coco(data_format):
        check_data_flags(ann_files, data_roots, prefix)  # a half-given pair is one line naming the flag
        return ann_files, data_roots
    if not ann_files:
        return ann_files, data_roots
    if data_roots:
        raise OteError(f"--data-format {data_format}: give each dataset (its folder, or file) with {prefix}-ann-files; "
                       f"{prefix}-data-roots is for COCO files only")
    out_files = []
    for path in split_paths(ann_files):
        coco = datumaro_to_coco(path, data_format, classes)
        json_path = os.path.join(_tmp_dir(), f"{len(os.listdir(_tmp_dir())):03d}_{data_format}.json")
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(coco, f)
        log.info("%s: %d image(s), %d box(es) read as %s", path, len(coco["images"]), len(coco["annotations"]),
                 data_format)
        out_files.append(json_path)
    return out_files, [os.path.abspath(os.sep)] * len(out_files)


def write_coco(coco, out_json):
    """Write ``coco`` (from ``datumaro_to_coco``) as a COCO json whose ``file_name`` is relative to the
    json's folder (give that folder as --*-data-roots)."""
    folder = os.path.dirname(os.path.abspath(out_json))
    os.makedirs(folder, exist_ok=True)
    images = [dict(img, file_name=os.path.relpath(img["file_name"], folder).replace(os.sep, "/"))
              for img in coco["images"]]
    tmp = out_json + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(dict(coco, images=images), f)
    os.replace(tmp, out_json)
    return out_json


def coco_to_datumaro(coco):
    """A ``datumaro.Dataset`` of a COCO dict (``file_name`` or ``path`` absolute image paths): bounding boxes
    with their labels (the dict's category names) and attributes; used to write any Datumaro format."""
    dm = _datumaro()
    cats = sorted(coco["categories"], key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(cats)}
    by_image = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    skip = {"id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation"}
    items = []
    for img in coco["images"]:
        path = img.get("path") or img["file_name"]
        boxes = [dm.Bbox(*[float(v) for v in ann["bbox"]], label=index[ann["category_id"]],
                         attributes={k: v for k, v in ann.items() if k not in skip and isinstance(v, (int, float, str, bool))})
                 for ann in by_image.get(img["id"], [])]
        name = os.path.splitext(os.path.basename(path))[0]
        items.append(dm.DatasetItem(id=name, subset="default", media=dm.Image.from_file(path=path),
                                    annotations=boxes))
    return dm.Dataset.from_iterable(items, categories=[c["name"] for c in cats])


def export_with_datumaro(coco, out_dir, data_format, save_media=True):
    """Write ``coco`` (a COCO dict with absolute image paths) as a ``data_format`` dataset in ``out_dir``."""
    dataset = coco_to_datumaro(coco)
    try:
        dataset.export(out_dir, data_format, save_media=save_media)
    except KeyError as exc:
        raise OteError(f"--to {data_format}: not a Datumaro export format") from exc
    return out_dir
