"""Grid geometry: the flat cell orders and the centre cell of a box (docs/behaviour.md §6, §7)."""
import torch

from utils.geometry import (
    DEFAULT_ANCHORS,
    centre_cell,
    flat_cell_index,
    flatten_anchor_maps,
    flatten_cell_maps,
    grid_sizes,
)

SIZE = 64  # grids 2, 4, 8


def test_flat_cell_index_follows_the_order_of_the_flattened_maps():
    grids = grid_sizes(SIZE)
    maps = [torch.zeros(1, g, g) for g in grids]
    anchor_maps = [torch.zeros(1, 3, 5, g, g) for g in grids]
    scale, anchor, row, col = torch.tensor([1]), torch.tensor([2]), torch.tensor([3]), torch.tensor([1])
    maps[1][0, 3, 1] = 1
    anchor_maps[1][0, 2, :, 3, 1] = 1
    assert flatten_cell_maps(maps)[0].argmax().item() == flat_cell_index(grids, scale, row, col).item() == 4 + 13
    flat = flatten_anchor_maps(anchor_maps)[0, :, 0]  # (3N,)
    assert flat.argmax().item() == flat_cell_index(grids, scale, row, col, anchor).item() == 3 * 4 + 2 * 16 + 13


def test_centre_cell_picks_the_best_anchor_shape_and_floors_the_centre():
    # 20 x 28 px at 64 px = 0.625 x 0.875 cells of the coarse (2 x 2) grid, whose anchors are 1.79 x 1.57,
    # 0.75 x 0.95 and 0.56 x 0.43 cells: the second fits best; centre (40, 21) px -> cell column 1, row 0
    c = centre_cell(torch.tensor([[30.0, 7.0, 50.0, 35.0]]), SIZE, DEFAULT_ANCHORS, 416)
    assert (c.best_n.item(), c.scale.item(), c.anchor.item(), c.gi.item(), c.gj.item()) == (1, 0, 1, 1, 0)
    assert (c.cell.item(), c.anchor_cell.item()) == (1, 4 + 1)
    assert c.coord[0].tolist() == [1.25, 0.65625, 0.625, 0.875]


def test_centre_cell_clamps_a_box_to_the_image_first():
    outside = centre_cell(torch.tensor([[40.0, -10.0, 90.0, 64.0]]), SIZE, DEFAULT_ANCHORS, 416)
    inside = centre_cell(torch.tensor([[40.0, 0.0, 63.0, 63.0]]), SIZE, DEFAULT_ANCHORS, 416)
    assert (outside.best_n.item(), outside.gi.item(), outside.gj.item()) == \
        (inside.best_n.item(), inside.gi.item(), inside.gj.item())
