"""Grid geometry of the grounding head (docs/behaviour.md §6, §7): strides, anchors per scale, grid sizes, the flat
cell order, the cell responsible for a box (its "centre cell", for targets and centre accuracy), and the decoding
of anchor-cells back to boxes.

Three scales, coarse -> fine (strides 32, 16, 8), three anchors each. Flat orders, used by the losses, the decoder
and the cache: cells run scale, row, column (N cells in all); anchor-cells run scale, anchor, row, column (3N).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from utils.box_ops import box_iou, first_argmax, xywh2xyxy, xyxy2xywh

STRIDES: tuple[int, int, int] = (32, 16, 8)  # coarse -> fine
NUM_SCALES = len(STRIDES)
NUM_ANCHORS_PER_SCALE = 3
# (w, h) in 416-px units, coarse -> fine: scale s uses anchors 3s .. 3s+2 (docs/behaviour.md §6). The reference
# writes them fine -> coarse as a string and reverses the list.
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
Anchors = list[tuple[float, float]] | tuple[tuple[float, float], ...]


def anchors_for_dataset(name: str) -> list[tuple[float, float]]:
    """The anchor set used for ``name``: the Flickr set for 'flickr', the default set for every other."""
    # quirk: the reference tests for 'refeit' (typo), so referit never gets its own anchors (docs/behaviour.md §6).
    return list(FLICKR_ANCHORS if name == "flickr" else DEFAULT_ANCHORS)


@dataclass(frozen=True)
class Geometry:
    """What decoding and targets need to know about the network input."""

    image_size: int
    anchors: tuple[tuple[float, float], ...]
    anchor_imsize: int

    @classmethod
    def for_dataset(cls, dataset: str, image_size: int, anchor_imsize: int) -> Geometry:
        return cls(image_size, tuple(anchors_for_dataset(dataset)), anchor_imsize)


def grid_sizes(image_size: int) -> list[int]:
    """Grid side of each scale, coarse -> fine (``S/32, S/16, S/8``)."""
    if image_size <= 0 or image_size % STRIDES[0]:
        raise ValueError(f"image size must be a positive multiple of {STRIDES[0]}, got {image_size}")
    return [image_size // stride for stride in STRIDES]


def scaled_anchors(
    anchors: Anchors,
    image_size: int,
    anchor_imsize: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> list[Tensor]:
    """Anchor (w, h) in grid units of each scale: ``a / (anchor_imsize / grid_s)`` -> list of (3, 2).

    Computed in double precision like the reference's Python floats, then cast to ``dtype``.
    """
    if len(anchors) != NUM_SCALES * NUM_ANCHORS_PER_SCALE:
        raise ValueError(f"expected {NUM_SCALES * NUM_ANCHORS_PER_SCALE} anchors, got {len(anchors)}")
    out = []
    for s, grid in enumerate(grid_sizes(image_size)):
        pairs = anchors[NUM_ANCHORS_PER_SCALE * s: NUM_ANCHORS_PER_SCALE * (s + 1)]
        cell = anchor_imsize / grid
        out.append(torch.tensor([(w / cell, h / cell) for w, h in pairs], dtype=torch.float64)
                   .to(device=device, dtype=dtype))  # (3, 2)
    return out


def flat_cell_index(grids: list[int], scale: Tensor, row: Tensor, col: Tensor, anchor: Tensor | None = None
                    ) -> Tensor:
    """Index in the flat cell order (scale, row, column), or with ``anchor`` in the anchor-cell order (scale,
    anchor, row, column). ``scale``, ``row``, ``col`` (and ``anchor``): long tensors of one shape."""
    sides = torch.tensor(grids, device=scale.device)  # (3,)
    cells = sides * sides
    first = torch.cumsum(cells, 0) - cells  # (3,) first cell of each scale
    in_scale = row * sides[scale] + col
    if anchor is None:
        return first[scale] + in_scale
    return NUM_ANCHORS_PER_SCALE * first[scale] + anchor * cells[scale] + in_scale


def flatten_anchor_maps(pred_anchor: list[Tensor]) -> Tensor:
    """list of (B, 3, 5, h, w) -> (B, 3N, 5), anchor-cells ordered scale, anchor, row, column."""
    return torch.cat([p.permute(0, 1, 3, 4, 2).flatten(1, 3) for p in pred_anchor], 1)


def flatten_cell_maps(maps: list[Tensor]) -> Tensor:
    """list of (B, h, w) -> (B, N), cells ordered scale, row, column."""
    return torch.cat([m.flatten(1) for m in maps], 1)


class CentreCell(NamedTuple):
    """The anchor-cell responsible for a box (reference ``build_target``). Index tensors (B,) long."""

    best_n: Tensor  # best of the 9 anchors, 0..8 (scale = best_n // 3)
    scale: Tensor
    anchor: Tensor  # within the scale, 0..2
    gi: Tensor  # column at the best scale
    gj: Tensor  # row at the best scale
    anchor_cell: Tensor  # flat over the 3N anchor-cells
    cell: Tensor  # flat over the N cells
    coord: Tensor  # (B, 4) centre and size of the box in grid units of the best scale
    anchor_wh: Tensor  # (B, 2) the best anchor in grid units of its scale


def centre_cell(boxes: Tensor, image_size: int, anchors: Anchors, anchor_imsize: int) -> CentreCell:
    """The centre cell of (B, 4) letterboxed xyxy pixel boxes (docs/behaviour.md §6).

    The box is clamped to [0, S-1]; the best anchor is the first maximum of the IoU between the (0, 0, w, h)
    shapes of the box and of the 9 anchors (each in grid units of its scale); the cell is ``floor`` of the
    centre in grid units of the best scale.
    """
    grids = grid_sizes(image_size)
    batch = boxes.shape[0]
    boxes = boxes.clamp(0, image_size - 1)
    norm = xyxy2xywh(boxes) / image_size  # (B, 4) cx, cy, w, h in image units
    coords = torch.stack([norm * grid for grid in grids])  # (3, B, 4) in grid units of each scale
    grid_anchors = torch.stack(
        scaled_anchors(anchors, image_size, anchor_imsize, device=boxes.device, dtype=boxes.dtype)
    )  # (3, 3, 2)

    zeros = torch.zeros_like(coords[..., :2])  # (3, B, 2)
    gt_shapes = torch.cat([zeros, coords[..., 2:]], -1)[:, :, None]  # (3, B, 1, 4)
    anchor_shapes = torch.cat([torch.zeros_like(grid_anchors), grid_anchors], -1)[:, None]  # (3, 1, 3, 4)
    ious = box_iou(gt_shapes, anchor_shapes).permute(1, 0, 2).reshape(batch, -1)  # (B, 9)
    best_n = first_argmax(ious, dim=1)
    scale = best_n // NUM_ANCHORS_PER_SCALE
    anchor = best_n % NUM_ANCHORS_PER_SCALE

    coord = coords[scale, torch.arange(batch, device=boxes.device)]  # (B, 4) at the best scale
    gi, gj = coord[:, 0].long(), coord[:, 1].long()  # truncation = floor (coordinates are >= 0)
    return CentreCell(
        best_n=best_n,
        scale=scale,
        anchor=anchor,
        gi=gi,
        gj=gj,
        anchor_cell=flat_cell_index(grids, scale, gj, gi, anchor),
        cell=flat_cell_index(grids, scale, gj, gi),
        coord=coord,
        anchor_wh=grid_anchors[scale, anchor],
    )


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
    scale, anchor, gi, gj, stride, wh = [], [], [], [], [], []
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
        stride.append(torch.full((a.numel(),), STRIDES[s], device=device))
        wh.append(anchors[s][a.flatten()])  # (3hw, 2)
    scale, anchor, gi, gj, stride, wh = (torch.cat(t) for t in (scale, anchor, gi, gj, stride, wh))
    return scale, anchor, gi, gj, flat_cell_index(grids, scale, gj, gi), stride, wh


def decode_topk(
    pred_anchor: list[Tensor],
    image_size: int,
    anchors: Anchors,
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
