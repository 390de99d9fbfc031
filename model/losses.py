"""Training targets and the grounding objective (docs/behaviour.md §6).

Everything is vectorised over the batch (the reference loops over samples); the parity test pins targets
and losses to numbers produced by the reference code (tests/fixtures/loss_parity.pt).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from utils.geometry import (
    Anchors,
    centre_cell,
    flatten_anchor_maps,
    flatten_cell_maps,
)


@dataclass
class Targets:
    """Training targets of a batch; index tensors are (B,) long, on the device of the boxes."""

    param: Tensor  # (B, 5) t = (tx, ty, tw, th, 1)
    best_n: Tensor  # best of the 9 anchors, 0..8 (scale = best_n // 3)
    scale: Tensor
    anchor: Tensor  # within the scale, 0..2
    gi: Tensor  # column at the best scale
    gj: Tensor  # row at the best scale
    anchor_cell: Tensor  # flat over the 3N anchor-cells (scale, anchor, row, col): the conf CE target
    cell: Tensor  # flat over the N cells (scale, row, col): the L_loc target


def build_targets(
    boxes: Tensor,
    image_size: int,
    anchors: Anchors,
    anchor_imsize: int,
) -> Targets:
    """Targets of (B, 4) letterboxed xyxy pixel boxes (docs/behaviour.md §6, reference ``build_target``): the
    :func:`~utils.geometry.centre_cell` of each box and the box parameters relative to that cell and its anchor."""
    c = centre_cell(boxes, image_size, anchors, anchor_imsize)
    param = torch.stack([
        c.coord[:, 0] - c.gi,
        c.coord[:, 1] - c.gj,
        torch.log(c.coord[:, 2] / c.anchor_wh[:, 0] + 1e-16),
        torch.log(c.coord[:, 3] / c.anchor_wh[:, 1] + 1e-16),
        torch.ones_like(c.coord[:, 0]),
    ], 1)  # (B, 5)
    return Targets(
        param=param,
        best_n=c.best_n,
        scale=c.scale,
        anchor=c.anchor,
        gi=c.gi,
        gj=c.gj,
        anchor_cell=c.anchor_cell,
        cell=c.cell,
    )


def box_loss(pred_anchor: list[Tensor], targets: Targets, w_coord: float = 5.0) -> Tensor:
    """L_box = reference ``yolo_loss`` (docs/behaviour.md §6).

    ``w_coord`` x the sum over (x, y, w, h) of the batch-mean squared error of (sigmoid tx, sigmoid ty,
    tw, th) at the target anchor-cell, plus the cross-entropy of the conf logits of all 3N anchor-cells.
    """
    flat = flatten_anchor_maps(pred_anchor)  # (B, 3N, 5)
    picked = flat.gather(1, targets.anchor_cell[:, None, None].expand(-1, 1, 5))[:, 0]  # (B, 5)
    pred_box = torch.cat([picked[:, :2].sigmoid(), picked[:, 2:4]], 1)  # (B, 4)
    mse = F.mse_loss(pred_box, targets.param[:, :4], reduction="none").mean(0).sum()
    return w_coord * mse + F.cross_entropy(flat[..., 4], targets.anchor_cell)


def negative_similarity(subject: Tensor, visual: list[Tensor]) -> list[Tensor]:
    """Similarity of the reversed-batch phrase vector with each sample's map: list of (B, h, w) (docs/behaviour.md
    §6)."""
    negative = subject.flip(0)  # (B, E): sample b gets the phrase of sample B-1-b
    return [torch.einsum("be,behw->bhw", negative, v) for v in visual]


def rank_loss(sim: list[Tensor], neg_sim: list[Tensor], targets: Targets, margin: float = 0.1) -> Tensor:
    """L_rank, hinge over 2B pairs (docs/behaviour.md §6).

    pos = sim at the sample's target cell; neg1 = ``neg_sim`` (reversed-batch phrase, this sample's map) at
    the sample's target cell; neg2 = this sample's sim at the target cell (scale, row, col) of the
    reversed-batch sample. This is the reading that reproduces loss_parity.pt exactly; taking neg2 from the
    reversed sample's map at this sample's cell, or neg1 at the reversed sample's cell, does not.
    """
    sim_flat = flatten_cell_maps(sim)  # (B, N)
    neg_flat = flatten_cell_maps(neg_sim)  # (B, N)
    cell = targets.cell[:, None]  # (B, 1)
    pos = sim_flat.gather(1, cell)[:, 0]
    neg1 = neg_flat.gather(1, cell)[:, 0]
    neg2 = sim_flat.gather(1, cell.flip(0))[:, 0]
    return F.relu(margin + torch.cat([neg1, neg2]) - torch.cat([pos, pos])).mean()


def loc_loss(loc: list[Tensor], targets: Targets) -> Tensor:
    """L_loc = cross-entropy of the location scores over the N cells against the target cell (docs/behaviour.md §6)."""
    return F.cross_entropy(flatten_cell_maps(loc), targets.cell)


class GroundingCriterion(nn.Module):
    """The three training losses, unweighted; the engine sums ``weight_dict[k] * losses[k]`` (docs/behaviour.md §6)."""

    def __init__(self, w_coord: float = 5.0, margin: float = 0.1) -> None:
        super().__init__()
        self.w_coord = w_coord
        self.margin = margin
        self.weight_dict = {"loss_box": 1.0, "loss_rank": 100.0, "loss_loc": 1.0}

    def forward(self, outputs: dict, targets: Targets) -> dict[str, Tensor]:
        """``outputs``: the model dict (``pred_anchor``, ``sim``, ``loc``, ``visual``, ``subject``)."""
        neg_sim = negative_similarity(outputs["subject"], outputs["visual"])
        return {
            "loss_box": box_loss(outputs["pred_anchor"], targets, self.w_coord),
            "loss_rank": rank_loss(outputs["sim"], neg_sim, targets, self.margin),
            "loss_loc": loc_loss(outputs["loc"], targets),
        }
