"""The template's compression settings (OTE's ``compression_config.json`` format).

The file has a ``base`` part, one part per algorithm (``nncf_quantization``, ``nncf_sparsity``,
``nncf_pruning``) and ``order_of_parts``. As in OTE, the parts of the enabled algorithms are merged
onto ``base`` in ``order_of_parts`` (later parts win for ``optimizer``, ``lr_config`` and
``total_epochs``; mmcv's ``_delete_`` semantics), and the NNCF ``compression`` lists of all enabled
parts are concatenated. ``template.yaml``'s ``optimisations.<part>.default`` enables a part when no
flag is given on the command line.
"""

import copy
import json
import os

from ..config import merge_dict
from ..utils.errors import OteError

__all__ = ["CompressionSettings", "PARTS", "enabled_parts", "load_compression_settings", "apply_to_model_config"]

PARTS = ("nncf_quantization", "nncf_sparsity", "nncf_pruning")
ALGORITHM_OF_PART = {"nncf_quantization": "quantization", "nncf_sparsity": "magnitude_sparsity",
                     "nncf_pruning": "filter_pruning"}


class CompressionSettings:
    """Merged settings of the enabled parts.

    ``parts``: enabled part names in ``order_of_parts``; ``algorithms``: {NNCF algorithm name: its
    dict from the config}; ``optimizer`` / ``lr_config`` (overrides for model.py), ``total_epochs``,
    ``input_sample_size`` ([1, 3, h, w] of ``nncf_config.input_info``), ``path``.
    """

    def __init__(self, path, parts, merged, algorithms):
        self.path = path
        self.parts = list(parts)
        self.merged = merged
        self.algorithms = algorithms
        self.optimizer = merged.get("optimizer") or {}
        self.lr_config = merged.get("lr_config")
        self.total_epochs = merged.get("total_epochs")
        sample = ((merged.get("nncf_config") or {}).get("input_info") or {}).get("sample_size")
        self.input_sample_size = list(sample) if sample else None

    def to_dict(self):
        """Plain types, for checkpoint meta."""
        return json.loads(json.dumps({"path": self.path, "parts": self.parts, "algorithms": self.algorithms,
                                      "optimizer": self.optimizer, "lr_config": self.lr_config,
                                      "total_epochs": self.total_epochs}))

    def __getstate__(self):
        return self.__dict__

    def __setstate__(self, state):
        self.__dict__.update(state)


def read_compression_config(path):
    if not os.path.isfile(path):
        raise OteError(f"{path}: compression config not found")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise OteError(f"{path}: not a readable JSON compression config ({exc})") from exc
    if not isinstance(data, dict):
        raise OteError(f"{path}: not a compression config (expected a JSON object)")
    return data


def enabled_parts(template, flags):
    """Part names enabled by ``flags`` ({part: True/False/None}); None -> the template's default."""
    optimisations = template.get("optimisations") or {}
    parts = []
    for part in PARTS:
        flag = flags.get(part)
        if flag is None:
            flag = bool((optimisations.get(part) or {}).get("default", False))
        if flag:
            parts.append(part)
    return parts


def compression_config_path(template_path, template, part):
    entry = (template.get("optimisations") or {}).get(part) or {}
    name = entry.get("config", "compression_config.json")
    return os.path.join(os.path.dirname(os.path.abspath(template_path)), name)


def load_compression_settings(template_path, template, parts, config_path=None):
    """``CompressionSettings`` of ``parts`` (already enabled) from the template's config file."""
    if not parts:
        raise OteError("no compression algorithm enabled: give --nncf-quantization, --nncf-sparsity and/or "
                       "--nncf-pruning (the template enables none by default)")
    if "nncf_sparsity" in parts and "nncf_pruning" in parts:
        raise OteError("--nncf-sparsity and --nncf-pruning together are not supported (filter pruning changes the "
                       "shapes the sparsity masks are made for); combine either with --nncf-quantization")
    path = config_path or compression_config_path(template_path, template, parts[0])
    data = read_compression_config(path)
    order = data.get("order_of_parts") or list(PARTS)
    missing = [p for p in parts if p not in data]
    if missing:
        raise OteError(f"{path}: no '{missing[0]}' part (needed by --{missing[0].replace('_', '-')})")
    merged = copy.deepcopy(data.get("base") or {})
    compression = list(((merged.get("nncf_config") or {}).get("compression")) or [])
    for part in sorted(parts, key=lambda p: order.index(p) if p in order else len(order)):
        part_cfg = copy.deepcopy(data[part])
        compression += list(((part_cfg.get("nncf_config") or {}).get("compression")) or [])
        merged = _merge_parts(merged, part_cfg)
    merged.setdefault("nncf_config", {})["compression"] = compression
    algorithms = {}
    for algo in compression:
        name = algo.get("algorithm")
        if name not in ALGORITHM_OF_PART.values():
            raise OteError(f"{path}: compression algorithm '{name}' is not supported (one of "
                           f"{', '.join(ALGORITHM_OF_PART.values())})")
        algorithms[name] = algo
    for part in parts:
        if ALGORITHM_OF_PART[part] not in algorithms:
            raise OteError(f"{path}: part '{part}' has no '{ALGORITHM_OF_PART[part]}' algorithm in its nncf_config")
    ordered = [p for p in sorted(parts, key=lambda p: order.index(p) if p in order else len(order))]
    return CompressionSettings(path, ordered, merged, algorithms)


def _merge_parts(base, override):
    """Plain recursive merge of two parts; ``_delete_`` keys are kept (they act on model.py's config,
    as in OTE where the merged parts went through mmcv's Config merge)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge_parts(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def apply_to_model_config(cfg, settings):
    """Put the merged ``optimizer`` / ``lr_config`` overrides into model.py's config (mmcv semantics)."""
    from ..config import Config
    override = {}
    if settings.optimizer:
        override["optimizer"] = settings.optimizer
    if settings.lr_config:
        override["lr_config"] = settings.lr_config
    if not override:
        return cfg
    merged = merge_dict({k: dict(cfg[k]) for k in override if k in cfg}, override)
    for key, value in merged.items():
        cfg[key] = Config.wrap(value)
    return cfg
