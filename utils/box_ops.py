"""Box conversions, the reference IoU and a tie-deterministic arg-max (docs/behaviour.md §7).

All functions are vectorised over the batch and work on the device and dtype of their inputs.
Boxes are ``(x1, y1, x2, y2)`` in pixels unless a name says otherwise.
"""
from __future__ import annotations

import torch
import torchvision.ops
from torch import Tensor


def xywh2xyxy(boxes: Tensor) -> Tensor:
    """Centre form ``(cx, cy, w, h)`` -> corners (the reference's name for it)."""
    return torchvision.ops.box_convert(boxes, "cxcywh", "xyxy")


def xyxy2xywh(boxes: Tensor) -> Tensor:
    """Corners -> centre form ``(cx, cy, w, h)``."""
    return torchvision.ops.box_convert(boxes, "xyxy", "cxcywh")


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Element-wise IoU of (..., 4) corner boxes (broadcast), as the reference ``bbox_iou`` (docs/behaviour.md §7).

    ``inter / (area_a + area_b - inter + 1e-16)`` with areas ``(x2-x1)*(y2-y1)`` (no +1 pixel).
    torchvision's ``box_iou`` is pairwise and has no epsilon, so it is not used here.
    """
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / (area_a + area_b - inter + 1e-16)


def first_argmax(x: Tensor, dim: int = -1) -> Tensor:
    """Index of the first maximum along ``dim`` (deterministic on ties on every device; NaN counts as max)."""
    peak = x.amax(dim=dim, keepdim=True)
    is_peak = (x == peak) | (x.isnan() & peak.isnan())
    size = x.shape[dim]
    shape = [1] * x.dim()
    shape[dim] = size
    positions = torch.arange(size, device=x.device).view(shape)
    return torch.where(is_peak, positions, size).amin(dim=dim)
