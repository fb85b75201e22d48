"""A small type registry: ``dict(type='Name', **kwargs)`` configs (mmdetection style) become objects."""

import copy

from .utils.errors import OteError


class Registry:
    def __init__(self, kind):
        self.kind = kind
        self._types = {}

    def register(self, name=None):
        def wrap(obj):
            self._types[name or obj.__name__] = obj
            return obj
        return wrap

    def get(self, name):
        if name not in self._types:
            known = ", ".join(sorted(self._types))
            raise OteError(f"model.py: unknown {self.kind} type '{name}' (known: {known})")
        return self._types[name]

    def build(self, cfg, **extra):
        if cfg is None:
            return None
        cfg = copy.deepcopy(dict(cfg))
        if "type" not in cfg:
            raise OteError(f"model.py: a {self.kind} config has no 'type': {cfg}")
        cls = self.get(cfg.pop("type"))
        cfg.update(extra)
        try:
            return cls(**cfg)
        except TypeError as exc:
            raise OteError(f"model.py: bad arguments for {self.kind} '{cls.__name__}': {exc}") from exc

    def names(self):
        """The registered type names, sorted."""
        return sorted(self._types)

    def __contains__(self, name):
        return name in self._types


BACKBONES = Registry("backbone")
NECKS = Registry("neck")
HEADS = Registry("head")
DETECTORS = Registry("detector")
ANCHOR_GENERATORS = Registry("anchor generator")
BBOX_CODERS = Registry("bbox coder")
ASSIGNERS = Registry("assigner")
TRANSFORMS = Registry("transform")
