"""Data: datasets, image reading, the training pipeline's transforms."""

from . import scale_crop  # noqa: F401 - registers Letterbox and DeploymentScaleCrop beside transforms.py's steps
