"""Dataset formats, above ``data/`` (our COCO reader, images, transforms): ``convert.load_dataset``, the one
reader of a dataset in any format (COCO json, or a Datumaro format converted to our COCO form, with its
flags, shapes and subsets), the Datumaro export of ``tools/convert_dataset.py``, and WIDER FACE's own files
(``wider``: the ground truth txt and the official val ``.mat`` files)."""
