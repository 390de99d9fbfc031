"""The letterbox (docs/behaviour.md §7) and its inverse.

Forward, in the data pipeline (numpy, per image): resize the long side to ``S`` and pad to ``S x S``, so that a
point maps as ``x * ratio + dw``. Inverse, in evaluation (torch, batched): ``(x - dw) / ratio``, then the
reference's clamping to the image extent it recovers from the letterboxed size.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np
import torch
from torch import Tensor

PAD_COLOR = (123.7, 116.3, 103.5)


class Letterbox(NamedTuple):
    """Where an image sits in its letterbox (docs/behaviour.md §7): a point maps as ``x * ratio + dw`` (``dh`` for
    y); ``orig_size`` is the image's (h, w). Fields share their leading dims: () for one frame, (T,) for a
    sample's frames, (B, ...) once batched (a NamedTuple, so the loaders' default collation stacks each field)."""

    ratio: Tensor  # float32
    dw: Tensor  # float32
    dh: Tensor  # float32
    orig_size: Tensor  # (..., 2) long, (h, w)

    @classmethod
    def build(cls, ratio: float | Sequence[float], dw: float | Sequence[float], dh: float | Sequence[float],
              orig_size: tuple[int, int] | Sequence[tuple[int, int]]) -> Letterbox:
        """The record of one frame (numbers) or of a sample's frames (sequences of them)."""
        return cls(torch.tensor(ratio, dtype=torch.float32), torch.tensor(dw, dtype=torch.float32),
                   torch.tensor(dh, dtype=torch.float32), torch.tensor(orig_size, dtype=torch.long))

    def select(self, index: int | slice | tuple) -> Letterbox:
        """Every field indexed by ``index``: e.g. ``(slice(None), t)`` for frame ``t`` of batched samples."""
        return Letterbox(*(field[index] for field in self))

    def params(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(ratio, dw, dh, orig_w, orig_h)`` of a batch, each (B,), on ``device``, as
        :func:`boxes_to_original` takes them."""
        orig_h, orig_w = self.orig_size.to(device).unbind(-1)
        return self.ratio.to(device), self.dw.to(device), self.dh.to(device), orig_w, orig_h


def letterbox_params(h: int, w: int, size: int) -> tuple[float, int, int, float, float]:
    """Letterbox parameters of an ``h x w`` image: ``(ratio, new_w, new_h, dw, dh)`` (docs/behaviour.md §7).

    ``dw``/``dh`` are the (possibly half-pixel) paddings left/top, so a point maps as ``x * ratio + dw``.
    Python ``round`` (half to even) is part of the reference arithmetic; a side that would round to 0 pixels
    (a very long, thin image) keeps 1, where the reference's resize fails.
    """
    ratio = float(size) / max(h, w)
    new_w, new_h = max(1, round(w * ratio)), max(1, round(h * ratio))  # a 4000 x 16 image keeps a row
    return ratio, new_w, new_h, (size - new_w) / 2, (size - new_h) / 2


def letterbox(img: np.ndarray, size: int, color: tuple[float, float, float] = PAD_COLOR
              ) -> tuple[np.ndarray, float, float, float]:
    """Resize the long side to ``size`` (INTER_AREA) and pad to ``size x size`` (docs/behaviour.md §7).

    Returns ``(image, ratio, dw, dh)`` (see :func:`letterbox_params`).
    """
    ratio, new_w, new_h, dw, dh = letterbox_params(img.shape[0], img.shape[1], size)
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_AREA)
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)
    return img, ratio, dw, dh


def letterbox_boxes(boxes: np.ndarray, ratio: float, dw: float, dh: float) -> np.ndarray:
    """Original-pixel ``[..., 4]`` xyxy boxes -> letterboxed pixels (float64)."""
    return np.asarray(boxes, dtype=np.float64) * ratio + np.array([dw, dh, dw, dh])


def unletterbox_boxes(boxes: Tensor, ratio: Tensor, dw: Tensor, dh: Tensor) -> Tensor:
    """Letterboxed (B, ..., 4) -> original pixels: ``(x - dw) / ratio``, ``(y - dh) / ratio``; ratio etc. (B,)."""
    view = (-1,) + (1,) * (boxes.dim() - 1)
    offset = torch.stack([dw, dh, dw, dh], -1).view(view[:-1] + (4,))  # (B, 1.., 4)
    return (boxes - offset) / ratio.view(view)


def original_extent(orig_w: Tensor, orig_h: Tensor, ratio: Tensor) -> tuple[Tensor, Tensor]:
    """``(W', H') = (round(round(w*r)/r), round(round(h*r)/r))``, each (B,) long (docs/behaviour.md §7).

    quirk: the reference recovers the size from the letterboxed image, so W', H' can differ from w, h by a
    pixel. Computed in float64 with round-half-even (= Python ``round``). The result depends on the dtype
    ``ratio`` had (a float32 ratio of 0.4 gives H' = 427 for a 640x427 image, a float64 one 428); pass the
    ratio with the precision the reference evaluation had.
    """
    r = ratio.to(torch.float64)
    new_w = torch.round(orig_w.to(torch.float64) * r).clamp(min=1)  # as letterbox_geometry: a side keeps 1 px
    new_h = torch.round(orig_h.to(torch.float64) * r).clamp(min=1)
    return torch.round(new_w / r).long(), torch.round(new_h / r).long()


def clamp_to_extent(boxes: Tensor, extent_w: Tensor, extent_h: Tensor) -> Tensor:
    """Clamp (B, ..., 4) boxes: x1, y1 >= 0, x2 <= W', y2 <= H' (W', H' of shape (B,)); nothing else."""
    view = (-1,) + (1,) * (boxes.dim() - 2)
    x1y1 = boxes[..., :2].clamp(min=0)
    x2 = torch.minimum(boxes[..., 2], extent_w.to(boxes.dtype).view(view))
    y2 = torch.minimum(boxes[..., 3], extent_h.to(boxes.dtype).view(view))
    return torch.cat([x1y1, x2[..., None], y2[..., None]], -1)


def boxes_to_original(
    boxes: Tensor, ratio: Tensor, dw: Tensor, dh: Tensor, orig_w: Tensor, orig_h: Tensor
) -> Tensor:
    """Predicted letterboxed boxes (B, ..., 4) -> original pixels, un-letterboxed and clamped (docs/behaviour.md §7)."""
    extent_w, extent_h = original_extent(orig_w, orig_h, ratio)
    return clamp_to_extent(unletterbox_boxes(boxes, ratio, dw, dh), extent_w, extent_h)


def gt_to_original(
    gt: Tensor, image_size: int, ratio: Tensor, dw: Tensor, dh: Tensor, orig_w: Tensor, orig_h: Tensor
) -> Tensor:
    """The ground truth's round trip (docs/behaviour.md §7): letterboxed (B, 4), clamped to [0, S-1], then mapped
    back as the predictions are."""
    return boxes_to_original(gt.clamp(0, image_size - 1), ratio, dw, dh, orig_w, orig_h)
