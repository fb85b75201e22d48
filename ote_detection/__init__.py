"""ote-face: template-driven training, evaluation and export of face detectors."""

__version__ = "0.1.0"
