"""OpenVINO IR: export of our models, a predictor for IRs, and import of Open Model Zoo weights.

Submodules import OpenVINO lazily, so ``import ote_detection.export`` itself is cheap.
"""
