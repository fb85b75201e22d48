"""Provenance: what an evaluated weights file is shown to be, and how (the evaluation report and the
demo say it; ``inference.factory.make_predictor`` and ``ir_provenance`` decide it). A checkpoint's own
origin (e.g. imported from an Open Model Zoo IR) is its ``CheckpointMeta.source``."""

import dataclasses
from typing import Optional

__all__ = ["Provenance"]


@dataclasses.dataclass
class Provenance:
    """What an evaluated weights file is. ``own``: shown to be a model of the work dir's template (a
    snapshot whose meta names it or whose weights fit it; an IR whose export_info.yaml names it; an IR
    without export_info.yaml whose convolutions and input size are the template model's); ``why``: how
    that was shown, or why not (one phrase); ``info``: the IR's ``ExportInfo`` (None for a snapshot or
    an IR without one)."""

    path: str
    kind: str
    own: bool
    why: str
    info: Optional[object] = None

    def describe(self, template):
        return (f"{self.kind} {self.path}, " + (f"{template}'s model ({self.why})" if self.own else
                                                 f"NOT {template}'s model ({self.why})"))
