"""Anchors, box conversions, arg-max decoding and the evaluation geometry (docs/behaviour.md §6 and §7).

All functions are vectorised over the batch and work on the device and dtype of their inputs.
Boxes are ``(x1, y1, x2, y2)`` in pixels unless a name says otherwise; "letterboxed" means in the
``S x S`` network input, "original" means in the pixels of the image on disk.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torchvision.ops
from torch import Tensor

# (w, h) in 416-px units, coarse -> fine: scale s uses anchors 3s .. 3s+2 (docs/behaviour.md §6). The reference writes
# them fine -> coarse as a string and reverses the list.
DEFAULT_ANCHORS: tuple[tuple[float, float], ...] = (
    (373.0, 326.0), (156.0, 198.0), (116.0, 90.0),
    (59.0, 119.0), (62.0, 45.0), (30.0, 61.0),
    (33.0, 23.0), (16.0, 30.0), (10.0, 13.0),
)
FLICKR_ANCHORS: tuple[tuple[float, float], ...] = (
    (352.0, 294.0), (369.0, 169.0), (209.0, 263.0),
    (204.0, 132.0), (124.0, 205.0), (82.0, 121.0),
    (137.0, 71.0), (55.0, 58.0), (29.0, 26.0),
)
STRIDES: tuple[int, int, int] = (32, 16, 8)  # coarse -> fine
NUM_ANCHORS_PER_SCALE = 3


def anchors_for_dataset(name: str) -> list[tuple[float, float]]:
    """The anchor set used for ``name``: the Flickr set for 'flickr', the default set for every other."""
    # quirk: the reference tests for 'refeit' (typo), so referit never gets its own anchors (docs/behaviour.md §6).
    return list(FLICKR_ANCHORS if name == "flickr" else DEFAULT_ANCHORS)


def grid_sizes(image_size: int) -> list[int]:
    """Grid side of each scale, coarse -> fine (``S/32, S/16, S/8``)."""
    if image_size <= 0 or image_size % 32:
        raise ValueError(f"image size must be a positive multiple of 32, got {image_size}")
    return [image_size // stride for stride in STRIDES]


def scaled_anchors(
    anchors: list[tuple[float, float]] | tuple[tuple[float, float], ...],
    image_size: int,
    anchor_imsize: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> list[Tensor]:
    """Anchor (w, h) in grid units of each scale: ``a / (anchor_imsize / grid_s)`` -> list of (3, 2).

    Computed in double precision like the reference's Python floats, then cast to ``dtype``.
    """
    if len(anchors) != len(STRIDES) * NUM_ANCHORS_PER_SCALE:
        raise ValueError(f"expected {len(STRIDES) * NUM_ANCHORS_PER_SCALE} anchors, got {len(anchors)}")
    out = []
    for s, grid in enumerate(grid_sizes(image_size)):
        pairs = anchors[NUM_ANCHORS_PER_SCALE * s: NUM_ANCHORS_PER_SCALE * (s + 1)]
        cell = anchor_imsize / grid
        out.append(torch.tensor([(w / cell, h / cell) for w, h in pairs], dtype=torch.float64)
                   .to(device=device, dtype=dtype))  # (3, 2)
    return out


def xywh2xyxy(boxes: Tensor) -> Tensor:
    """Centre form ``(cx, cy, w, h)`` -> corners (the reference's name for it)."""
    return torchvision.ops.box_convert(boxes, "cxcywh", "xyxy")


def xyxy2xywh(boxes: Tensor) -> Tensor:
    """Corners -> centre form ``(cx, cy, w, h)``."""
    return torchvision.ops.box_convert(boxes, "xyxy", "cxcywh")


def flatten_anchor_maps(pred_anchor: list[Tensor]) -> Tensor:
    """list of (B, 3, 5, h, w) -> (B, 3N, 5), anchor-cells ordered scale, anchor, row, column."""
    return torch.cat([p.permute(0, 1, 3, 4, 2).flatten(1, 3) for p in pred_anchor], 1)


def flatten_cell_maps(maps: list[Tensor]) -> Tensor:
    """list of (B, h, w) -> (B, N), cells ordered scale, row, column."""
    return torch.cat([m.flatten(1) for m in maps], 1)


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


class Decoded(NamedTuple):
    """Top-k decoded predictions, descending confidence (first on ties). All (B, K), boxes (B, K, 4)."""

    boxes: Tensor  # letterboxed xyxy pixels
    scores: Tensor  # raw confidence (conf * sim * loc for our models)
    scale: Tensor  # 0 = coarse
    anchor: Tensor  # anchor within the scale, 0..2
    gi: Tensor  # column
    gj: Tensor  # row
    cell: Tensor  # flat over the N cells, ordered scale (coarse first), row, column


def _anchor_cell_tables(
    grids: list[int], anchors: list[Tensor], device: torch.device
) -> tuple[Tensor, ...]:
    """Per anchor-cell (3N entries, order scale, anchor, row, col): scale, anchor, gi, gj, cell, stride, wh."""
    scale, anchor, gi, gj, cell, stride, wh = [], [], [], [], [], [], []
    cell_offset = 0
    for s, grid in enumerate(grids):
        a, row, col = torch.meshgrid(
            torch.arange(NUM_ANCHORS_PER_SCALE, device=device),
            torch.arange(grid, device=device),
            torch.arange(grid, device=device),
            indexing="ij",
        )  # each (3, h, w)
        scale.append(torch.full((a.numel(),), s, device=device))
        anchor.append(a.flatten())
        gi.append(col.flatten())
        gj.append(row.flatten())
        cell.append(cell_offset + (row * grid + col).flatten())
        stride.append(torch.full((a.numel(),), STRIDES[s], device=device))
        wh.append(anchors[s][a.flatten()])  # (3hw, 2)
        cell_offset += grid * grid
    return tuple(torch.cat(t) for t in (scale, anchor, gi, gj, cell, stride, wh))


def decode_topk(
    pred_anchor: list[Tensor],
    image_size: int,
    anchors: list[tuple[float, float]] | tuple[tuple[float, float], ...],
    anchor_imsize: int,
    k: int = 1,
) -> Decoded:
    """Decode the ``k`` most confident anchor-cells of each sample (docs/behaviour.md §7, §8 for k = 5).

    ``pred_anchor``: list over scales (coarse -> fine) of (B, 3, 5, h, w) = (tx, ty, tw, th, conf).
    The ranking is over all 3N anchor-cells in the order scale, anchor, row, column, descending, first on
    ties, so top-1 is the reference arg-max. Box: ``((sigmoid(tx) + gi) * stride, (sigmoid(ty) + gj) *
    stride, exp(tw) * a_w * stride, exp(th) * a_h * stride)`` -> corners, in the reference's op order.
    """
    grids = grid_sizes(image_size)
    if [tuple(p.shape[-2:]) for p in pred_anchor] != [(g, g) for g in grids]:
        raise ValueError(f"pred_anchor grids {[tuple(p.shape[-2:]) for p in pred_anchor]} do not match "
                         f"image size {image_size} (expected {grids})")
    ref = pred_anchor[0]
    flat = flatten_anchor_maps(pred_anchor)  # (B, 3N, 5)
    if not 1 <= k <= flat.shape[1]:
        raise ValueError(f"k must be in [1, {flat.shape[1]}], got {k}")
    grid_anchors = scaled_anchors(anchors, image_size, anchor_imsize, device=ref.device, dtype=ref.dtype)
    scale, anchor, gi, gj, cell, stride, wh = _anchor_cell_tables(grids, grid_anchors, ref.device)

    conf = flat[..., 4]  # (B, 3N)
    if k == 1:
        order = first_argmax(conf, dim=1)[:, None]  # (B, 1)
    else:
        order = torch.sort(conf, dim=1, descending=True, stable=True).indices[:, :k]  # (B, K)
    picked = flat.gather(1, order[..., None].expand(-1, -1, 5))  # (B, K, 5)
    fgi, fgj, fstride = gi[order].to(ref.dtype), gj[order].to(ref.dtype), stride[order].to(ref.dtype)
    centre = torch.stack([
        (picked[..., 0].sigmoid() + fgi) * fstride,
        (picked[..., 1].sigmoid() + fgj) * fstride,
        (picked[..., 2].exp() * wh[order][..., 0]) * fstride,
        (picked[..., 3].exp() * wh[order][..., 1]) * fstride,
    ], -1)  # (B, K, 4)
    return Decoded(
        boxes=xywh2xyxy(centre),
        scores=picked[..., 4],
        scale=scale[order],
        anchor=anchor[order],
        gi=gi[order],
        gj=gj[order],
        cell=cell[order],
    )


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
    new_w = torch.round(orig_w.to(torch.float64) * r)
    new_h = torch.round(orig_h.to(torch.float64) * r)
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
    """Ground-truth round trip of docs/behaviour.md §7: letterboxed (B, 4) clamped to [0, S-1], then as the
    predictions."""
    return boxes_to_original(gt.clamp(0, image_size - 1), ratio, dw, dh, orig_w, orig_h)
