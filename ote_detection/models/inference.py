"""The deployable model: BGR 0..255 input, normalisation folded in (as in the exported IR)."""

import torch
import torch.nn as nn


class InferenceModel(nn.Module):
    def __init__(self, detector, img_norm_cfg):
        super().__init__()
        self.detector = detector
        self.to_rgb = bool(img_norm_cfg.get("to_rgb", True))
        mean = torch.tensor(img_norm_cfg["mean"], dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(img_norm_cfg["std"], dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def normalize(self, bgr):
        x = bgr.flip(1) if self.to_rgb else bgr
        return (x - self.mean) / self.std

    def forward(self, bgr):
        return self.detector(self.normalize(bgr))

    @torch.no_grad()
    def predict(self, bgr):
        """bgr [B, 3, H, W] float 0..255 -> list of B ``Detections`` (boxes [N, 4], scores [N], labels [N])
        in input pixels, best first."""
        return self.detector.predict(self.normalize(bgr))
