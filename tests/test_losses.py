"""Targets and losses (docs/behaviour.md §6), pinned to the reference numbers in tests/fixtures/loss_parity.pt."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from model.losses import (
    GroundingCriterion,
    box_loss,
    build_targets,
    loc_loss,
    negative_similarity,
    rank_loss,
)
from tests.helpers import dense_targets
from utils.box_ops import box_iou
from utils.geometry import DEFAULT_ANCHORS

FIXTURE = Path(__file__).parent / "fixtures" / "loss_parity.pt"
GRIDS = (8, 16, 32)  # at image size 256


@pytest.fixture(scope="module")
def parity():
    return torch.load(FIXTURE, weights_only=True)


@pytest.fixture(scope="module")
def targets(parity):
    return build_targets(parity["bbox"], parity["size"], parity["anchors_full"], parity["anchor_imsize"])


class CountCalls(TorchFunctionMode):
    """Counts torch calls: a loop over samples makes the count grow with the batch size."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def split_cells(flat):
    """(B, N) -> list of (B, h, w) at image size 256."""
    return [m.reshape(flat.shape[0], g, g) for m, g in zip(flat.split([g * g for g in GRIDS], 1), GRIDS)]


def reference_build_target(raw_coord, size=256, anchor_imsize=416, anchors_full=DEFAULT_ANCHORS):
    """The reference build_target, per sample, transcribed (anchor IoU in float32 like the reference)."""
    raw_coord = raw_coord.clamp(0, size - 1)
    batch = raw_coord.shape[0]
    coord_list, bbox_list = [], []
    for scale_ii in range(3):
        grid = size // (32 // 2 ** scale_ii)
        coord = torch.zeros(batch, 4)
        coord[:, 0] = (raw_coord[:, 0] + raw_coord[:, 2]) / (2 * size)
        coord[:, 1] = (raw_coord[:, 1] + raw_coord[:, 3]) / (2 * size)
        coord[:, 2] = (raw_coord[:, 2] - raw_coord[:, 0]) / size
        coord[:, 3] = (raw_coord[:, 3] - raw_coord[:, 1]) / size
        coord_list.append(coord * grid)
        bbox_list.append(torch.zeros(batch, 3, 5, grid, grid))
    best_n_list, best_gi, best_gj = [], [], []
    for ii in range(batch):
        anch_ious = []
        for scale_ii in range(3):
            grid = size // (32 // 2 ** scale_ii)
            gw, gh = coord_list[scale_ii][ii, 2], coord_list[scale_ii][ii, 3]
            scaled = [(w / (anchor_imsize / grid), h / (anchor_imsize / grid))
                      for w, h in anchors_full[3 * scale_ii: 3 * scale_ii + 3]]
            gt_box = torch.tensor([[0, 0, float(gw), float(gh)]], dtype=torch.float32)
            shapes = torch.tensor(np.concatenate((np.zeros((3, 2)), np.array(scaled)), 1), dtype=torch.float32)
            anch_ious += list(box_iou(gt_box, shapes))
        best_n = int(np.argmax(np.array(anch_ious)))
        best_scale = best_n // 3
        grid = size // (32 // 2 ** best_scale)
        scaled = [(w / (anchor_imsize / grid), h / (anchor_imsize / grid))
                  for w, h in anchors_full[3 * best_scale: 3 * best_scale + 3]]
        cx, cy, gw, gh = coord_list[best_scale][ii]
        gi, gj = cx.long(), cy.long()
        tw = torch.log(gw / scaled[best_n % 3][0] + 1e-16)
        th = torch.log(gh / scaled[best_n % 3][1] + 1e-16)
        bbox_list[best_scale][ii, best_n % 3, :, gj, gi] = torch.stack([cx - gi, cy - gj, tw, th, torch.ones(())])
        best_n_list.append(best_n)
        best_gi.append(int(gi))
        best_gj.append(int(gj))
    return bbox_list, best_gi, best_gj, best_n_list


def rel_err(a, b):
    return abs(float(a) - float(b)) / abs(float(b))


def test_targets_equal_the_reference_fixture(parity, targets):
    assert targets.gi.tolist() == parity["gi"].tolist()
    assert targets.gj.tolist() == parity["gj"].tolist()
    assert targets.best_n.tolist() == parity["best_n"].tolist()
    gt_param, gt_center_param = dense_targets(targets, parity["size"])
    for ours, ref in zip(gt_param, parity["gt_param"]):
        assert torch.equal(ours, ref)
    for ours, ref in zip(gt_center_param, parity["gt_center_param"]):
        assert torch.equal(ours, ref)


def test_losses_equal_the_reference_fixture(parity, targets):
    loss_box = box_loss(parity["pred_anchor"], targets)
    loss_rank = rank_loss(parity["sim_score"], parity["neg_sim_score"], targets)
    loss_loc = loc_loss(parity["loc_score"], targets)
    assert rel_err(loss_box, parity["loss_yolo"]) < 1e-5
    assert rel_err(loss_rank, parity["loss_rank"]) < 1e-5
    assert rel_err(loss_loc, parity["loss_loc"]) < 1e-5
    weights = GroundingCriterion().weight_dict
    total = weights["loss_box"] * loss_box + weights["loss_rank"] * loss_rank + weights["loss_loc"] * loss_loc
    assert rel_err(total, parity["loss_total"]) < 1e-5


def test_targets_equal_the_reference_loop_on_random_boxes():
    gen = torch.Generator().manual_seed(3)
    corners = torch.rand(64, 2, 2, generator=gen) * 300 - 20  # some boxes leave the image
    boxes = torch.cat([corners.amin(1), corners.amax(1)], 1)  # (64, 4)
    ref_param, ref_gi, ref_gj, ref_n = reference_build_target(boxes)
    ours = build_targets(boxes, 256, DEFAULT_ANCHORS, 416)
    assert (ours.gi.tolist(), ours.gj.tolist(), ours.best_n.tolist()) == (ref_gi, ref_gj, ref_n)
    for a, b in zip(dense_targets(ours, 256)[0], ref_param):
        assert torch.equal(a, b)


def test_flat_indices_point_at_the_written_target(parity, targets):
    gt_param, gt_center_param = dense_targets(targets, parity["size"])
    conf = torch.cat([g[:, :, 4].flatten(1) for g in gt_param], 1)  # (B, 3N)
    assert conf.argmax(1).tolist() == targets.anchor_cell.tolist()
    centre = torch.cat([g[:, 4].flatten(1) for g in gt_center_param], 1)  # (B, N)
    assert centre.argmax(1).tolist() == targets.cell.tolist()


def test_centre_on_a_cell_boundary_goes_to_the_cell_on_its_right_and_below():
    # 6 x 8 px box centred on (16, 24): on the corner of fine cells (2, 3); best anchor (10, 13) = #8
    t = build_targets(torch.tensor([[13.0, 20.0, 19.0, 28.0]]), 256, DEFAULT_ANCHORS, 416)
    assert (t.best_n.item(), t.gi.item(), t.gj.item()) == (8, 2, 3)
    a_w, a_h = 10 * 32 / 416, 13 * 32 / 416  # anchor in fine-grid units (grid 32)
    expected = [0.0, 0.0, math.log(6 / 8 / a_w), math.log(8 / 8 / a_h), 1.0]
    gt_param, gt_center_param = dense_targets(t, 256)
    assert gt_param[2][0, 2, :, 3, 2].tolist() == pytest.approx(expected, abs=1e-6)
    assert gt_center_param[2][0, :, 3, 2].tolist() == pytest.approx(expected, abs=1e-6)
    assert t.cell.item() == 64 + 256 + 3 * 32 + 2
    assert t.anchor_cell.item() == 3 * (64 + 256) + 2 * 32 * 32 + 3 * 32 + 2


def test_box_at_the_image_edge_is_clamped_to_size_minus_one():
    outside = build_targets(torch.tensor([[200.0, -30.0, 300.0, 256.0]]), 256, DEFAULT_ANCHORS, 416)
    clamped = build_targets(torch.tensor([[200.0, 0.0, 255.0, 255.0]]), 256, DEFAULT_ANCHORS, 416)
    assert torch.equal(outside.param, clamped.param) and outside.cell.item() == clamped.cell.item()
    scale = outside.scale.item()
    grid = GRIDS[scale]
    assert outside.param[0, 0].item() == pytest.approx(227.5 / 256 * grid - outside.gi.item())
    assert outside.gj.item() == int(127.5 / 256 * grid)


def test_anchor_ties_take_the_first_anchor_within_and_across_scales():
    square = torch.tensor([[100.0, 100.0, 140.0, 140.0]])
    mirrored = list(DEFAULT_ANCHORS)
    mirrored[3], mirrored[4] = (70.0, 60.0), (60.0, 70.0)  # equal IoU with a square box
    assert build_targets(square, 256, mirrored, 416).best_n.item() == 3
    repeated = list(DEFAULT_ANCHORS)
    repeated[2] = repeated[3] = (64.0, 64.0)  # same shape at the coarse and the middle scale
    t = build_targets(square, 256, repeated, 416)
    assert (t.best_n.item(), t.scale.item(), t.anchor.item()) == (2, 0, 2)


def test_rank_loss_hinge_on_hand_made_scores():
    t = build_targets(torch.tensor([[10.0, 10.0, 40.0, 40.0], [100.0, 100.0, 180.0, 200.0],
                                    [200.0, 20.0, 230.0, 60.0]]), 256, DEFAULT_ANCHORS, 416)
    assert len(set(t.cell.tolist())) == 3
    sim, neg = torch.zeros(3, 1344), torch.zeros(3, 1344)
    sim[[0, 1, 2], t.cell] = torch.tensor([0.9, 0.5, 0.2])  # pos
    neg[[0, 1, 2], t.cell] = torch.tensor([0.0, 0.6, 0.1])  # neg1
    sim[0, t.cell[2]] = 0.85  # neg2 of sample 0 (reversed batch: sample 2's cell)
    # neg1 hinges: 0, 0.2, 0; neg2 hinges: 0.05, 0.1 (the middle sample is its own reverse), 0
    loss = rank_loss(split_cells(sim), split_cells(neg), t)
    assert loss.item() == pytest.approx((0.2 + 0.05 + 0.1) / 6)


def test_negative_similarity_uses_the_reversed_batch_phrase():
    gen = torch.Generator().manual_seed(0)
    subject = torch.randn(3, 4, generator=gen)
    visual = [torch.randn(3, 4, g, g, generator=gen) for g in (2, 4)]
    neg = negative_similarity(subject, visual)
    assert neg[1].shape == (3, 4, 4)
    assert torch.allclose(neg[1][0], (subject[2][:, None, None] * visual[1][0]).sum(0))
    assert torch.allclose(neg[0][1], (subject[1][:, None, None] * visual[0][1]).sum(0))


def fake_outputs(parity, emb=6):
    gen = torch.Generator().manual_seed(1)
    batch = parity["bbox"].shape[0]
    return {
        "pred_anchor": parity["pred_anchor"],
        "sim": parity["sim_score"],
        "loc": parity["loc_score"],
        "visual": [torch.randn(batch, emb, g, g, generator=gen) for g in GRIDS],
        "subject": torch.randn(batch, emb, generator=gen),
    }


def test_criterion_returns_the_three_unweighted_losses(parity, targets):
    outputs = fake_outputs(parity)
    losses = GroundingCriterion()(outputs, targets)
    assert set(losses) == {"loss_box", "loss_rank", "loss_loc"}
    assert rel_err(losses["loss_box"], parity["loss_yolo"]) < 1e-5
    assert rel_err(losses["loss_loc"], parity["loss_loc"]) < 1e-5
    neg = negative_similarity(outputs["subject"], outputs["visual"])
    assert losses["loss_rank"].item() == rank_loss(outputs["sim"], neg, targets).item()


def test_criterion_and_targets_have_no_loop_over_samples(parity):
    counts = []
    for batch in (2, 8):
        outputs = {k: [m[:batch] for m in v] if isinstance(v, list) else v[:batch]
                   for k, v in fake_outputs(parity).items()}
        with CountCalls() as mode:
            t = build_targets(parity["bbox"][:batch], 256, DEFAULT_ANCHORS, 416)
            GroundingCriterion()(outputs, t)
        counts.append(mode.calls)
    assert counts[0] == counts[1]


def test_criterion_gradients_reach_every_input(parity, targets):
    outputs = fake_outputs(parity)
    leaves = {k: [m.clone().requires_grad_() for m in v] if isinstance(v, list) else v.clone().requires_grad_()
              for k, v in outputs.items()}
    criterion = GroundingCriterion()
    losses = criterion(leaves, targets)
    sum(criterion.weight_dict[k] * v for k, v in losses.items()).backward()
    assert leaves["subject"].grad.abs().sum() > 0
    for key in ("pred_anchor", "sim", "loc", "visual"):
        assert sum(m.grad.abs().sum() for m in leaves[key]) > 0
