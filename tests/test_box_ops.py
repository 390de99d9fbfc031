"""Anchors, IoU, arg-max decoding and the mapping of boxes back to the original image (docs/behaviour.md §6, 7)."""
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from utils.box_ops import box_iou, first_argmax, xywh2xyxy, xyxy2xywh
from utils.geometry import DEFAULT_ANCHORS, FLICKR_ANCHORS, anchors_for_dataset, decode_topk, scaled_anchors
from utils.letterbox import (
    boxes_to_original,
    clamp_to_extent,
    gt_to_original,
    original_extent,
    unletterbox_boxes,
)

FIXTURE = Path(__file__).parent / "fixtures" / "loss_parity.pt"


@pytest.fixture(scope="module")
def parity():
    return torch.load(FIXTURE, weights_only=True)


class CountCalls(TorchFunctionMode):
    """Counts torch calls: a loop over samples makes the count grow with the batch size."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def reference_decode(pred_anchor, size, anchors_full, anchor_imsize=416):
    """The reference test-loop decode, per sample (np.where order: anchor, row, col)."""
    batch = pred_anchor[0].shape[0]
    conf_list = [p[:, :, 4].reshape(batch, -1) for p in pred_anchor]
    max_conf, max_loc = torch.max(torch.cat(conf_list, 1), 1)
    boxes, cells = torch.zeros(batch, 4), []
    for ii in range(batch):
        if max_loc[ii] < 3 * (size // 32) ** 2:
            best_scale = 0
        elif max_loc[ii] < 3 * (size // 32) ** 2 + 3 * (size // 16) ** 2:
            best_scale = 1
        else:
            best_scale = 2
        grid, stride = size // (32 // 2 ** best_scale), 32 // 2 ** best_scale
        scaled = [(w / (anchor_imsize / grid), h / (anchor_imsize / grid))
                  for w, h in anchors_full[3 * best_scale: 3 * best_scale + 3]]
        conf = conf_list[best_scale].view(batch, 3, grid, grid).numpy()
        best_n, gj, gi = np.where(conf[ii] == max_conf.numpy()[ii])
        best_n, gi, gj = int(best_n[0]), int(gi[0]), int(gj[0])
        p = pred_anchor[best_scale][ii, best_n, :, gj, gi]
        boxes[ii, 0] = torch.sigmoid(p[0]) + gi
        boxes[ii, 1] = torch.sigmoid(p[1]) + gj
        boxes[ii, 2] = torch.exp(p[2]) * scaled[best_n][0]
        boxes[ii, 3] = torch.exp(p[3]) * scaled[best_n][1]
        boxes[ii] = boxes[ii] * stride
        cells.append((best_scale, best_n, gj, gi))
    return xywh2xyxy(boxes), cells


def test_anchor_sets_are_coarse_first_and_referit_uses_the_default_set():
    assert DEFAULT_ANCHORS[0] == (373.0, 326.0) and DEFAULT_ANCHORS[-1] == (10.0, 13.0)
    assert FLICKR_ANCHORS[0] == (352.0, 294.0) and FLICKR_ANCHORS[-1] == (29.0, 26.0)
    assert anchors_for_dataset("flickr") == list(FLICKR_ANCHORS)
    assert anchors_for_dataset("referit") == list(DEFAULT_ANCHORS)
    assert anchors_for_dataset("unc") == list(DEFAULT_ANCHORS)


def test_scaled_anchors_are_in_grid_units_of_each_scale():
    coarse, middle, fine = scaled_anchors(DEFAULT_ANCHORS, 256, 416)
    assert coarse.shape == (3, 2) and coarse.dtype == torch.float32
    assert coarse[0].tolist() == pytest.approx([373 / 52, 326 / 52])  # grid 8: 416 / 8 = 52 px per cell
    assert middle[2].tolist() == pytest.approx([30 / 26, 61 / 26])
    assert fine[2].tolist() == pytest.approx([10 / 13, 13 / 13])


def test_scaled_anchors_reject_a_size_that_is_not_a_multiple_of_32():
    with pytest.raises(ValueError, match="multiple of 32"):
        scaled_anchors(DEFAULT_ANCHORS, 250, 416)


def test_box_format_conversions():
    centre = torch.tensor([[10.0, 20.0, 4.0, 6.0]])
    assert xywh2xyxy(centre).tolist() == [[8.0, 17.0, 12.0, 23.0]]
    assert xyxy2xywh(xywh2xyxy(centre)).tolist() == centre.tolist()


def test_box_iou_is_elementwise_continuous_and_without_plus_one():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 3.0, 3.0]])
    assert box_iou(a, b).tolist() == pytest.approx([1 / 7, 1.0, 0.0])


def test_first_argmax_takes_the_first_of_tied_maxima():
    x = torch.tensor([[1.0, 3.0, 3.0, 0.0], [5.0, 5.0, 5.0, 5.0]])
    assert first_argmax(x, dim=1).tolist() == [1, 0]


def test_decode_top1_equals_the_reference_decode(parity):
    pred = parity["pred_anchor"]
    ref_boxes, ref_cells = reference_decode(pred, 256, parity["anchors_full"])
    dec = decode_topk(pred, 256, parity["anchors_full"], 416, k=1)
    assert torch.equal(dec.boxes[:, 0], ref_boxes)
    got = list(zip(dec.scale[:, 0].tolist(), dec.anchor[:, 0].tolist(), dec.gj[:, 0].tolist(),
                   dec.gi[:, 0].tolist()))
    assert got == ref_cells


def test_decode_ties_across_and_within_scales_pick_the_first(parity):
    pred = [p.clone() for p in parity["pred_anchor"]]
    top = max(p[:, :, 4].max() for p in pred) + 1
    pred[2][0, 0, 4, 3, 3] = top  # fine scale, later in the order ...
    pred[1][0, 2, 4, 5, 1] = top  # ... than this middle-scale anchor-cell
    pred[1][1, 1, 4, 7, 2] = top  # same scale: anchor 1 row 7 comes after ...
    pred[1][1, 0, 4, 9, 0] = top  # ... anchor 0 row 9
    dec = decode_topk(pred, 256, DEFAULT_ANCHORS, 416, k=1)
    assert (dec.scale[:2, 0].tolist(), dec.anchor[:2, 0].tolist()) == ([1, 1], [2, 0])
    assert (dec.gj[:2, 0].tolist(), dec.gi[:2, 0].tolist()) == ([5, 9], [1, 0])
    ref_boxes, _ = reference_decode(pred, 256, DEFAULT_ANCHORS)
    assert torch.equal(dec.boxes[:, 0], ref_boxes)


def test_decode_box_formula_and_cell_index():
    pred = [torch.full((1, 3, 5, g, g), -10.0) for g in (8, 16, 32)]
    pred[1][0, 2, :, 4, 7] = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0])  # middle scale, anchor (30, 61)
    dec = decode_topk(pred, 256, DEFAULT_ANCHORS, 416, k=1)
    cx, cy = (0.5 + 7) * 16, (0.5 + 4) * 16
    w, h = 30 * 256 / 416, 61 * 256 / 416
    assert dec.boxes[0, 0].tolist() == pytest.approx([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    assert dec.cell[0, 0].item() == 64 + 4 * 16 + 7
    assert dec.scores[0, 0].item() == 1.0


def test_decode_topk_is_descending_first_on_ties_and_starts_with_top1(parity):
    pred = [p.clone() for p in parity["pred_anchor"]]
    pred[0][0, 1, 4, 2, 2] = pred[2][0, 0, 4, 0, 0] = 50.0
    dec = decode_topk(pred, 256, DEFAULT_ANCHORS, 416, k=5)
    assert dec.boxes.shape == (8, 5, 4)
    assert (dec.scores[:, :-1] >= dec.scores[:, 1:]).all()
    assert (dec.scale[0, :2].tolist(), dec.anchor[0, :2].tolist()) == ([0, 2], [1, 0])
    top1 = decode_topk(pred, 256, DEFAULT_ANCHORS, 416, k=1)
    assert torch.equal(dec.boxes[:, :1], top1.boxes) and torch.equal(dec.cell[:, :1], top1.cell)
    flat_conf = torch.cat([p[:, :, 4].flatten(1) for p in pred], 1)
    assert torch.equal(dec.scores, flat_conf.topk(5, dim=1).values)


def test_decode_is_batch_size_invariant(parity):
    pred = parity["pred_anchor"]
    full = decode_topk(pred, 256, DEFAULT_ANCHORS, 416, k=5)
    for rows in ([3], [6, 1]):
        part = decode_topk([p[rows] for p in pred], 256, DEFAULT_ANCHORS, 416, k=5)
        assert torch.equal(part.boxes, full.boxes[rows]) and torch.equal(part.cell, full.cell[rows])


def test_decode_has_no_loop_over_samples(parity):
    counts = []
    for batch in (1, 8):
        with CountCalls() as mode:
            decode_topk([p[:batch] for p in parity["pred_anchor"]], 256, DEFAULT_ANCHORS, 416, k=5)
        counts.append(mode.calls)
    assert counts[0] == counts[1]


def test_original_extent_rounds_half_to_even_on_the_ratio_given():
    w, h = torch.tensor([640.0, 500.0]), torch.tensor([427.0, 375.0])
    # 427 * 0.4 -> 171 rows; 171 / 0.4 is 427.5 in float64 (-> 428) but 427.49999 with a float32 ratio
    ratio32 = torch.tensor([256 / 640, 256 / 500], dtype=torch.float32)
    assert [t.tolist() for t in original_extent(w, h, ratio32)] == [[640, 500], [427, 375]]
    ratio64 = torch.tensor([256 / 640, 256 / 500], dtype=torch.float64)
    assert [t.tolist() for t in original_extent(w, h, ratio64)] == [[640, 500], [428, 375]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_original_extent_equals_python_round_on_many_sizes(dtype):
    """Python's round on both steps; a letterboxed side that would round to 0 px keeps 1 px (docs/behaviour.md §10),
    so a 916x1 image's extent is round(1 / r) = 4 px high."""
    sizes = torch.randint(1, 2000, (2, 500), generator=torch.Generator().manual_seed(0))
    w, h = sizes[0], sizes[1]
    ratio = (256 / torch.maximum(w, h).double()).to(dtype)
    got_w, got_h = original_extent(w, h, ratio)
    for i in range(w.numel()):
        r = float(ratio[i])
        expected = (round(max(1, round(int(w[i]) * r)) / r), round(max(1, round(int(h[i]) * r)) / r))
        assert (got_w[i].item(), got_h[i].item()) == expected


def test_boxes_to_original_unletterboxes_then_clamps_to_the_recovered_extent():
    # 640 x 427 image at 256: ratio 0.4, 256 x 171 letterboxed, dh = 42.5
    ratio, dw, dh = torch.tensor([0.4]), torch.tensor([0.0]), torch.tensor([42.5])
    boxes = torch.tensor([[-4.0, 40.0, 300.0, 250.0]])
    assert unletterbox_boxes(boxes, ratio, dw, dh)[0].tolist() == pytest.approx([-10.0, -6.25, 750.0, 518.75])
    out = boxes_to_original(boxes, ratio, dw, dh, torch.tensor([640]), torch.tensor([427]))
    assert out[0].tolist() == pytest.approx([0.0, 0.0, 640.0, 427.0])


def test_clamp_to_extent_leaves_the_other_sides_alone():
    boxes = torch.tensor([[5.0, 6.0, -3.0, -2.0], [-1.0, -1.0, 80.0, 90.0]])
    out = clamp_to_extent(boxes, torch.tensor([50, 50]), torch.tensor([60, 60]))
    assert out.tolist() == [[5.0, 6.0, -3.0, -2.0], [0.0, 0.0, 50.0, 60.0]]


def test_gt_round_trip_clamps_to_size_minus_one_first():
    ratio, dw, dh = torch.tensor([0.5]), torch.tensor([0.0]), torch.tensor([28.0])  # 512 x 400 image
    gt = torch.tensor([[10.0, 30.0, 256.0, 228.0]])
    out = gt_to_original(gt, 256, ratio, dw, dh, torch.tensor([512]), torch.tensor([400]))
    assert out[0].tolist() == pytest.approx([20.0, 4.0, 510.0, 400.0])  # x2 from 255, not 256
