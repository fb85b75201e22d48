"""Compression entry point behind the work dir's compress.py.

Quantization-aware training, magnitude sparsity and filter pruning fine-tune a trained snapshot through
``apis.train.train`` with a ``compression.CompressionPlugin``; the settings (learning rate, schedule,
epochs, NNCF parameters, ignored scopes) are the template's ``compression_config.json``. The
checkpoints (``latest.pth``, ``epoch_N.pth``) carry the compressed structure in ``meta['compression']``,
so eval.py and export.py read them like any snapshot.

``ptq=True`` (with quantization only) instead quantizes the OpenVINO IR after training-free calibration,
with NNCF's accuracy control on the validation files (``compression.ptq``).
"""

import logging

from ..compression.config import PARTS, enabled_parts, load_compression_settings
from ..artefacts.checkpoint import load_checkpoint_file
from ..artefacts.formats import CheckpointMeta
from ..artefacts.kinds import Checkpoint, open_artefact
from ..formats.convert import load_dataset
from ..utils.errors import OteError
from .task import Task

log = logging.getLogger(__name__)

# Below this many training images, fine-tuning (QAT) was measured to lose more AP than post-training
# quantization (benchmarks/bench_qat_curve.py: 0200 on wider_train10, docs/templates.md): compress.py then
# says to use --ptq.
QAT_MIN_IMAGES = 100


def qat_advice(num_images):
    """The advice compress.py logs for QAT on ``num_images`` training images, or None."""
    if num_images >= QAT_MIN_IMAGES:
        return None
    return (f"quantization-aware training on {num_images} training image(s): on sets this small fine-tuning "
            f"lost accuracy against post-training quantization (benchmarks/bench_qat_curve.py); with fewer than "
            f"{QAT_MIN_IMAGES} images use --ptq with --val-ann-files/--val-data-roots (accuracy control)")


def compress(template, train_ann_files, train_data_roots, save_checkpoints_to, *, nncf_quantization=None,
             nncf_sparsity=None, nncf_pruning=None, load_weights=None, resume_from=None, ptq=False, max_drop=1.0,
             compression_config=None, max_recall_drop=10.0, allow_recall_drop=False, **train_kwargs):
    """Compress the template's model. ``nncf_*``: True/False, or None for the template's
    ``optimisations.<part>.default``. ``train_kwargs``: ``apis.train.TrainOptions`` fields (val files,
    epochs, batch size, learning rate, gpu_num, input size, ...); ``epochs`` / ``base_learning_rate``
    left None take the compression config's ``total_epochs`` / ``optimizer.lr``; ``input_size`` left None
    takes the geometry of ``load_weights`` (its size, letterboxed if it was trained so; ``Task.
    resolve_geometry``), or of ``resume_from``, else the template's.

    Returns the training history, or with ``ptq`` a dict of the PTQ results."""
    task = Task(template)
    flags = {"nncf_quantization": nncf_quantization, "nncf_sparsity": nncf_sparsity, "nncf_pruning": nncf_pruning}
    parts = enabled_parts(task.template, flags)
    settings = load_compression_settings(task.template_path, task.template, parts, compression_config)
    if not load_weights and not resume_from:
        raise OteError("compression starts from trained weights: give --load-weights SNAPSHOT "
                       "(or --resume-from a compress.py checkpoint)")
    if load_weights and resume_from:
        raise OteError("give either --resume-from or --load-weights, not both")
    snapshot = None
    if load_weights:
        snapshot = open_artefact(load_weights, expect=(Checkpoint,))  # read once: PTQ or train() gets it
        if snapshot.meta.compression:
            raise OteError(f"{load_weights}: already a compressed checkpoint; continue it with --resume-from")
    resumed = None
    if resume_from:
        resumed = load_checkpoint_file(resume_from)  # read once: train() gets it (resume_checkpoint)
        stored = (CheckpointMeta.of(resumed, resume_from).compression or {}).get("parts")
        if stored is None:
            raise OteError(f"{resume_from}: not a compress.py checkpoint; start compressing it with --load-weights "
                           f"{resume_from} (train.py --resume-from continues its training)")
        if list(stored) != list(settings.parts):
            raise OteError(f"{resume_from}: compressed with {', '.join(stored)}, not "
                           f"{', '.join(settings.parts)}; give the same --nncf-* flags to resume")
    log.info("compression: %s (settings of %s)", ", ".join(settings.parts), settings.path)
    if ptq:
        if settings.parts != ["nncf_quantization"]:
            raise OteError("--ptq is post-training quantization: use it with --nncf-quantization alone")
        if resume_from:
            raise OteError("--ptq starts from --load-weights, not --resume-from")
    # any format read once as COCO json, for PTQ and for training (train() then reads json)
    data_format = train_kwargs.pop("data_format", "coco")
    train_set = load_dataset(train_ann_files, train_data_roots, data_format, train_kwargs.pop("train_subset", None),
                             "train", task.classes)
    val_set = load_dataset(train_kwargs.get("val_ann_files"), train_kwargs.get("val_data_roots"), data_format,
                           train_kwargs.pop("val_subset", None), "val", task.classes)
    train_ann_files, train_data_roots = train_set.ann_files, train_set.data_roots
    train_kwargs["val_ann_files"], train_kwargs["val_data_roots"] = val_set.ann_files, val_set.data_roots
    if ptq:
        from ..compression.ptq import post_training_quantization
        return post_training_quantization(task, snapshot, train_ann_files, train_data_roots, save_checkpoints_to,
                                          val_ann_files=train_kwargs.get("val_ann_files"),
                                          val_data_roots=train_kwargs.get("val_data_roots"), max_drop=max_drop,
                                          input_size=train_kwargs.get("input_size"), aspect=train_kwargs.get("aspect"),
                                          settings=settings,
                                          max_recall_drop=max_recall_drop, allow_recall_drop=allow_recall_drop)
    from ..compression.plugin import CompressionPlugin
    from .train import train
    if "nncf_quantization" in settings.parts:
        advice = qat_advice(len(train_set.load(check_images=False)["images"]))
        if advice:
            log.warning(advice)
    plugin = CompressionPlugin(settings)
    # without --input-size the snapshot's geometry (size, letterboxing), as --ptq and export.py take it
    return train(task.template_path, train_ann_files, train_data_roots, save_checkpoints_to, plugin=plugin,
                 load_weights=load_weights, load_weights_checkpoint=snapshot.data if snapshot else None,
                 load_weights_geometry=True, resume_from=resume_from, resume_checkpoint=resumed, **train_kwargs)


def compress_without_training(template, load_weights, save_to, *, nncf_sparsity=None, nncf_pruning=None,
                              compression_config=None, input_size=None):
    """What compression costs before any recovery: the snapshot ``load_weights`` with the enabled sparsity /
    pruning parts applied at once at their schedules' final levels (``CompressionPlugin.apply_final_levels``),
    no fine-tuning; writes the compress.py-style checkpoint ``save_to`` (epoch 0), which eval.py and export.py
    read like any compressed checkpoint. ``nncf_*``: as ``compress``. ``input_size``: (w, h) stretched, default
    the snapshot's geometry (``Task.resolve_geometry``, as ``compress`` trains it). Returns the plugin's
    ``state`` (``pruning_ratio`` / ``sparsity_level`` reached)."""
    from ..compression.plugin import CompressionPlugin
    from ..artefacts.checkpoint import load_weights as load_into, save_checkpoint
    from ..engine.plugin import PluginContext
    task = Task(template)
    flags = {"nncf_quantization": False, "nncf_sparsity": nncf_sparsity, "nncf_pruning": nncf_pruning}
    settings = load_compression_settings(task.template_path, task.template, enabled_parts(task.template, flags),
                                         compression_config)
    snapshot = open_artefact(load_weights, expect=(Checkpoint,))  # read once
    if snapshot.meta.compression:
        raise OteError(f"{load_weights}: already a compressed checkpoint")
    task.resolve_geometry(input_size, snapshot.meta, load_weights, role="compress")  # as compress() trains it
    detector = task.build_detector()
    load_into(detector, load_weights, expected_template=task.name, ckpt=snapshot.data)
    detector.eval()
    plugin = CompressionPlugin(settings)
    model = plugin.prepare_model(detector, PluginContext(device="cpu", input_size=task.input_size, batch_size=1,
                                                         init_loader=None, keep_ratio=task.keep_ratio))
    model = plugin.apply_final_levels(model)
    save_checkpoint(save_to, model, meta=dict(task.checkpoint_meta().to_dict(), **plugin.checkpoint_meta()))
    return dict(plugin.state)


__all__ = ["compress", "compress_without_training", "PARTS"]
