"""argparse ``type=`` functions: every numeric, size and path argument is checked when parsed.

Every CLI builds its parser with ``ArgumentParser`` (below): a bad value ends in one line
(``prog: error: argument --epochs: ... (see prog --help)``) and exit code 2, before anything is loaded. The values are used as given: 0 stays 0 (never replaced by a
default because it is falsy).
"""

import argparse
import math
import os

__all__ = ["ArgumentParser", "add_path_list_arg", "bounded_int", "positive_int", "non_negative_int", "positive_float", "non_negative_float",
           "input_size", "input_size_or_width", "seed", "add_subset_arg", "existing_file", "existing_dir", "output_dir", "output_file"]


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line, ``PROG: error: MESSAGE (see PROG --help)``,
    exit code 2 (argparse's own prints the whole usage first). ``formatter_class`` defaults to
    ``RawDescriptionHelpFormatter`` (the scripts' docstrings are their descriptions, examples included)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(text, kind):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _at_least(kind, minimum, strict, message):
    """An argparse type: a number of ``kind`` >= ``minimum`` (> with ``strict``), else ``message``."""
    def check(text):
        value = _number(text, kind)
        if value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"{text!r}: {message}")
        return value
    return check


def bounded_int(low, high):
    """An argparse type: an integer in ``low..high`` (a count whose cost grows with it, bounded before work)."""
    def check(text):
        value = _number(text, int)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r}: must be between {low} and {high}")
        return value
    return check


positive_int = _at_least(int, 0, True, "must be a positive integer (1 or more)")
non_negative_int = _at_least(int, 0, False, "must be 0 or more")
positive_float = _at_least(float, 0.0, True, "must be greater than 0")
non_negative_float = _at_least(float, 0.0, False, "must be 0 or more")


MIN_SIDE, MAX_SIDE = 32, 8192
# counts whose cost (processes, threads, buffers) grows with the value: bounded when parsed
MAX_WORKERS = 64  # data-loading processes per training process
MAX_THREADS = 1024  # inference threads
MAX_JOBS = 64  # OpenVINO inference requests in flight (demo)
MAX_BATCH_MPX = 128  # network input pixels of one batch, in millions: 1.5 GB of float input before any
#                      activation; one 8192x8192 image (67 Mpx) fits, 13x the largest template default (0202: 65 x 384^2)


def check_batch_pixels(batch_size, input_size, given=None, flag="--batch-size"):
    """``ValueError`` (a one-line message) when ``batch_size`` images of ``input_size`` (w, h) exceed
    ``MAX_BATCH_MPX`` million input pixels; checked before any work. ``given``: the flag's value when the
    batch is smaller (a data set smaller than the batch)."""
    w, h = (int(v) for v in input_size)
    mpx = int(batch_size) * w * h / 1e6
    if mpx > MAX_BATCH_MPX:
        what = f"{flag} {given} ({batch_size} images a batch here)" if given not in (None, batch_size) \
            else f"{flag} {batch_size}"
        raise ValueError(f"{what} at input {w}x{h} is {mpx:.0f} Mpx a batch, over the bound of {MAX_BATCH_MPX} "
                         f"Mpx; give {flag} {max(1, int(MAX_BATCH_MPX * 1e6 // (w * h)))} or less")


def _side(part, text):
    try:
        value = int(part)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: give W or WxH in pixels, e.g. 128 or 160x128") \
            from None
    if value < MIN_SIDE or value > MAX_SIDE:
        raise argparse.ArgumentTypeError(f"{text!r}: each side must be between {MIN_SIDE} and {MAX_SIDE} pixels")
    return value


def _parse_size(text, allow_width_only):
    t = str(text).strip().lower()
    if allow_width_only and t.endswith("x") and t.count("x") == 1:
        return _side(t[:-1], text), None
    parts = t.split("x")
    if len(parts) == 1:
        side = _side(parts[0], text)
        return side, side
    if len(parts) == 2:
        return _side(parts[0], text), _side(parts[1], text)
    raise argparse.ArgumentTypeError(f"{text!r} is not a size: give W or WxH in pixels, e.g. 128 or 160x128")


def input_size(text):
    """'128' -> (128, 128); '160x128' -> (160, 128) (width x height). Each side 32..8192. A plain pair: the
    library takes it as ``artefacts.input_size.InputSize.of``."""
    return _parse_size(text, allow_width_only=False)


def input_size_or_width(text):
    """As ``input_size``, and also 'Wx' -> (W, None): width given, height from the frames' aspect ratio."""
    return _parse_size(text, allow_width_only=True)


def seed(text):
    value = _number(text, int)
    if not 0 <= value < 2 ** 32:
        raise argparse.ArgumentTypeError(f"{text!r}: must be between 0 and 2**32 - 1")
    return value


def existing_file(text):
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"{text}: file not found")
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text}: is a folder, not a file")
    if not os.access(text, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text}: not readable")
    return text


def existing_dir(text):
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text}: " + ("is a file, not a folder" if os.path.exists(text)
                                                        else "folder not found"))
    return text


def _first_existing_parent(path):
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def output_dir(text):
    """A folder to write into: existing folder, or creatable (nearest existing parent is a folder)."""
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text}: exists and is not a folder")
    base = _first_existing_parent(text)
    if not os.path.isdir(base):
        raise argparse.ArgumentTypeError(f"{text}: cannot be created, {base} is a file")
    return text


def output_file(text):
    """A file to write: not a folder; its nearest existing parent is a folder."""
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text}: is a folder; give a file name")
    base = _first_existing_parent(os.path.dirname(os.path.abspath(text)))
    if not os.path.isdir(base):
        raise argparse.ArgumentTypeError(f"{text}: cannot be created, {base} is a file")
    return text


def fraction(text):
    """A number in [0, 1)."""
    value = _number(text, float)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not in [0, 1)")
    return value


def add_tiling_args(parser):
    """``--tile``, ``--tile-overlap``, ``--tile-scale``: the tiled inference of ``inference/tiling.py``
    (eval.py and visualize.py offer the same options)."""
    parser.add_argument("--tile", action="store_true",
                        help="tiled inference: a full-frame pass plus overlapping tiles cut from the frame at the "
                             "network's input size, merged with NMS; finds small faces of big frames at the cost of "
                             "one network run per tile")
    parser.add_argument("--tile-overlap", type=fraction, default=0.25,
                        help="least overlap of neighbouring tiles, as a share of the tile (default: %(default)s)")
    parser.add_argument("--tile-scale", type=positive_float, default=1.0,
                        help="network pixels per frame pixel inside a tile (default 1: tiles at the frame's own "
                             "resolution; 0.5: tiles twice the input size, shrunk)")


def tiling_options(args):
    """The ``tile`` argument of ``inference.factory.make_predictor`` for parsed ``add_tiling_args`` flags."""
    return dict(overlap=args.tile_overlap, tile_scale=args.tile_scale) if args.tile else None


PATH_LIST_HELP = ("; several: comma-separated, or the flag repeated (a path that exists as given is taken whole, "
                  "commas and all)")


def add_path_list_arg(parser, flag, help, **kwargs):
    """A flag of one or several paths (annotation files, data roots): the comma-separated form, or the flag
    given again for each path (``action='append'``: the value is a list; ``data.coco.split_paths`` turns it
    into paths). ``help`` gets ``PATH_LIST_HELP`` appended."""
    return parser.add_argument(flag, action="append", help=help + PATH_LIST_HELP, **kwargs)


DATA_FORMAT_HELP = ("dataset format of the annotation files: coco (default: our own reader) or a Datumaro format "
                    "name (voc, voc_detection, yolo, cvat, wider_face, kitti, datumaro, ...); with a Datumaro format "
                    "each --*-ann-files entry is a dataset folder (or file) as Datumaro imports it, and no "
                    "--*-data-roots are given")


def add_data_format_arg(parser):
    """``--data-format NAME`` (``formats/convert.py``)."""
    parser.add_argument("--data-format", default="coco", metavar="NAME", help=DATA_FORMAT_HELP)


def add_subset_arg(parser, prefix):
    """``{prefix}-subset NAME[,NAME...]``: the subset(s) read of the ``{prefix}-ann-files`` datasets of a
    Datumaro format (``formats.convert.pick_subsets``); ``prefix`` is '--train', '--val' or '--test'."""
    parser.add_argument(f"{prefix}-subset", metavar="NAME", help=(
        f"with a Datumaro --data-format: the subset(s) of the {prefix}-ann-files dataset(s) to read, e.g. val "
        f"(several, comma-separated, are merged). Default: a dataset's only subset, else the one named for "
        f"{prefix}-ann-files' role (e.g. {prefix[2:]}; the names tried are in docs/data_formats.md); subsets are "
        f"never merged unasked, and the data line names the subsets read with their image counts"))


def add_training_args(parser, defaults="the template's", load_weights_help=None, resume_help=None, letterbox=False,
                      input_size_default="the template's"):
    """The flags train.py and compress.py share (data, output folder, start weights, schedule, processes),
    each checked when parsed. ``defaults``: where unset values come from, for the help texts: one text, or
    a pair (default of --epochs, default of --base-learning-rate). ``letterbox`` (train.py): --input-size
    also takes 'Wx' (letterboxed training), with --aspect. ``input_size_default``: where the input
    geometry comes from without --input-size, for its help text."""
    epochs_default, lr_default = (defaults, defaults) if isinstance(defaults, str) else defaults
    add_path_list_arg(parser, "--train-ann-files", "COCO annotation file(s) (or datasets of --data-format)",
                      required=True)
    add_path_list_arg(parser, "--train-data-roots", "image folder(s), one per annotation file (COCO)")
    add_data_format_arg(parser)
    add_subset_arg(parser, "--train")
    add_path_list_arg(parser, "--val-ann-files", "COCO annotation file(s) for validation (COCO AP after each epoch)")
    add_path_list_arg(parser, "--val-data-roots", "image folder(s) of the validation annotation file(s)")
    add_subset_arg(parser, "--val")
    parser.add_argument("--save-checkpoints-to", required=True, type=output_dir,
                        help="output folder: epoch_N.pth and latest.pth are written there (atomically, by global "
                             "rank 0) after each epoch. A folder holding checkpoints of an earlier run is refused "
                             "unless --resume or --resume-from continues that run or --overwrite is given; one "
                             "process at a time may write it (lock)")
    parser.add_argument("--resume", action="store_true",
                        help="continue this run from the newest complete checkpoint in --save-checkpoints-to "
                             "(weights, optimizer, schedule, epoch and iteration, sampler position, random state), "
                             "or start it if the folder holds none; a folder holding another run's checkpoints "
                             "(other template, config or data) is refused. Give it in every command of a job that "
                             "may be restarted (Slurm requeue, preemption); torchrun's own restarts (--max-restarts) "
                             "resume without it")
    parser.add_argument("--checkpoint-interval-iters", type=positive_int, metavar="N",
                        help="also write latest.pth every N iterations within an epoch (long epochs: a failure then "
                             "loses at most N iterations); default: after each epoch only")
    parser.add_argument("--overwrite", action="store_true", help="replace the checkpoints of an earlier run in "
                        "--save-checkpoints-to (they are removed before training starts)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume-from", type=existing_file, help=resume_help or "continue a training run from this "
                       "checkpoint: weights, optimizer state, epoch and iteration; ends at once if --epochs does not "
                       "exceed the stored epoch")
    start.add_argument("--load-weights", type=existing_file, help=load_weights_help or
                       "start a fresh schedule (epoch 0, warm-up) from these weights")
    parser.add_argument("--epochs", type=positive_int, help=f"total number of epochs (default: {epochs_default})")
    parser.add_argument("--batch-size", type=positive_int,
                        help="images per process and iteration (default: the template's)")
    parser.add_argument("--base-learning-rate", type=non_negative_float,
                        help=f"learning rate before warm-up/steps (default: {lr_default})")
    parser.add_argument("--gpu-num", type=non_negative_int, help="number of GPUs, one DDP process each (default: the "
                        "template's gpu_num, limited to the GPUs present; 0 = CPU). Without CUDA, N > 1 runs N CPU "
                        "processes with gloo")
    parser.add_argument("--tensorboard-dir", type=output_dir,
                        help="write TensorBoard logs (losses, lr, val AP) to this folder")
    parser.add_argument("--workers", type=bounded_int(0, MAX_WORKERS), help="data-loading processes per training "
                        f"process, 0..{MAX_WORKERS} (default: model.py's workers_per_gpu, at most the CPU count; 0 = "
                        "load in the training process)")
    if letterbox:
        parser.add_argument("--input-size", type=input_size_or_width, help="the input size (default: "
                            f"{input_size_default}): W, WxH (frames stretched to it, as the templates train), or Wx "
                            "(width W, the height from the training frames' aspect, or --aspect, rounded up to the "
                            "model's stride; frames "
                            "letterboxed as export.py --input-size Wx, eval.py and the demo do). Each side 32..8192; "
                            "stored in the checkpoint, so eval.py, export.py and visualize.py use the same geometry "
                            "without a flag")
        parser.add_argument("--aspect", default=None, help="frame aspect ratio W:H for --input-size Wx, e.g. 4:3 "
                            "(default: that of most training frames); refused with any other --input-size")
    else:
        parser.add_argument("--input-size", type=input_size, help="the input size, e.g. 128 or 160x128 (width x "
                            "height, frames stretched to it; each side 32..8192; stored in the checkpoint and used by "
                            f"eval.py and export.py); default: {input_size_default}")
    parser.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")


def training_kwargs(args):
    """The keyword arguments of ``apis.train.train`` (and ``apis.compress.compress``) for ``add_training_args``."""
    return dict(val_ann_files=args.val_ann_files, val_data_roots=args.val_data_roots, resume_from=args.resume_from,
                load_weights=args.load_weights, epochs=args.epochs, batch_size=args.batch_size,
                base_learning_rate=args.base_learning_rate, gpu_num=args.gpu_num,
                tensorboard_dir=args.tensorboard_dir, workers=args.workers,
                input_size=tuple(args.input_size) if args.input_size else None, seed=args.seed,
                **({"aspect": args.aspect} if getattr(args, "aspect", None) is not None else {}),
                overwrite=args.overwrite, data_format=args.data_format, train_subset=args.train_subset,
                val_subset=args.val_subset, resume=args.resume, checkpoint_interval_iters=args.checkpoint_interval_iters)


def add_int8_check_args(parser):
    """--max-recall-drop and --allow-recall-drop: the recall check of an INT8 IR (export.py --int8, compress.py
    --ptq; ``compression.ptq.check_int8_recall``)."""
    parser.add_argument("--max-recall-drop", type=non_negative_float, default=10.0,
                        help="with INT8 and validation files: most recall points (%% of the faces found at the IR's "
                             "operating score, its confidence_threshold) INT8 may lose; more is refused and nothing "
                             "is written (default: %(default)s)")
    parser.add_argument("--allow-recall-drop", action="store_true",
                        help="write the INT8 IR even when its recall falls more than --max-recall-drop (a warning "
                             "line instead of the refusal)")
