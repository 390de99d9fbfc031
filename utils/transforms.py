"""Image and box transforms of the reference data pipeline (docs/behaviour.md §6 training augmentation, §7
preprocessing).

Images are HxWx3 uint8 RGB numpy arrays; boxes are float ``[x1, y1, x2, y2]`` numpy arrays in pixels. Random
choices come from an explicit ``rng`` (anything with ``.random() -> float in [0, 1)``, e.g. ``random.Random``);
the loaders default to the ``random`` module, which PyTorch re-seeds in every DataLoader worker.
"""
from __future__ import annotations

import math
import re
from typing import Protocol

import cv2
import numpy as np
import torch

from utils.letterbox import PAD_COLOR, letterbox, letterbox_boxes

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HSV_FRACTION = 0.5
AFFINE_DEGREES = (-5.0, 5.0)
AFFINE_TRANSLATE = (0.10, 0.10)
AFFINE_SCALE = (0.90, 1.10)
AFFINE_SHEAR = (-2.0, 2.0)
MIN_BOX_SIDE = 2.0  # pixels; see train_frame
# 'left'/'right' at the start of a word: swaps "left", "leftmost", "right-hand" but not "bright", "upright".
_LEFT_RIGHT = re.compile(r"(?<![a-z])(left|right)")


class Rng(Protocol):
    def random(self) -> float: ...


def swap_left_right(phrase: str) -> str:
    """Swap 'left' and 'right' in a lower-cased phrase, as a horizontal flip requires.

    The reference swaps every substring (``str.replace``), turning "bright" into "bleft"; we swap only where the
    word starts ("left", "leftmost", "right-hand"), which keeps the intent and leaves "bright"/"upright" alone.
    """
    return _LEFT_RIGHT.sub(lambda m: "right" if m.group(1) == "left" else "left", phrase)


def hflip(img: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror the image and the box; quirk: the reference maps x to ``w - x - 1`` (pixel-index convention)."""
    w = img.shape[1]
    box = np.asarray(box, dtype=np.float64)
    return cv2.flip(img, 1), np.array([w - box[2] - 1, box[1], w - box[0] - 1, box[3]])


def hsv_jitter(img: np.ndarray, rng: Rng, fraction: float = HSV_FRACTION) -> np.ndarray:
    """Scale saturation and value by independent factors in ``1 +- fraction`` (docs/behaviour.md §6).

    The reference draws the saturation factor but never applies it; we apply it. Values are clipped to 255 and
    truncated back to uint8 in HSV space, as the reference does.
    """
    gains = np.array([1.0, (rng.random() * 2 - 1) * fraction + 1, (rng.random() * 2 - 1) * fraction + 1],
                     dtype=np.float32)
    # per-channel lookup table of min(x * gain, 255) in float32 for every uint8 x: same values, no float image
    lut = np.minimum(np.arange(256, dtype=np.float32)[:, None] * gains, 255).astype(np.uint8)  # (256, 3)
    hsv = cv2.LUT(cv2.cvtColor(img, cv2.COLOR_RGB2HSV), lut[:, None, :])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def random_affine(img: np.ndarray, box: np.ndarray, rng: Rng, degrees: tuple[float, float] = AFFINE_DEGREES,
                  translate: tuple[float, float] = AFFINE_TRANSLATE, scale: tuple[float, float] = AFFINE_SCALE,
                  shear: tuple[float, float] = AFFINE_SHEAR, color: tuple[float, float, float] = PAD_COLOR
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Random rotation/scale/translation/shear of a square image and its box (reference ``random_affine``).

    The box becomes the bounding box of its warped corners, shrunk about its centre by
    ``max(|sin a|, |cos a|) ** 0.5`` (the reference's rotation correction) and clipped to ``[0, side]``.
    """
    h, w = img.shape[:2]
    side = max(h, w)
    angle = rng.random() * (degrees[1] - degrees[0]) + degrees[0]
    s = rng.random() * (scale[1] - scale[0]) + scale[0]
    rot = np.eye(3)
    rot[:2] = cv2.getRotationMatrix2D(angle=angle, center=(w / 2, h / 2), scale=s)
    shift = np.eye(3)
    shift[0, 2] = (rng.random() * 2 - 1) * translate[0] * h  # quirk: x shift scaled by the height, as the reference
    shift[1, 2] = (rng.random() * 2 - 1) * translate[1] * w
    skew = np.eye(3)
    skew[0, 1] = math.tan(math.radians(rng.random() * (shear[1] - shear[0]) + shear[0]))
    skew[1, 0] = math.tan(math.radians(rng.random() * (shear[1] - shear[0]) + shear[0]))
    matrix = skew @ shift @ rot
    out = cv2.warpPerspective(img, matrix, dsize=(side, side), flags=cv2.INTER_LINEAR, borderValue=color)

    x1, y1, x2, y2 = np.asarray(box, dtype=np.float64)
    corners = np.array([[x1, y1, 1], [x2, y2, 1], [x1, y2, 1], [x2, y1, 1]]) @ matrix.T  # (4, 3)
    lo, hi = corners[:, :2].min(0), corners[:, :2].max(0)
    reduction = max(abs(math.sin(math.radians(angle))), abs(math.cos(math.radians(angle)))) ** 0.5
    centre, half = (lo + hi) / 2, (hi - lo) * reduction / 2
    return out, np.clip(np.concatenate([centre - half, centre + half]), 0, side)


def eval_box(box: np.ndarray, ratio: float, dw: float, dh: float) -> np.ndarray:
    """Letterbox an (int) annotation box for evaluation.

    Quirk: the reference letterboxes the box in place in an int array, so the letterboxed box is truncated to
    whole pixels (``np.trunc``); the released numbers were measured that way.
    """
    return np.trunc(letterbox_boxes(box, ratio, dw, dh))


def eval_frame(img: np.ndarray, box: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, float, float, float]:
    """Evaluation preprocessing of one frame (docs/behaviour.md §7): letterbox the image and the box.

    Returns ``(img, box, ratio, dw, dh)``.
    """
    img, ratio, dw, dh = letterbox(img, size)
    return img, eval_box(box, ratio, dw, dh), ratio, dw, dh


def train_frame(img: np.ndarray, box: np.ndarray, size: int, flip: bool, rng: Rng
                ) -> tuple[np.ndarray, np.ndarray, float, float, float]:
    """docs/behaviour.md §6 augmentation of one frame: [flip] -> HSV jitter -> letterbox -> random affine.

    ``flip`` is decided once per sample by the caller (same for every frame); HSV and affine draw per frame.
    Deviation from the reference: when the affine pushes the target (almost) out of the frame, so that a side of
    its clipped box is below ``MIN_BOX_SIDE`` pixels, the un-warped letterboxed frame is kept. The reference trains
    on such boxes, whose size target ``log(0 / anchor + 1e-16) = -36.8`` swamps the box loss of the batch.
    """
    if flip:
        img, box = hflip(img, box)
    img = hsv_jitter(img, rng)
    img, box, ratio, dw, dh = eval_frame(img, box, size)
    warped_img, warped_box = random_affine(img, box, rng)
    if min(warped_box[2] - warped_box[0], warped_box[3] - warped_box[1]) >= MIN_BOX_SIDE:
        img, box = warped_img, warped_box
    return img, box, ratio, dw, dh


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(T, S, S, 3) uint8 RGB -> (T, 3, S, S) float32, ``/255`` then ImageNet normalisation.

    Same float32 operations as torchvision ``ToTensor`` + ``Normalize``, so results are bit-identical.
    """
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous()  # (T, 3, S, S) uint8
    x = x.float().div_(255)
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype)[:, None, None]
    return x.sub_(mean).div_(std)
