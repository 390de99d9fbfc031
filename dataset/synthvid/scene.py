"""Scenes: objects, trajectories, visibility and rendering of one clip."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from dataset.synthvid.expressions import COLOURS, SHAPES, SIZES, ClipObjects
from dataset.synthvid.hard import FramePlan, degrade_scene, low_light_noise

SMALL_HALF = 0.055  # half extent of a small object, as a fraction of sqrt(width * height)


def _unit_polygon(shape: str) -> np.ndarray:
    """(P, 2) vertices of a shape of half extent 1, centred at the origin, pointing up."""
    if shape == "circle":
        a = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        return np.stack([np.cos(a), np.sin(a)], axis=1)
    if shape == "square":
        return 0.85 * np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)
    if shape == "triangle":
        return np.array([[0, -1.05], [1.0, 0.75], [-1.0, 0.75]])
    if shape == "star":
        a = -np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.1, 0.5)
        return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)
    if shape == "cross":
        a, b = 0.34, 0.95
        return np.array([[-a, -b], [a, -b], [a, -a], [b, -a], [b, a], [a, a], [a, b], [-a, b], [-a, a],
                         [-b, a], [-b, -a], [-a, -a]])
    raise ValueError(f"unknown shape {shape!r}")


@dataclass(frozen=True, eq=False)
class Scene:
    """A sampled clip: frame size, per-object polygons (a list of (T, P, 2)), BGR colours, ground truth."""

    width: int
    height: int
    polygons: list[np.ndarray]
    colours_bgr: list[tuple[float, float, float]]
    clip: ClipObjects


def _sample_objects(rng: np.random.Generator, count: int) -> list[tuple[str, str, str]]:
    """Attributes of ``count`` objects, so that look-alikes are common.

    Objects are drawn around a theme shape and colour; some are near-twins of an earlier object that differ
    in exactly one of shape, colour and size.
    """
    theme_shape, theme_colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
    objects: list[tuple[str, str, str]] = []
    for _ in range(count):
        if objects and rng.random() < 0.3:
            twin = list(objects[rng.integers(len(objects))])
            k = int(rng.integers(3))
            twin[k] = str(rng.choice([v for v in (SHAPES, list(COLOURS), list(SIZES))[k] if v != twin[k]]))
            objects.append((twin[0], twin[1], twin[2]))
        else:
            objects.append((str(theme_shape if rng.random() < 0.55 else rng.choice(SHAPES)),
                            str(theme_colour if rng.random() < 0.45 else rng.choice(list(COLOURS))),
                            str(rng.choice(list(SIZES)))))
    return objects


def _trajectories(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, frames: int,
                  scale: float) -> np.ndarray:
    """(O, T, 2) centres: constant-ish velocities with a slow random turn, bouncing inside ``[lo, hi]``."""
    count = len(lo)
    pos = rng.uniform(lo, hi)  # (O, 2)
    speed = rng.uniform(2.0, 4.5, count) * scale * (rng.random(count) < 0.6)
    axis_aligned = rng.integers(0, 4, count) * np.pi / 2 + rng.uniform(-0.35, 0.35, count)
    angle = np.where(rng.random(count) < 0.6, axis_aligned, rng.uniform(0, 2 * np.pi, count))
    turn = rng.normal(0, 0.05, (frames, count))
    centres = np.empty((count, frames, 2))
    for t in range(frames):
        centres[:, t] = pos
        angle = angle + turn[t]
        pos = pos + speed[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
        low, high = pos < lo, pos > hi
        pos = np.where(low, 2 * lo - pos, np.where(high, 2 * hi - pos, pos))
        flip_x, flip_y = (low | high)[:, 0], (low | high)[:, 1]
        angle = np.where(flip_x, np.pi - angle, angle)
        angle = np.where(flip_y, -angle, angle)
    return centres


def _fixed(points: np.ndarray) -> np.ndarray:
    """cv2 fixed-point coordinates (shift=4) of float pixel-centre coordinates."""
    return np.round(points * 16).astype(np.int32)


def _visibility(polygons: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """(O, T) fraction of each object's pixels not covered by objects drawn after it."""
    frames = polygons[0].shape[0]
    visible = np.ones((len(polygons), frames))
    for t in range(frames):
        labels = np.zeros((height, width), np.uint8)
        for i, poly in enumerate(polygons):
            cv2.fillPoly(labels, [_fixed(poly[t])], i + 1, cv2.LINE_8, shift=4)
        counts = np.bincount(labels.ravel(), minlength=len(polygons) + 1)[1:]
        for i, poly in enumerate(polygons):
            corner = np.floor(poly[t].min(axis=0)) - 1
            solo = np.zeros(tuple((np.ceil(poly[t].max(axis=0) - corner) + 2).astype(int)[::-1]), np.uint8)
            cv2.fillPoly(solo, [_fixed(poly[t] - corner)], 1, cv2.LINE_8, shift=4)
            visible[i, t] = counts[i] / max(int(solo.sum()), 1)
    return visible


def _same_colour_overlap(clip: ClipObjects) -> bool:
    """True if two objects of one colour touch in some frame (they would merge into one blob)."""
    b = clip.boxes  # (O, T, 4)
    apart = ((b[:, None, :, 0] > b[None, :, :, 2] + 1) | (b[None, :, :, 0] > b[:, None, :, 2] + 1)
             | (b[:, None, :, 1] > b[None, :, :, 3] + 1) | (b[None, :, :, 1] > b[:, None, :, 3] + 1))  # (O, O, T)
    colours = np.array(clip.colours)
    same = (colours[:, None] == colours[None, :]) & ~np.eye(len(colours), dtype=bool)  # (O, O)
    return bool((same[..., None] & ~apart).any())


def sample_scene(rng: np.random.Generator, width: int, height: int, frames: int) -> Scene | None:
    """A random clip, or None when two objects of one colour touch (checked before the costly masks)."""
    attrs = _sample_objects(rng, int(rng.integers(3, 6)))
    scale = float(np.sqrt(width * height))
    shapes = []
    for shape, _, size in attrs:
        half = SMALL_HALF * scale * SIZES[size] * rng.uniform(0.92, 1.08)
        a = rng.uniform(-0.2, 0.2) if shape != "circle" else 0.0
        rotation = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        shapes.append(half * _unit_polygon(shape) @ rotation.T)  # (P, 2) around the centre
    ext_lo = np.array([p.min(axis=0) for p in shapes])  # (O, 2), negative
    ext_hi = np.array([p.max(axis=0) for p in shapes])
    lo, hi = 1.0 - ext_lo, np.array([width - 2.0, height - 2.0]) - ext_hi
    centres = _trajectories(rng, lo, hi, frames, scale / 190.0)  # (O, T, 2)
    polygons = [centres[i][:, None, :] + shapes[i][None] for i in range(len(shapes))]  # (T, P, 2) each
    # Pixel-centre coordinates -> pixel-edge box coordinates (+0.5), rounded as saved.
    boxes = np.round(np.concatenate([centres + ext_lo[:, None] + 0.5, centres + ext_hi[:, None] + 0.5], -1), 2)
    clip = ClipObjects(tuple(a[0] for a in attrs), tuple(a[1] for a in attrs), tuple(a[2] for a in attrs),
                       boxes, np.ones(boxes.shape[:2]))
    if _same_colour_overlap(clip):
        return None
    clip = replace(clip, visible=np.round(_visibility(polygons, height, width), 3))
    tint = rng.uniform(0.88, 1.08, len(attrs))
    colours = [tuple(float(min(255.0, v * k)) for v in COLOURS[c][::-1]) for (_, c, _), k in zip(attrs, tint)]
    return Scene(width, height, polygons, colours, clip)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 greyish texture: smooth noise, a gradient or stripes, fine grain, low-contrast clutter."""
    base = rng.uniform(70, 190) + rng.uniform(-18, 18, 3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    proj = xx * np.cos(theta) + yy * np.sin(theta)
    kind = rng.integers(3)
    if kind == 0:
        low = rng.uniform(-1, 1, (int(rng.integers(3, 8)), int(rng.integers(3, 8)), 3)).astype(np.float32)
        texture = cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC) * rng.uniform(15, 35)
    elif kind == 1:
        ramp = (proj - proj.min()) / max(float(np.ptp(proj)), 1.0) * 2 - 1
        texture = ramp[..., None] * rng.uniform(-35, 35, 3)
    else:
        wave = np.sin(2 * np.pi * proj / rng.uniform(8, 30) + rng.uniform(0, 2 * np.pi))
        texture = wave[..., None] * rng.uniform(5, 14) * rng.uniform(0.7, 1.3, 3)
    grain = rng.uniform(-1, 1, (height // 6 + 1, width // 6 + 1, 3)).astype(np.float32)
    texture = texture + cv2.resize(grain, (width, height), interpolation=cv2.INTER_LINEAR) * 6
    image = np.ascontiguousarray(np.clip(base + texture, 0, 255).astype(np.uint8))
    for _ in range(int(rng.integers(0, 7))):
        colour = tuple(float(v) for v in np.clip(base + rng.uniform(-30, 30, 3), 0, 255))
        p = rng.uniform([0, 0], [width, height], (2, 2)).astype(int)
        if rng.random() < 0.5:
            cv2.line(image, tuple(map(int, p[0])), tuple(map(int, p[1])), colour, int(rng.integers(1, 3)),
                     cv2.LINE_AA)
        else:
            long_axis = int(rng.integers(10, 40))
            axes = (long_axis, max(2, int(long_axis / rng.uniform(3, 6))))
            cv2.ellipse(image, tuple(map(int, p[0])), axes, float(rng.uniform(0, 180)), 0, 360, colour,
                        -1 if rng.random() < 0.5 else 1, cv2.LINE_AA)
    return image


def _draw(background: np.ndarray, polygons: list[np.ndarray], colours: list[tuple[float, float, float]]) -> np.ndarray:
    """The background with the objects (each (P, 2)) drawn over it in z-order (anti-aliased, darker rim)."""
    image = background.copy()
    for poly, colour in zip(polygons, colours):
        pts = _fixed(poly)
        cv2.fillPoly(image, [pts], colour, cv2.LINE_AA, shift=4)
        cv2.polylines(image, [pts], True, tuple(0.6 * c for c in colour), 1, cv2.LINE_AA, shift=4)
    return image


def render(scene: Scene, rng: np.random.Generator, plans: Sequence[FramePlan] | None = None,
           hard_rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """BGR uint8 frames: background, objects in z-order, the frame's degradations (``plans``), mild noise.

    ``rng`` draws exactly what it draws without ``plans``; the degradations' noise comes from ``hard_rng``.
    """
    h, w = scene.height, scene.width
    background = _background(rng, h, w)
    noise_bank = rng.normal(0, 2.5, (h + 16, w + 16, 3)).astype(np.float32)
    frames = []
    for t in range(scene.polygons[0].shape[0]):
        polygons = [poly[t] for poly in scene.polygons]
        plan = plans[t] if plans is not None else None
        if plan is not None and plan.blur is not None:  # the mean of the sub-exposures: (K, O, 2) shifts
            image = np.mean([_draw(background, [p + s for p, s in zip(polygons, shift)], scene.colours_bgr)
                             for shift in plan.blur], axis=0)
        else:
            image = _draw(background, polygons, scene.colours_bgr)
        if plan is not None:
            image = degrade_scene(image, plan)
        dy, dx = rng.integers(0, 17, 2)
        sign = 1.0 if rng.random() < 0.5 else -1.0
        noise = sign * noise_bank[dy:dy + h, dx:dx + w]
        if plan is not None:
            noise = noise + low_light_noise(plan, noise.shape, hard_rng)
        frames.append(np.clip(image + noise, 0, 255).astype(np.uint8))
    return frames
