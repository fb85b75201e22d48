"""Drawing detections and text on BGR frames (OpenCV), sized to the frame."""

import cv2
import numpy as np

BOX_COLOR = (0, 255, 0)  # BGR green
TEXT_COLOR = (255, 255, 255)
TEXT_BG = (0, 0, 0)

__all__ = ["draw_detections", "draw_text_lines", "line_thickness", "BOX_COLOR"]


def line_thickness(frame):
    """Box line width: 2 px for 1080p, at least 1."""
    return max(1, round(min(frame.shape[:2]) / 540))


def _font_scale(frame):
    return max(0.4, min(frame.shape[:2]) / 1080 * 0.8)


def _label(img, text, x, y, scale, thickness, color, below=False):
    """Filled label whose bottom-left corner is at (x, y) (top-left with ``below``), kept inside the image."""
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    h, w = img.shape[:2]
    x = int(min(max(0, x), max(0, w - tw - 2)))
    top = int(y) if below else int(y) - th - base - 2
    top = min(max(0, top), max(0, h - th - base - 2))
    cv2.rectangle(img, (x, top), (x + tw + 2, top + th + base + 2), color, cv2.FILLED)
    cv2.putText(img, text, (x + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, TEXT_BG, thickness, cv2.LINE_AA)


def draw_detections(frame, det, score_thr=0.5, class_names=None, color=BOX_COLOR):
    """Draw boxes of ``det`` ([N, 6] x1, y1, x2, y2, score, label in frame pixels) scoring >= ``score_thr``
    on ``frame`` in place, with the score (and the class name when there are several classes) above each
    box. Returns the number of boxes drawn."""
    det = np.asarray(det, np.float32).reshape(-1, 6)
    det = det[det[:, 4] >= score_thr]
    t = line_thickness(frame)
    scale = _font_scale(frame) * 0.8
    show_names = class_names is not None and len(class_names) > 1
    # boxes first, then labels, so that no box line is drawn over a label
    boxes = [tuple(int(round(float(v))) for v in d[:4]) for d in det]
    for x1, y1, x2, y2 in boxes:
        cv2.rectangle(frame, (x1, y1), (x2, y2), color, t)
    for (x1, y1, _, _), d in zip(boxes, det):
        label = int(d[5])
        name = f"{class_names[label]} " if show_names and 0 <= label < len(class_names) else ""
        _label(frame, f"{name}{d[4]:.2f}", x1, y1 - t, scale, 1, color)
    return len(boxes)


def draw_text_lines(frame, lines, origin=(8, 8)):
    """White-on-black text lines at the top left (FPS, counts)."""
    scale = _font_scale(frame)
    t = max(1, round(scale * 2))
    x, y = origin
    for text in lines:
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, t)
        cv2.rectangle(frame, (x, y), (x + tw + 8, y + th + base + 8), TEXT_BG, cv2.FILLED)
        cv2.putText(frame, text, (x + 4, y + th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, TEXT_COLOR, t, cv2.LINE_AA)
        y += th + base + 10
    return frame
