from . import pytorchcv_backbone  # noqa: F401  (registers the pytorchcv backbones)
