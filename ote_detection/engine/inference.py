"""Running a predictor over images: the one loop shared by validation, eval.py and IR evaluation."""

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.coco import ImageListDataset, collate_test


class TorchPredictor:
    """``predict(bgr [B,3,H,W] float, scales [B,2])`` -> list of [N, 6] arrays, with a PyTorch InferenceModel."""

    def __init__(self, inference_model, device=None):
        self.device = device or next(inference_model.parameters()).device
        self.model = inference_model.to(self.device).eval()

    def __call__(self, imgs, scales):
        dets = self.model.predict(imgs.to(self.device), scales.to(self.device))
        return [d.cpu().numpy() for d in dets]


def detect_images(predictor, paths, input_size, keys=None, batch_size=8, workers=0, progress=True, desc="detect"):
    """Detections per image key: float32 [N, 5] (x1, y1, x2, y2, score) in original pixels."""
    dataset = ImageListDataset(paths, input_size, keys)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_test)
    results = {}
    with torch.no_grad():
        for keys_b, imgs, scales in tqdm(loader, desc=desc, disable=not progress, leave=False):
            for key, det in zip(keys_b, predictor(imgs, scales)):
                results[key] = np.asarray(det[:, :5], np.float32)
    return results
