"""Inference on frames: the frame predictors (PyTorch and OpenVINO IR), tiling, deployment input sizes
and the detection cache. Used by evaluation, the demo, validation during training (through a callable
handed to the engine) and the input-size sweep. Imports models/ and data/ only; OpenVINO lazily."""
