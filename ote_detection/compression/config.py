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

__all__ = ["CompressionSettings", "PARTS", "enabled_parts", "load_compression_settings", "apply_to_model_config",
           "validate_compression_config", "SCHEMA"]

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


# --- the schema of compression_config.json ----------------------------------------------------------
# Every key this tool reads, with its type and range. The whole file is checked when it is read (before
# any weights, data or NNCF set-up): one line names the file, the key and the problem. A key the tool
# does not read is refused too: it would be silently ignored.

class _Bad(Exception):
    pass


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


class Num:
    """A number (``integer``: a whole one) in [lo, hi] (``lo_open`` / ``hi_open``: excluded)."""

    def __init__(self, lo=None, hi=None, lo_open=False, hi_open=False, integer=False):
        self.lo, self.hi, self.lo_open, self.hi_open, self.integer = lo, hi, lo_open, hi_open, integer

    def describe(self):
        kind = "an integer" if self.integer else "a number"
        lo = "" if self.lo is None else f"{'>' if self.lo_open else '>='} {self.lo:g}"
        hi = "" if self.hi is None else f"{'<' if self.hi_open else '<='} {self.hi:g}"
        return f"{kind} {' and '.join(t for t in (lo, hi) if t)}".strip()

    def check(self, value, where):
        ok = _is_number(value) and (not self.integer or float(value).is_integer())
        if ok and self.lo is not None:
            ok = value > self.lo if self.lo_open else value >= self.lo
        if ok and self.hi is not None:
            ok = value < self.hi if self.hi_open else value <= self.hi
        if not ok:
            raise _Bad(f"{where} = {json.dumps(value)}: must be {self.describe()}")


class OneOf:
    def __init__(self, *values):
        self.values = values

    def check(self, value, where):
        if value not in self.values or isinstance(value, bool) != any(isinstance(v, bool) for v in self.values):
            raise _Bad(f"{where} = {json.dumps(value)}: must be one of {', '.join(json.dumps(v) for v in self.values)}")


class Type:
    def __init__(self, kind, name):
        self.kind, self.name = kind, name

    def check(self, value, where):
        if not isinstance(value, self.kind):
            raise _Bad(f"{where} = {json.dumps(value)}: must be {self.name}")


class List:
    def __init__(self, item, length=None, increasing=False):
        self.item, self.length, self.increasing = item, length, increasing

    def check(self, value, where):
        if not isinstance(value, list):
            raise _Bad(f"{where} = {json.dumps(value)}: must be a list")
        if self.length is not None and len(value) != self.length:
            raise _Bad(f"{where} = {json.dumps(value)}: must have {self.length} entries")
        for i, v in enumerate(value):
            self.item.check(v, f"{where}[{i}]")
        if self.increasing and any(b <= a for a, b in zip(value, value[1:])):
            raise _Bad(f"{where} = {json.dumps(value)}: must be increasing")


class Either:
    """A single value (``scalar``) or a list of them (``listed``)."""

    def __init__(self, scalar, listed):
        self.scalar, self.listed = scalar, listed

    def check(self, value, where):
        (self.listed if isinstance(value, list) else self.scalar).check(value, where)


class Dict:
    """A JSON object of the keys given (each optional), nothing else."""

    def __init__(self, keys, required=()):
        self.keys, self.required = keys, required

    def check(self, value, where):
        if not isinstance(value, dict):
            raise _Bad(f"{where or 'the file'}: must be a JSON object")
        for key in self.required:
            if key not in value:
                raise _Bad(f"{_join(where, key)}: missing")
        for key, v in value.items():
            if key not in self.keys:
                raise _Bad(f"{_join(where, key)}: not a key this tool reads (known here: {', '.join(self.keys)})")
            self.keys[key].check(v, _join(where, key))


class Algorithm:
    """One entry of ``nncf_config.compression``: the schema of its ``algorithm``."""

    def check(self, value, where):
        if not isinstance(value, dict):
            raise _Bad(f"{where}: must be a JSON object")
        name = value.get("algorithm")
        if name not in ALGORITHMS:
            raise _Bad(f"{where}.algorithm = {json.dumps(name)}: must be one of {', '.join(ALGORITHMS)}")
        ALGORITHMS[name].check(value, where)
        ALGORITHM_CHECKS[name](value, where)


def _join(where, key):
    return f"{where}.{key}" if where else key


BOOL = Type(bool, "true or false")
STR = Type(str, "a string")
RATIO = Num(0, 1, hi_open=True)
POSITIVE_INT = Num(1, integer=True)
COUNT = Num(0, integer=True)

OPTIMIZER = Dict({"type": OneOf("SGD", "Adam", "AdamW"), "lr": Num(0, lo_open=True), "momentum": Num(0, 1),
                  "weight_decay": Num(0), "nesterov": BOOL, "dampening": Num(0), "betas": List(RATIO, length=2),
                  "eps": Num(0, lo_open=True), "_delete_": BOOL})
LR_CONFIG = Dict({"policy": OneOf("step", "cosine", "fixed"), "step": Either(POSITIVE_INT, List(POSITIVE_INT,
                  increasing=True)), "gamma": Num(0, lo_open=True), "min_lr": Num(0), "warmup": OneOf(None, "linear"),
                  "warmup_iters": COUNT, "warmup_ratio": Num(0, 1, lo_open=True), "_delete_": BOOL})
ALGORITHMS = {
    # init_images / freeze_bn / preset: ours (issue 19, docs/templates.md), not OTE's
    "quantization": Dict({"algorithm": STR, "init_images": OneOf("plain", "augmented"), "freeze_bn": BOOL,
                          "preset": OneOf("performance", "mixed"), "initializer": Dict({
        "range": Dict({"num_init_samples": POSITIVE_INT}),
        "batchnorm_adaptation": Dict({"num_bn_adaptation_samples": COUNT})})}),
    "magnitude_sparsity": Dict({"algorithm": STR, "params": Dict({
        "schedule": OneOf("multistep", "polynomial", "exponential"), "multistep_sparsity_levels": List(RATIO),
        "multistep_steps": List(POSITIVE_INT, increasing=True), "sparsity_target": RATIO, "sparsity_init": RATIO})}),
    "filter_pruning": Dict({"algorithm": STR, "pruning_init": RATIO, "ignored_scopes": List(STR), "params": Dict({
        "schedule": OneOf("exponential", "exponential_with_bias", "baseline"), "pruning_init": RATIO,
        "pruning_target": RATIO, "pruning_flops_target": RATIO, "pruning_steps": COUNT, "num_init_steps": COUNT,
        "weight_importance": OneOf("geometric_median")})}),
}


def _check_sparsity(algo, where):
    params = algo.get("params") or {}
    if params.get("schedule", "multistep") == "multistep":
        levels, steps = params.get("multistep_sparsity_levels", [0.1, 0.5]), params.get("multistep_steps", [90])
        if len(levels) != len(steps) + 1:
            raise _Bad(f"{where}.params.multistep_sparsity_levels = {json.dumps(levels)}: needs one entry more than "
                       f"multistep_steps = {json.dumps(steps)}")


def _check_pruning(algo, where):
    params = algo.get("params") or {}
    init = params.get("pruning_init", algo.get("pruning_init", 0.0))
    target = params.get("pruning_target", params.get("pruning_flops_target", 0.5))
    if init > target:
        raise _Bad(f"{where}.params: pruning_init {init:g} is above the pruning target {target:g}")


ALGORITHM_CHECKS = {"quantization": lambda algo, where: None, "magnitude_sparsity": _check_sparsity,
                    "filter_pruning": _check_pruning}
PART = Dict({"find_unused_parameters": BOOL, "optimizer": OPTIMIZER, "lr_config": LR_CONFIG,
             "total_epochs": POSITIVE_INT,
             "nncf_config": Dict({"input_info": Dict({"sample_size": List(POSITIVE_INT, length=4)}),
                                  "compression": List(Algorithm()), "log_dir": STR, "target_device": STR})})
SCHEMA = Dict({"base": PART, **{part: PART for part in PARTS}, "order_of_parts": List(OneOf(*PARTS))})


def validate_compression_config(data, path):
    """Check the whole ``data`` of ``path`` against ``SCHEMA``; one OteError line naming the key."""
    try:
        SCHEMA.check(data, "")
        order = data.get("order_of_parts") or []
        if len(set(order)) != len(order):
            raise _Bad(f"order_of_parts = {json.dumps(order)}: names a part twice")
    except _Bad as exc:
        raise OteError(f"{path}: {exc}") from None
    return data


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
    return validate_compression_config(data, path)


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
