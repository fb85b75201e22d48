"""Entry point of the evaluation metrics and the metrics table / metrics.yaml helpers."""

from __future__ import annotations

import math
import os

__all__ = ["evaluate_detections", "format_metrics_table", "metrics_to_yaml_entries",
           "SUPPORTED_KEYS"]

SUPPORTED_KEYS = ("ap", "ap_64x64")
_WIDER_KEYS = ("widerface_e", "widerface_m", "widerface_h")


def evaluate_detections(coco_gt: dict, detections: dict, keys: list,
                        pr_curves_dir: str | None = None) -> dict:
    """Compute the requested metrics in percent (0..100).

    Args:
        coco_gt: COCO-format ground truth (``images`` with id/width/height, ``annotations`` with
            image_id/category_id/bbox [x, y, w, h]/area/iscrowd, optional ``ignore``,
            ``categories`` with one 'face').
        detections: image_id -> float array [N, 5] (x1, y1, x2, y2, score), original pixels,
            ``w = x2 - x1``.  Images without an entry have no detections.
        keys: subset of ``'ap'`` (COCO AP@[.5:.95], maxDets 100, as OTE's mmdet
            ``CocoDataset.evaluate`` ``bbox_mAP``; see ``coco_ap``) and ``'ap_64x64'`` (OTE's
            "AP for faces > 64x64"; see ``voc_ap64``).
        pr_curves_dir: if given, ``ap_pr.png`` / ``ap_64x64_pr.png`` are written there.

    Returns ``{key: value}``; NaN where the ground truth has no face to find.
    Raises ValueError for an unknown key or malformed detections.
    """
    keys = list(keys)
    bad = [k for k in keys if k not in SUPPORTED_KEYS]
    if bad:
        hint = (" (widerface_* are computed by WiderFaceGT(gt_dir).evaluate(...) on the "
                "official .mat ground truth)") if any(k in _WIDER_KEYS for k in bad) else ""
        raise ValueError(f"unknown metric key(s) {bad}; evaluate_detections supports "
                         f"{list(SUPPORTED_KEYS)}{hint}")
    from .coco_ap import coco_ap
    from .voc_ap64 import ap_64x64

    out = {}
    if pr_curves_dir is not None:
        os.makedirs(pr_curves_dir, exist_ok=True)
    for key in keys:
        if key in out:
            continue
        if key == "ap":
            if pr_curves_dir is None:
                value = coco_ap(coco_gt, detections)
            else:
                value, curves = coco_ap(coco_gt, detections, return_curves=True)
                _plot(curves, os.path.join(pr_curves_dir, "ap_pr.png"),
                      "COCO AP (101-point interpolated precision)")
        else:
            if pr_curves_dir is None:
                value = ap_64x64(coco_gt, detections)
            else:
                value, (rec, prec) = ap_64x64(coco_gt, detections, return_curve=True)
                _plot({"faces > 64x64, IoU 0.5": (rec, prec, value)},
                      os.path.join(pr_curves_dir, "ap_64x64_pr.png"), "AP for faces > 64x64")
        out[key] = 100.0 * value if not math.isnan(value) else math.nan
    return out


def _plot(curves, path, title):
    from .pr_plots import save_pr_curves
    save_pr_curves(curves, path, title)


def _fmt(value, digits=3):
    if value is None:
        return "-"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v):
        return "n/a"
    return f"{v:.{digits}f}"


# why a metric can be undefined (NaN: no ground truth to measure it on); metrics.yaml keeps the .nan
NAN_REASONS = {"ap_64x64": "no face > 64 px"}
# rows of values that are not among a template's metrics: display name and unit (counts show as integers)
EXTRA_ROWS = {"wider_images": ("WIDER FACE val images evaluated", "images")}


def _shown(key, value):
    text = _fmt(value)
    return f"n/a ({NAN_REASONS[key]})" if text == "n/a" and key in NAN_REASONS else text


def format_metrics_table(metrics: dict, template_metrics: list) -> str:
    """A plain-text table: display name, unit, measured value, the template's reference value.

    Rows follow the template's order; template keys absent from ``metrics`` show '-' as value;
    keys of ``metrics`` that the template does not list are appended (display name and unit from
    ``EXTRA_ROWS``, else the key). An undefined
    value (NaN) shows as 'n/a' with its reason (``NAN_REASONS``) and no diff.
    """
    rows = [("Metric", "Unit", "Value", "Reference", "Diff")]
    seen = set()
    for entry in template_metrics or []:
        key = entry.get("key")
        seen.add(key)
        value = metrics.get(key)
        ref = entry.get("value")
        diff = "-"
        try:
            if value is not None and ref is not None and math.isfinite(float(value) - float(ref)):
                diff = f"{float(value) - float(ref):+.3f}"
        except (TypeError, ValueError):
            pass
        rows.append((str(entry.get("display_name", key)), str(entry.get("unit", "")), _shown(key, value),
                     _fmt(ref), diff))
    for key, value in metrics.items():
        if key not in seen:
            name, unit = EXTRA_ROWS.get(key, (str(key), ""))
            shown = str(int(value)) if key in EXTRA_ROWS and isinstance(value, (int, float)) else _shown(key, value)
            rows.append((name, unit, shown, "-", "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1])]
        cells += [c.rjust(w) for c, w in zip(r[2:], widths[2:])]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def metrics_to_yaml_entries(metrics: dict, template_metrics: list,
                            include_extra: bool = False) -> list:
    """``[{key, display_name, unit, value}]`` in the template's order (OTE metrics.yaml style).

    Only template keys present in ``metrics`` are written (as OTE's ``metrics.yaml``); with
    ``include_extra`` the other keys of ``metrics`` follow, with ``display_name = key`` and an
    empty unit.  Values are plain floats (NaN stays NaN) so ``yaml.safe_dump({'metrics':
    entries})`` works.
    """
    entries = []
    seen = set()
    for entry in template_metrics or []:
        key = entry.get("key")
        seen.add(key)
        if key not in metrics:
            continue
        entries.append({"key": key, "display_name": entry.get("display_name", key),
                        "unit": entry.get("unit", ""), "value": _plain(metrics[key])})
    if include_extra:
        for key, value in metrics.items():
            if key not in seen:
                entries.append({"key": key, "display_name": key, "unit": "",
                                "value": _plain(value)})
    return entries


def _plain(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value
