"""``TrainingPlugin``: what a caller of the training loop (e.g. compression) may change, without the
engine knowing what it does. The engine never imports compression code; ``apis/compress.py`` passes
a plugin to ``apis.train.train``.

The calls, in each training process (the object is pickled to spawned DDP processes):

1. ``configure(cfg, options)``: edit the model config (``optimizer``, ``lr_config``, ...) and the
   ``TrainOptions`` (``epochs``, ``base_learning_rate``) before anything is built; also called
   once in the launching process, so that the printed plan is right.
2. ``prepare_model(detector, ctx) -> nn.Module``: after the weights of ``--load-weights`` are in
   ``detector`` (a ``SingleStageDetector`` on ``ctx.device``); returns the model to train (the same
   ``forward(img[, gt_bboxes, gt_labels])`` and ``predict(img)``). With ``--resume-from`` of a
   checkpoint written by this plugin, ``ctx.resume_checkpoint`` is that checkpoint (dict with
   ``state_dict``, ``meta``, ``hooks``): rebuild the same structure and load its ``state_dict``.
   ``ctx.init_loader()`` gives a DataLoader over the training images, each once per pass (no RepeatDataset
   copies; no augmentation-free promise:
   the training pipeline, shuffled, ``ctx.batch_size``), ``ctx.input_size`` the (w, h) input and
   ``ctx.keep_ratio`` whether the run's frames are letterboxed into it (else stretched).
3. ``hooks() -> list[HookBase]``: added after the default hooks (see ``engine/hooks.py``).
4. ``checkpoint_meta() -> dict``: merged into every checkpoint's ``meta`` (plain Python types), so
   that eval/export can rebuild the model (``Task.load_snapshot`` calls
   ``compression.restore_compressed_model`` when ``meta['compression']`` is present).
"""

from dataclasses import dataclass
from typing import Any, Callable, Optional


@dataclass
class PluginContext:
    device: Any
    input_size: tuple
    batch_size: int
    init_loader: Callable
    resume_checkpoint: Optional[dict] = None
    keep_ratio: bool = False


class TrainingPlugin:
    def configure(self, cfg, options):
        pass

    def prepare_model(self, detector, ctx):
        return detector

    def hooks(self):
        return []

    def checkpoint_meta(self):
        return {}
