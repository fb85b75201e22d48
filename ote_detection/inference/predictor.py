"""Frame-level predictors: original BGR images of any size in, detections in original pixels out.

``FramePredictor`` is the one interface that validation, eval.py, the demo and tiling use; the
PyTorch model (``TorchPredictor``) and an OpenVINO IR (``export.openvino_predictor``) implement it.

* ``predict_frames(frames) -> list of float32 [N, 6]`` arrays (x1, y1, x2, y2, score, label: the
  columns of ``models.heads.Detections.to_rows``) in the
  pixels of each frame, best score first. ``frames``: a list of ``[H, W, 3]`` uint8 BGR arrays of any
  (mixed) sizes; batching happens inside (``batch_size``).
* ``preprocess(frame) -> (tensor [3, h, w] float32 BGR 0..255, scale (sx, sy))`` with
  ``scale = network input / frame``; ``postprocess`` maps detections back by dividing by it.
* ``input_size``: the network input (w, h). With ``keep_ratio`` the frame is scaled by one factor
  to fit into it and padded at the right/bottom with zeros (the network sees the frame's aspect);
  otherwise it is stretched to (w, h), as in training.
"""

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.coco import FrameDataset, collate_frames
from ..data.scale_crop import letterbox  # noqa: F401 (the one letterbox; re-exported)
from ..models.heads import ROW_WIDTH


class FramePredictor:
    """Base class: subclasses implement ``infer_batch`` (and set ``input_size``)."""

    input_size = None
    keep_ratio = False
    batch_size = 8

    def preprocess(self, frame):
        img, scale = letterbox(frame, self.input_size, self.keep_ratio)
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float(), scale

    @staticmethod
    def postprocess(det, scale, frame_hw):
        """[N, 6] in network pixels -> float32 [N, 6] in frame pixels, clipped to the frame, best first."""
        det = np.asarray(det, np.float32).reshape(-1, ROW_WIDTH).copy()
        det[:, :4] /= np.tile(np.asarray(scale, np.float32), 2)
        h, w = frame_hw
        det[:, :4] = np.clip(det[:, :4], 0, [w, h, w, h])
        return det[np.argsort(-det[:, 4], kind="stable")]

    def infer_batch(self, batch):
        """``batch`` [B, 3, h, w] float32 BGR 0..255 -> list of B [N, 6] arrays in network pixels."""
        raise NotImplementedError

    def predict_frames(self, frames):
        results = []
        for start in range(0, len(frames), max(1, int(self.batch_size))):
            chunk = frames[start:start + self.batch_size]
            tensors, scales = zip(*(self.preprocess(f) for f in chunk))
            dets = self.infer_batch(torch.stack(tensors))
            results.extend(self.postprocess(d, s, f.shape[:2]) for d, s, f in zip(dets, scales, chunk))
        return results

    def predict_batch(self, batch, scales, frame_hws):
        """Already preprocessed ``batch`` (e.g. from a DataLoader) -> detections in frame pixels."""
        return [self.postprocess(d, s, hw) for d, s, hw in zip(self.infer_batch(batch), scales, frame_hws)]


class TorchPredictor(FramePredictor):
    """A PyTorch ``InferenceModel`` (BGR 0..255 in, normalisation inside) as a frame predictor."""

    def __init__(self, inference_model, input_size, keep_ratio=False, batch_size=8, device=None):
        self.device = device or next(inference_model.parameters()).device
        self.model = inference_model.to(self.device).eval()
        self.input_size = tuple(int(v) for v in input_size)
        self.keep_ratio = keep_ratio
        self.batch_size = batch_size

    @torch.no_grad()
    def infer_batch(self, batch):
        return [d.to_rows().float().cpu().numpy() for d in self.model.predict(batch.to(self.device))]


def detect_images(predictor, paths, keys=None, batch_size=8, workers=0, progress=True, desc="detect"):
    """Detections per image key: float32 [N, 5] (x1, y1, x2, y2, score) in original pixels.

    Images are decoded by ``workers`` DataLoader processes (0: in this one) and given to
    ``predictor.predict_frames`` ``batch_size`` at a time: the one loop shared by validation during
    training, eval.py (snapshots and IRs) and the input-size sweep."""
    loader = DataLoader(FrameDataset(paths, keys), batch_size=batch_size, num_workers=workers,
                        collate_fn=collate_frames)
    results = {}
    with torch.no_grad():
        for keys_b, frames in tqdm(loader, desc=desc, disable=not progress, leave=False):
            for key, det in zip(keys_b, predictor.predict_frames(frames)):
                results[key] = np.asarray(det[:, :5], np.float32)
    return results
