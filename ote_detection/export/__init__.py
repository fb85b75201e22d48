"""OpenVINO IR and ONNX export of our models: network capture (``openvino_export``), the head family's
post-processing (``adapters``) and the entry points (``exporter``). The IR predictor lives in
``inference/``, the Open Model Zoo weight import in ``omz_import/``.

Submodules import OpenVINO lazily, so ``import ote_detection.export`` itself is cheap.
"""
