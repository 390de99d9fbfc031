"""Hard frames: the paper's motion blur, partial occlusion, defocus and low light, as sparse per-frame events.

Every option is off by default, and then nothing here runs: the set stays byte-identical for a seed. When
one is on, a clip draws its events from its own generator (a child of the clip's seed), so frames without
an event are byte-identical to the same frames of the set without the options.

- ``motion_blur``: a long exposure. The static camera sees the background sharp and each moving object
  smeared along its own displacement to the next frame, over ``motion_blur_length`` times that
  displacement, centred on its true position (the frame is the mean of renderings with every object
  shifted along its own velocity). A frame with no moving object gets no blur and no label.
- ``occlusion``: for 1 to ``occlusion_frames`` consecutive frames, a grey bar in front of everything
  covers a fraction in ``occlusion_cover`` of every expression target's box (the full width or height of
  the box, extending past it like a pole or a beam). The box stays the true object box.
- ``defocus``: a Gaussian blur (``defocus_sigma`` pixels) of the whole frame.
- ``low_light``: the scene's light scaled by ``low_light_gain``, then Gaussian sensor noise of
  ``low_light_noise`` grey levels.

Each rate is the probability that a frame starts an event of that kind; kinds are drawn independently and
can meet on one frame. Events are sparse in time: the frame after a degraded frame (or after an occlusion
run) is always clean, so a degraded frame has a clean neighbour.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from dataset.synthvid.expressions import ClipObjects
from utils.io import UserInputError

DEGRADATIONS = ("defocus", "low_light", "motion_blur", "occlusion")  # sorted, as in the labels
MIN_BLUR_PX = 1.0  # an object smeared less than this is not blurred


@dataclass(frozen=True)
class HardFrames:
    """Rates (probability that a frame starts an event) and strengths of the hard-frame degradations."""

    motion_blur: float = 0.0
    motion_blur_length: float = 4.0  # smear, in multiples of the object's displacement per frame
    occlusion: float = 0.0
    occlusion_frames: int = 3  # an occlusion lasts 1..N frames
    occlusion_cover: tuple[float, float] = (0.4, 0.7)  # fraction of the target box the bar covers
    defocus: float = 0.0
    defocus_sigma: float = 3.5  # pixels
    low_light: float = 0.0
    low_light_gain: float = 0.25
    low_light_noise: float = 10.0  # grey levels

    @property
    def enabled(self) -> bool:
        return any(rate > 0 for rate in (self.motion_blur, self.occlusion, self.defocus, self.low_light))

    def validate(self) -> None:
        """Raise :class:`UserInputError` naming the flag of the first bad value."""
        for name in ("motion_blur", "occlusion", "defocus", "low_light"):
            rate = getattr(self, name)
            if not 0 <= rate <= 1:
                raise UserInputError(f"--{name} is a rate per frame and must be in 0..1, got {rate}")
        if not 0 < self.motion_blur_length <= 10:
            raise UserInputError(f"--motion_blur_length must be in (0, 10], got {self.motion_blur_length}")
        if not 1 <= self.occlusion_frames <= 10:
            raise UserInputError(f"--occlusion_frames must be in 1..10, got {self.occlusion_frames}")
        low, high = self.occlusion_cover
        if not 0 < low <= high < 1:
            raise UserInputError(f"--occlusion_cover needs 0 < MIN <= MAX < 1, got {list(self.occlusion_cover)}")
        if not 0 < self.defocus_sigma <= 20:
            raise UserInputError(f"--defocus_sigma must be in (0, 20] pixels, got {self.defocus_sigma}")
        if not 0 < self.low_light_gain <= 1:
            raise UserInputError(f"--low_light_gain must be in (0, 1], got {self.low_light_gain}")
        if not 0 <= self.low_light_noise <= 100:
            raise UserInputError(f"--low_light_noise must be in 0..100 grey levels, got {self.low_light_noise}")


@dataclass
class FramePlan:
    """The degradations of one frame: blur offsets per object, occluder rectangles, defocus, low light."""

    blur: np.ndarray | None = None  # (K, O, 2) shift of each object in each of K sub-exposures
    occluders: list[tuple[int, int, int, int, tuple[float, float, float]]] = field(default_factory=list)
    defocus_sigma: float = 0.0  # 0: in focus
    low_light: tuple[float, float] | None = None  # (gain, noise std)

    def labels(self) -> list[str]:
        flags = {"defocus": self.defocus_sigma > 0, "low_light": self.low_light is not None,
                 "motion_blur": self.blur is not None, "occlusion": bool(self.occluders)}
        return [name for name in DEGRADATIONS if flags[name]]


def _blur_offsets(hard: HardFrames, clip: ClipObjects, t: int) -> np.ndarray | None:
    """(K, O, 2) sub-exposure shifts along each object's displacement, or None if nothing moves enough."""
    centres = clip.centres()  # (O, T, 2)
    step = np.diff(centres, axis=1)  # (O, T-1, 2)
    velocity = step[:, min(t, step.shape[1] - 1)]  # (O, 2), the last frame repeats the previous step
    smear = hard.motion_blur_length * velocity
    longest = float(np.linalg.norm(smear, axis=1).max())
    if longest < MIN_BLUR_PX:
        return None
    k = int(np.ceil(longest)) + 1
    return np.linspace(-0.5, 0.5, k)[:, None, None] * smear[None]


def _occluders(hard: HardFrames, targets: Sequence[int], rng: np.random.Generator) -> list[tuple]:
    """One bar per target: (vertical, cover, offset, overhang, colour), fixed over the event."""
    bars = []
    for target in targets:
        grey = rng.uniform(60, 200)
        colour = tuple(float(grey + d) for d in rng.uniform(-8, 8, 3))
        bars.append((int(target), bool(rng.random() < 0.5), float(rng.uniform(*hard.occlusion_cover)),
                     float(rng.random()), float(rng.uniform(0.2, 1.0)), colour))
    return bars


def _bar_rectangle(box: np.ndarray, vertical: bool, cover: float, offset: float, overhang: float, width: int,
                   height: int) -> tuple[int, int, int, int]:
    """Integer pixel rectangle (x1, y1, x2, y2), end exclusive, of a bar covering ``cover`` of ``box``."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    if vertical:
        left = x1 + offset * (1 - cover) * w
        rect = (left, y1 - overhang * h, left + cover * w, y2 + overhang * h)
    else:
        top = y1 + offset * (1 - cover) * h
        rect = (x1 - overhang * w, top, x2 + overhang * w, top + cover * h)
    xs = np.clip(np.round([rect[0], rect[2]]), 0, width).astype(int)
    ys = np.clip(np.round([rect[1], rect[3]]), 0, height).astype(int)
    return int(xs[0]), int(ys[0]), int(xs[1]), int(ys[1])


def plan_frames(hard: HardFrames, clip: ClipObjects, targets: Sequence[int], width: int, height: int,
                rng: np.random.Generator) -> list[FramePlan]:
    """The degradations of every frame of a clip (see the module docstring for the rules)."""
    frames = clip.boxes.shape[1]
    plans = [FramePlan() for _ in range(frames)]
    t = 0
    while t < frames:
        draws = rng.random(4)  # occlusion, motion blur, defocus, low light: always four, in this order
        length = int(rng.integers(1, hard.occlusion_frames + 1))
        plan = plans[t]
        if draws[1] < hard.motion_blur:
            plan.blur = _blur_offsets(hard, clip, t)
        if draws[2] < hard.defocus:
            plan.defocus_sigma = hard.defocus_sigma
        if draws[3] < hard.low_light:
            plan.low_light = (hard.low_light_gain, hard.low_light_noise)
        run = 1
        if draws[0] < hard.occlusion:
            bars = _occluders(hard, targets, rng)
            run = min(length, frames - t)
            for u in range(t, t + run):
                plans[u].occluders = [(*_bar_rectangle(clip.boxes[target, u], vertical, cover, offset, overhang,
                                                       width, height), colour)
                                      for target, vertical, cover, offset, overhang, colour in bars]
        t += run + (1 if plans[t].labels() else 0)  # a degraded run is followed by a clean frame
    return plans


def degrade_scene(image: np.ndarray, plan: FramePlan) -> np.ndarray:
    """Occluders, defocus and darkening of one rendered frame ((H, W, 3) -> float32), before the sensor noise."""
    image = image.astype(np.float32)
    for x1, y1, x2, y2, colour in plan.occluders:
        image[y1:y2, x1:x2] = colour
    if plan.defocus_sigma > 0:
        image = cv2.GaussianBlur(image, (0, 0), plan.defocus_sigma)
    if plan.low_light is not None:
        image = image * plan.low_light[0]
    return image


def low_light_noise(plan: FramePlan, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray | float:
    """Extra sensor noise of a low-light frame (0 for the others)."""
    if plan.low_light is None or plan.low_light[1] == 0:
        return 0.0
    return rng.normal(0, plan.low_light[1], shape).astype(np.float32)
