"""Transforms of the data pipeline: docs/behaviour.md §6 augmentation and §7 evaluation preprocessing."""
import random
from pathlib import Path

import cv2
import matplotlib.cbook
import numpy as np
import pytest
import torch
import torchvision.transforms as tvt

from dataset.common import read_rgb
from utils.letterbox import letterbox, letterbox_boxes, unletterbox_boxes
from utils.transforms import (
    eval_frame,
    hflip,
    hsv_jitter,
    random_affine,
    swap_left_right,
    to_tensor,
    train_frame,
)

FIXTURES = Path(__file__).parent / "fixtures"


class FixedRng:
    """Returns the given values in turn (then repeats them)."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)
        self.calls = 0

    def random(self) -> float:
        value = self.values[self.calls % len(self.values)]
        self.calls += 1
        return value


def grace_hopper_path() -> str:
    return matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)


def test_letterbox_landscape_params_and_pad_colour():
    img = np.full((375, 500, 3), 7, np.uint8)
    out, ratio, dw, dh = letterbox(img, 256)
    assert out.shape == (256, 256, 3)
    assert (ratio, dw, dh) == (0.512, 0.0, 32.0)
    np.testing.assert_array_equal(out[:32, :, :].reshape(-1, 3)[0], [124, 116, 104])
    np.testing.assert_array_equal(out[224:, :, :].reshape(-1, 3)[-1], [124, 116, 104])
    assert (out[32:224] == 7).all()


def test_letterbox_half_pixel_padding_splits_top_and_bottom():
    img = np.full((101, 200, 3), 7, np.uint8)
    out, ratio, dw, dh = letterbox(img, 256)
    # new size (256, round(129.28) = 129): dh = 63.5 -> top round(63.4) = 63 rows, bottom round(63.6) = 64 rows
    assert out.shape == (256, 256, 3) and dh == 63.5 and dw == 0.0
    assert (out[62, 0] != 7).all() and (out[63, 0] == 7).all()
    assert (out[191, 0] == 7).all() and (out[192, 0] != 7).all()


def test_letterbox_round_trip_of_boxes():
    boxes = np.array([[0.0, 0.0, 499.0, 374.0], [12.0, 30.0, 80.5, 200.25]])
    _, ratio, dw, dh = letterbox(np.zeros((375, 500, 3), np.uint8), 256)
    inside = letterbox_boxes(boxes, ratio, dw, dh)
    np.testing.assert_allclose(inside[1], [12 * 0.512, 30 * 0.512 + 32, 80.5 * 0.512, 200.25 * 0.512 + 32])
    back = unletterbox_boxes(torch.from_numpy(inside)[None], *(torch.tensor([v], dtype=torch.float64)
                                                                for v in (ratio, dw, dh)))[0]
    np.testing.assert_allclose(back.numpy(), boxes, atol=1e-9)


def test_letterboxed_box_covers_the_same_content():
    img = np.zeros((300, 180, 3), np.uint8)
    img[60:150, 40:120] = 255  # box [40, 60, 120, 150] (exclusive ends)
    out, box, *_ = eval_frame(img, np.array([40, 60, 120, 150]), 256)
    ys, xs = np.nonzero(out[..., 0] > 127)
    np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], box, atol=1.0)


def test_eval_preprocessing_matches_reference_frame():
    expected = torch.load(FIXTURES / "model_parity_inputs.pt", weights_only=True)["frames"][0]
    img = read_rgb(grace_hopper_path(), index_path="(none)")
    out, *_ = eval_frame(img, np.zeros(4), 256)
    got = to_tensor(out[None])[0]
    assert got.shape == (3, 256, 256) and got.dtype == torch.float32
    assert (got - expected).abs().max().item() <= 1e-6


def test_to_tensor_is_bit_identical_to_torchvision():
    frames = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    reference = tvt.Compose([tvt.ToTensor(), tvt.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    expected = torch.stack([reference(frame) for frame in frames])
    assert torch.equal(to_tensor(frames), expected)


@pytest.mark.parametrize("phrase, swapped", [
    ("man on the left", "man on the right"),
    ("right of the left car", "left of the right car"),
    ("leftmost zebra, right-hand side", "rightmost zebra, left-hand side"),
    ("bright light upright", "bright light upright"),
])
def test_flip_swaps_left_and_right_words(phrase, swapped):
    assert swap_left_right(phrase) == swapped


def test_hflip_mirrors_image_and_box():
    img = np.zeros((50, 100, 3), np.uint8)
    img[20:40, 10:31] = 255  # columns 10..30 inclusive, box [10, 20, 30, 40] in the reference's index convention
    out, box = hflip(img, np.array([10, 20, 30, 40]))
    np.testing.assert_array_equal(box, [69, 20, 89, 40])  # x -> w - x - 1
    cols = np.nonzero(out[30, :, 0])[0]
    assert (cols.min(), cols.max()) == (69, 89)


def test_hsv_jitter_scales_value():
    img = np.full((4, 4, 3), 200, np.uint8)  # grey: saturation 0, value 200
    out = hsv_jitter(img, FixedRng(0.5, 0.0))  # saturation gain 1, value gain 0.5
    np.testing.assert_array_equal(out, np.full((4, 4, 3), 100, np.uint8))


def test_hsv_jitter_applies_saturation_gain():
    img = np.tile(np.array([200, 100, 100], np.uint8), (4, 4, 1))  # S = 128, V = 200
    same = hsv_jitter(img, FixedRng(0.5, 0.5))
    more = hsv_jitter(img, FixedRng(1.0, 0.5))  # saturation x1.5, value unchanged
    less = hsv_jitter(img, FixedRng(0.0, 0.5))  # saturation x0.5
    assert abs(int(same[0, 0, 1]) - 100) <= 1
    assert more[0, 0, 0] == same[0, 0, 0] == less[0, 0, 0] == 200
    assert more[0, 0, 1] < 60 and 140 < less[0, 0, 1] < 160


def test_affine_with_neutral_draws_is_identity():
    img = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    out, box = random_affine(img, np.array([5.0, 6.0, 30.0, 40.0]), FixedRng(0.5))  # 0 deg, scale 1, no shift
    np.testing.assert_array_equal(out, img)
    np.testing.assert_allclose(box, [5, 6, 30, 40])


def test_warped_box_stays_inside_the_image():
    size = 64
    for seed in range(300):
        rng = random.Random(seed)
        x1, y1 = rng.uniform(-5, size - 2), rng.uniform(-5, size - 2)
        box = np.array([x1, y1, rng.uniform(x1 + 1, size + 5), rng.uniform(y1 + 1, size + 5)])
        _, warped = random_affine(np.zeros((size, size, 3), np.uint8), box, rng)
        assert 0 <= warped[0] <= warped[2] <= size and 0 <= warped[1] <= warped[3] <= size, (seed, warped)


@pytest.mark.parametrize("seed", range(5))
def test_warped_box_follows_the_content(seed):
    img = np.zeros((128, 128, 3), np.uint8)
    img[40:80, 30:90] = 255
    out, box = random_affine(img, np.array([30.0, 40.0, 90.0, 80.0]), random.Random(seed))
    ys, xs = np.nonzero(cv2.cvtColor(out, cv2.COLOR_RGB2GRAY) > 127)
    np.testing.assert_allclose([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], [xs.mean() + 0.5, ys.mean() + 0.5],
                               atol=1.5)
    np.testing.assert_allclose(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], atol=3.0)


def test_affine_that_pushes_the_target_out_keeps_the_unwarped_frame():
    img = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    box = np.array([60.0, 10.0, 64.0, 30.0])  # a 4-px sliver at the right edge
    # hsv (0.5, 0.5) neutral; affine: 0 deg, scale 1, x shift +0.1 * 64 = 6.4 px pushes the box out, no shear
    out, out_box, *_ = train_frame(img, box, 64, flip=False, rng=FixedRng(0.5, 0.5, 0.5, 0.5, 1.0, 0.5, 0.5, 0.5))
    np.testing.assert_array_equal(out, hsv_jitter(img, FixedRng(0.5)))
    np.testing.assert_allclose(out_box, box)


def test_affine_that_keeps_the_target_visible_is_applied():
    img = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    box = np.array([20.0, 10.0, 40.0, 30.0])
    out, out_box, *_ = train_frame(img, box, 64, flip=False, rng=FixedRng(0.5, 0.5, 0.5, 0.5, 1.0, 0.5, 0.5, 0.5))
    np.testing.assert_allclose(out_box, [26.4, 10, 46.4, 30])
    assert not np.array_equal(out, hsv_jitter(img, FixedRng(0.5)))
