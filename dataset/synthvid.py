"""synthvid: an offline synthetic referring-expression video set, generated from a seed.

It lets the project train and test with no download (CI, the demo). Every clip shows 3-5 coloured
shapes moving over a textured background; each (clip, expression) pair is one video entry in the
VID-Sentence format of docs/behaviour.md §1, plus an image-level export in the RefCOCO 'unc' item format.

Layout under the output root ``R`` (all paths inside the indexes are relative to ``R``)::

    frames/<split>/<video>/%06d.JPEG          JPEG frames (quality ``jpeg_quality``), frame index from 0
    VID/VID_video_level_<split>.pth           list[video], video = list[(image_path, [x1,y1,x2,y2], phrase)]
    VID/corpus.pth                            utils.word_utils corpus (<pad> = 0, <unk>, <eos>) of the
                                              training phrases, then the grammar's few other words
    VID/expressions_<split>.json              per video entry: video, phrase, types, target, num_frames,
                                              kind (the type the entry was generated for), reference
    VID/objects_<split>.json                  per clip: video, width, height, num_frames and, per object:
                                              id, shape, colour, size, z (draw order), moving, and per frame
                                              box, velocity (displacement to the next frame; the last
                                              repeats) and visible fraction
    synthvid/synthvid_<split>.pth             (image_file, '', [x,y,w,h], phrase, types) per (frame, expression),
                                              every ``image_stride``-th frame; the last field ('attributes'
                                              in RefCOCO) holds the expression types
    synthvid/corpus.pth                       the same corpus
    manifest.json                             parameters and file counts, written last (completion marker)

Each clip gets ``expressions_per_video`` entries (default 2), each for a different target. Boxes are
the full (unoccluded) object box in pixel-edge coordinates (pixel ``i`` spans ``[i, i+1]``).

Design, so that the set tests the method rather than a detector:

- Vocabulary: 5 shapes x 5 well-separated colours x 2 sizes (big is 1.8x small). Every expression needs
  the language: the target always has a look-alike (same shape, and usually same colour or size).
- Expression kinds (mix set by ``type_mix``, default 40/30/30):
  attribute ("the big red circle": the smallest set of colour/size words that singles the target out,
  shape alone never suffices); location ("the circle left of the blue square": the reference is unique
  by its own description, and the relation holds for the target and fails for every look-alike in every
  frame, with a margin of ``RELATION_MARGIN`` x the reference's extent, i.e. beyond its edge); motion.
- Motion and the model: co-attention between frames is symmetric in time (training pairs attend both
  ways, evaluation windows average past and future frames), so the model can tell moving from still
  but not left from right. A motion expression therefore separates the target from its look-alikes by
  moving vs still only ("the moving red circle", "the still blue square"); a direction word ("the red
  circle moving left") is added only when it is true in every frame and is never what disambiguates.
  Horizontal flips (which swap 'left'/'right' in the phrase) mirror both relations and motion, so
  flipped samples stay correct.
- Each phrase is checked against the ground-truth tracks by :func:`check_expression` (the same check the
  tests run on the saved ``objects_<split>.json``): it must denote the target and nothing else in every
  frame; the target (and reference) must be at least half visible in every frame (z-order is fixed per
  clip, objects of different colours overlap at times; objects of one colour never touch, they would
  merge into one blob). Failing scenes are resampled.
- Frames are 160-256 wide and 112-224 high; static camera, textured backgrounds (smooth noise,
  gradients, stripes, low-contrast lines and elongated ellipses that are not vocabulary shapes) and mild
  per-frame noise.

Determinism: every clip has its own ``numpy`` seed sequence derived from (seed, split, index), so the
same seed gives byte-identical indexes and JPEGs, whatever ``workers`` is.

CLI: ``python -m dataset.synthvid --out DIR --seed S [--train_videos N] [--frames MIN MAX] [--force]``.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dataset.common import default_corpus_path
from dataset.referit_loader import refer_index_path
from dataset.vid_loader import video_index_path
from utils.cli import run_main
from utils.io import UserInputError, atomic_save, atomic_write_text
from utils.word_utils import Corpus, build_corpus, save_corpus

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "val", "test")
KINDS = ("attribute", "location", "motion")
SHAPES = ("circle", "square", "triangle", "star", "cross")
COLOURS = {  # RGB, hues far apart and saturated; backgrounds are greyish
    "red": (215, 40, 40),
    "green": (40, 170, 60),
    "blue": (45, 80, 225),
    "yellow": (235, 215, 40),
    "purple": (150, 55, 195),
}
SIZES = {"small": 1.0, "big": 1.8}
RELATIONS = ("left of", "right of", "above", "below")
DIRECTIONS = ("left", "right", "up", "down")
OPTIONAL_ATTRIBUTES = ((), ("colour",), ("size",), ("colour", "size"))
SMALL_HALF = 0.055  # half extent of a small object, as a fraction of sqrt(width * height)
MOVING_MIN_SPEED = 1.0  # px/frame (mean over the clip) for an object to count as moving
RELATION_MARGIN = 0.5  # x the reference's width (left/right) or height (above/below): beyond its edge
VISIBLE_MIN = 0.5  # targets and references are at least this visible in every frame
MAX_ATTEMPTS = 1000
# Words every phrase is built from: added to the corpus so that val/test phrases never hit <unk>.
GRAMMAR_WORDS = ("the of that is not moving still", *SHAPES, *COLOURS, *SIZES, *RELATIONS, *DIRECTIONS)


@dataclass(frozen=True)
class SynthConfig:
    """Generation parameters (all of them go into the manifest)."""

    seed: int = 0
    train_videos: int = 150
    val_videos: int = 40
    test_videos: int = 60
    min_frames: int = 16
    max_frames: int = 24
    expressions_per_video: int = 2
    image_stride: int = 4
    type_mix: tuple[float, float, float] = (0.4, 0.3, 0.3)
    jpeg_quality: int = 90
    eval_frames: tuple[int, int] | None = None  # (MIN, MAX) frames of val/test clips; None: as training

    def validate(self) -> None:
        """Raise :class:`UserInputError` naming the flag of the first bad value."""
        for flag, n in (("--train_videos", self.train_videos), ("--val_videos", self.val_videos),
                        ("--test_videos", self.test_videos)):
            if n < 0:
                raise UserInputError(f"{flag} must be >= 0, got {n}")
        if not 2 <= self.min_frames <= self.max_frames:
            raise UserInputError(f"--frames needs 2 <= MIN <= MAX, got {self.min_frames} {self.max_frames}")
        if self.eval_frames is not None and not 2 <= self.eval_frames[0] <= self.eval_frames[1]:
            raise UserInputError(f"--eval_frames needs 2 <= MIN <= MAX, got {list(self.eval_frames)}")
        if not 1 <= self.expressions_per_video <= 3:
            raise UserInputError(f"--expressions must be 1, 2 or 3, got {self.expressions_per_video}")
        if self.image_stride < 1:
            raise UserInputError(f"--image_stride must be >= 1, got {self.image_stride}")
        if len(self.type_mix) != len(KINDS) or min(self.type_mix) < 0 or sum(self.type_mix) <= 0:
            raise UserInputError(f"--type_mix needs 3 non-negative weights (attribute location motion) "
                                 f"with a positive sum, got {list(self.type_mix)}")
        if not 1 <= self.jpeg_quality <= 100:
            raise UserInputError(f"--jpeg_quality must be in 1..100, got {self.jpeg_quality}")

    def videos(self, split: str) -> int:
        return {"train": self.train_videos, "val": self.val_videos, "test": self.test_videos}[split]

    def frame_range(self, split: str) -> tuple[int, int]:
        """(MIN, MAX) frames per clip of ``split``."""
        if split != "train" and self.eval_frames is not None:
            return self.eval_frames
        return self.min_frames, self.max_frames

    def as_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))


# ---------------------------------------------------------------------------------------------
# Expressions: a tiny grammar, its parser and its meaning over ground-truth object tracks.


@dataclass(frozen=True)
class Query:
    """What a phrase says: the target's description, and optionally its motion or a relation."""

    shape: str
    colour: str | None = None
    size: str | None = None
    motion: str | None = None  # 'moving' | 'still'
    direction: str | None = None  # only with motion == 'moving'; never needed to disambiguate
    relation: str | None = None  # one of RELATIONS
    ref: Query | None = None  # attribute-only description of the reference object

    def description(self) -> str:
        return " ".join(w for w in (self.size, self.colour, self.shape) if w)

    def attributes_only(self) -> Query:
        return Query(self.shape, self.colour, self.size)


def render_phrase(query: Query, alternative: bool = False) -> str:
    """The phrase of ``query``; ``alternative`` picks "the X that is not moving" over "the still X"."""
    desc = query.description()
    if query.relation is not None:
        return f"the {desc} {query.relation} the {query.ref.description()}"
    if query.motion == "moving":
        return f"the {desc} moving {query.direction}" if query.direction else f"the moving {desc}"
    if query.motion == "still":
        return f"the {desc} that is not moving" if alternative else f"the still {desc}"
    return f"the {desc}"


def _parse_description(words: list[str], pos: int, phrase: str) -> tuple[Query, int]:
    size = words[pos] if pos < len(words) and words[pos] in SIZES else None
    pos += size is not None
    colour = words[pos] if pos < len(words) and words[pos] in COLOURS else None
    pos += colour is not None
    if pos >= len(words) or words[pos] not in SHAPES:
        raise ValueError(f"expected a shape word at position {pos} of {phrase!r}")
    return Query(words[pos], colour, size), pos + 1


def parse_phrase(phrase: str) -> Query:
    """Inverse of :func:`render_phrase`; raises ``ValueError`` on anything outside the grammar."""
    words = phrase.split()
    if not words or words[0] != "the":
        raise ValueError(f"a phrase starts with 'the': {phrase!r}")
    motion = words[1] if len(words) > 1 and words[1] in ("moving", "still") else None
    query, pos = _parse_description(words, 1 + (motion is not None), phrase)
    rest = words[pos:]
    if motion is not None or not rest:
        if rest:
            raise ValueError(f"unexpected words after the shape in {phrase!r}")
        return replace(query, motion=motion)
    if rest == ["that", "is", "not", "moving"]:
        return replace(query, motion="still")
    if rest[0] == "moving" and (len(rest) == 1 or (len(rest) == 2 and rest[1] in DIRECTIONS)):
        return replace(query, motion="moving", direction=rest[1] if len(rest) == 2 else None)
    for relation in RELATIONS:
        n = len(relation.split())
        if " ".join(rest[:n]) == relation and rest[n:n + 1] == ["the"]:
            ref, end = _parse_description(rest, n + 1, phrase)
            if end != len(rest):
                raise ValueError(f"unexpected words after the reference in {phrase!r}")
            return replace(query, relation=relation, ref=ref)
    raise ValueError(f"cannot parse {phrase!r}")


def expression_words(query: Query) -> list[str]:
    """The colour/size words naming the target."""
    return [w for w in (query.size, query.colour) if w]


def expression_types(query: Query) -> list[str]:
    """Types the phrase uses: 'attribute' when it names the target's colour or size, plus 'location'/'motion'."""
    used = {"attribute": bool(query.colour or query.size), "location": query.relation is not None,
            "motion": query.motion is not None}
    return [kind for kind in KINDS if used[kind]]


@dataclass(frozen=True, eq=False)
class ClipObjects:
    """Ground truth of one clip: per-object attributes, boxes (O, T, 4) xyxy and visible fractions (O, T)."""

    shapes: tuple[str, ...]
    colours: tuple[str, ...]
    sizes: tuple[str, ...]
    boxes: np.ndarray
    visible: np.ndarray

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ClipObjects:
        """From one clip of ``objects_<split>.json``."""
        objects = record["objects"]
        return cls(tuple(o["shape"] for o in objects), tuple(o["colour"] for o in objects),
                   tuple(o["size"] for o in objects), np.array([o["box"] for o in objects], dtype=np.float64),
                   np.array([o["visible"] for o in objects], dtype=np.float64))

    def centres(self) -> np.ndarray:
        return (self.boxes[..., :2] + self.boxes[..., 2:]) / 2  # (O, T, 2)

    def motion_states(self) -> np.ndarray:
        """'moving' (mean speed >= MOVING_MIN_SPEED), 'still' (never moves) or '' (neither), per object."""
        speed = np.linalg.norm(np.diff(self.centres(), axis=1), axis=-1)  # (O, T-1)
        states = np.full(len(self.shapes), "", dtype=object)
        states[speed.mean(axis=1) >= MOVING_MIN_SPEED] = "moving"
        states[speed.max(axis=1) <= 1e-6] = "still"
        return states

    def direction_holds(self, index: int, direction: str) -> bool:
        """True when ``index`` moves towards ``direction`` in every frame, mostly along that axis."""
        step = np.diff(self.centres()[index], axis=0)  # (T-1, 2)
        axis, sign = {"left": (0, -1), "right": (0, 1), "up": (1, -1), "down": (1, 1)}[direction]
        along, across = sign * step[:, axis], np.abs(step[:, 1 - axis])
        return bool((along > 0).all() and along.sum() >= 2 * across.sum())

    def attribute_mask(self, query: Query) -> np.ndarray:
        """(O,) objects whose shape, colour and size fit the description (None matches anything)."""
        return np.array([s == query.shape and query.colour in (None, c) and query.size in (None, z)
                         for s, c, z in zip(self.shapes, self.colours, self.sizes)])


def resolve(query: Query, clip: ClipObjects) -> tuple[np.ndarray, np.ndarray]:
    """Objects the query denotes, per frame: ``(matches, unsure)``, both (O, T) bool.

    ``unsure`` marks look-alikes whose relation is within the margin or whose motion is neither clearly
    moving nor still. The direction word is ignored here (it never disambiguates, see the module doc).
    """
    frames = clip.boxes.shape[1]
    base = np.repeat(clip.attribute_mask(query)[:, None], frames, axis=1)  # (O, T)
    matches, unsure = base.copy(), np.zeros_like(base)
    if query.motion is not None:
        states = clip.motion_states()
        unsure |= base & (states == "")[:, None]
        matches &= (states == query.motion)[:, None]
    if query.relation is not None:
        refs = np.flatnonzero(clip.attribute_mask(query.ref))
        if len(refs) != 1:
            return np.zeros_like(base), base
        ref = refs[0]
        axis, sign = {"left of": (0, 1), "right of": (0, -1), "above": (1, 1), "below": (1, -1)}[query.relation]
        centres = clip.centres()[..., axis]  # (O, T)
        offset = sign * (centres[ref] - centres)  # (O, T), > 0 on the named side of the reference
        margin = RELATION_MARGIN * (clip.boxes[ref, :, axis + 2] - clip.boxes[ref, :, axis])  # (T,)
        unsure |= matches & (np.abs(offset) < margin)
        matches &= offset >= margin
        matches[ref], unsure[ref] = False, False
    return matches, unsure


def _denotes_only(query: Query, clip: ClipObjects, target: int) -> bool:
    matches, unsure = resolve(query, clip)
    return bool(matches[target].all() and (matches.sum(axis=0) == 1).all() and not unsure.any())


def check_expression(phrase: str, clip: ClipObjects, target: int, reference: int | None = None) -> list[str]:
    """Problems of ``phrase`` as an expression for object ``target`` of ``clip`` (empty list: fine).

    Checks: it parses; it denotes the target and nothing else in every frame; a relation's reference is
    unique by its description (and is ``reference`` when given); a direction word is true in every frame;
    an attribute-only phrase names a smallest distinguishing set and shape alone is not enough; a
    location/motion phrase needs its relation/motion (its description alone is ambiguous); the target and
    the reference are at least VISIBLE_MIN visible in every frame.
    """
    try:
        query = parse_phrase(phrase)
    except ValueError as err:
        return [str(err)]
    problems = []
    matches, unsure = resolve(query, clip)
    bad = np.flatnonzero(~matches[target] | (matches.sum(axis=0) != 1) | unsure.any(axis=0))
    if len(bad):
        problems.append(f"{phrase!r} does not denote only object {target} in frames {bad.tolist()}")
    if query.direction is not None and not clip.direction_holds(target, query.direction):
        problems.append(f"object {target} is not moving {query.direction} in every frame")
    described = query.attributes_only()
    if query.relation is None and query.motion is None:
        if clip.attribute_mask(Query(query.shape)).sum() == 1:
            problems.append(f"the shape alone singles out object {target}: {phrase!r} tests no attribute")
        if query.colour and query.size and (clip.attribute_mask(replace(described, colour=None)).sum() == 1
                                            or clip.attribute_mask(replace(described, size=None)).sum() == 1):
            problems.append(f"{phrase!r} is not a smallest distinguishing description")
    else:
        alike = clip.attribute_mask(described)
        if query.ref is not None:
            alike &= ~clip.attribute_mask(query.ref)  # an object is never related to itself
        if alike.sum() < 2:
            problems.append(f"{phrase!r}: the description alone already singles out the target")
    if query.ref is not None:
        refs = np.flatnonzero(clip.attribute_mask(query.ref))
        if len(refs) != 1 or (reference is not None and refs[0] != reference):
            problems.append(f"the reference '{query.ref.description()}' is not unique (objects {refs.tolist()})")
        elif clip.visible[refs[0]].min() < VISIBLE_MIN:
            problems.append(f"the reference object {refs[0]} is less than {VISIBLE_MIN:.0%} visible")
    if clip.visible[target].min() < VISIBLE_MIN:
        problems.append(f"object {target} is less than {VISIBLE_MIN:.0%} visible in some frame")
    return problems


# ---------------------------------------------------------------------------------------------
# Choosing expressions for a sampled clip.


def _describe(clip: ClipObjects, index: int, names: tuple[str, ...]) -> Query:
    return Query(clip.shapes[index], clip.colours[index] if "colour" in names else None,
                 clip.sizes[index] if "size" in names else None)


def _minimal_description(clip: ClipObjects, index: int, rng: np.random.Generator) -> Query | None:
    """A unique description of ``index`` with the fewest colour/size words (random among ties)."""
    for count in (0, 1, 2):
        options = [_describe(clip, index, names) for names in OPTIONAL_ATTRIBUTES if len(names) == count]
        options = [q for q in options if clip.attribute_mask(q).sum() == 1]
        if options:
            return options[rng.integers(len(options))]
    return None


def _attribute_query(clip: ClipObjects, target: int, rng: np.random.Generator) -> Query | None:
    query = _minimal_description(clip, target, rng)
    return None if query is None or query == Query(clip.shapes[target]) else query


def _motion_query(clip: ClipObjects, target: int, rng: np.random.Generator) -> Query | None:
    states = clip.motion_states()
    if states[target] == "":
        return None
    for k in rng.permutation(len(OPTIONAL_ATTRIBUTES)):
        query = _describe(clip, target, OPTIONAL_ATTRIBUTES[k])
        alike = np.flatnonzero(clip.attribute_mask(query))
        alike = alike[alike != target]
        if len(alike) and all(states[i] not in ("", states[target]) for i in alike):
            directions = [d for d in DIRECTIONS if states[target] == "moving" and clip.direction_holds(target, d)]
            direction = directions[0] if directions and rng.random() < 0.7 else None
            return replace(query, motion=states[target], direction=direction)
    return None


def _location_query(clip: ClipObjects, target: int, rng: np.random.Generator) -> Query | None:
    for k in rng.permutation(len(OPTIONAL_ATTRIBUTES)):
        query = _describe(clip, target, OPTIONAL_ATTRIBUTES[k])
        alike = clip.attribute_mask(query)
        for ref in rng.permutation(len(clip.shapes)):
            if ref == target or alike.sum() - alike[ref] < 2 or clip.visible[ref].min() < VISIBLE_MIN:
                continue
            ref_query = _minimal_description(clip, ref, rng)
            if ref_query is None:
                continue
            for r in rng.permutation(len(RELATIONS)):
                candidate = replace(query, relation=RELATIONS[r], ref=ref_query)
                if _denotes_only(candidate, clip, target):
                    return candidate
    return None


QUERY_MAKERS = {"attribute": _attribute_query, "location": _location_query, "motion": _motion_query}


# ---------------------------------------------------------------------------------------------
# Scenes: objects, trajectories, visibility, rendering.


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
class _Scene:
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


def _sample_scene(rng: np.random.Generator, width: int, height: int, frames: int) -> _Scene | None:
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
    return _Scene(width, height, polygons, colours, clip)


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


def _render(scene: _Scene, rng: np.random.Generator) -> list[np.ndarray]:
    """BGR uint8 frames: background, objects in z-order (anti-aliased, darker rim), mild noise."""
    h, w = scene.height, scene.width
    background = _background(rng, h, w)
    noise_bank = rng.normal(0, 2.5, (h + 16, w + 16, 3)).astype(np.float32)
    frames = []
    for t in range(scene.polygons[0].shape[0]):
        image = background.copy()
        for poly, colour in zip(scene.polygons, scene.colours_bgr):
            pts = _fixed(poly[t])
            cv2.fillPoly(image, [pts], colour, cv2.LINE_AA, shift=4)
            cv2.polylines(image, [pts], True, tuple(0.6 * c for c in colour), 1, cv2.LINE_AA, shift=4)
        dy, dx = rng.integers(0, 17, 2)
        sign = 1.0 if rng.random() < 0.5 else -1.0
        noise = sign * noise_bank[dy:dy + h, dx:dx + w]
        frames.append(np.clip(image + noise, 0, 255).astype(np.uint8))
    return frames


# ---------------------------------------------------------------------------------------------
# One clip: sample until the requested expressions exist, then write its frames.


@dataclass(frozen=True)
class _ClipTask:
    out: Path
    split: str
    index: int
    kinds: tuple[str, ...]
    seed: np.random.SeedSequence
    min_frames: int
    max_frames: int
    jpeg_quality: int


def _choose_expressions(scene: _Scene, kinds: Sequence[str], rng: np.random.Generator) -> list[tuple]:
    """[(kind, target, query, alternative wording)] for distinct targets, or [] if this scene cannot host them.

    Location and motion take the first target (random order) that has an expression of their kind; attribute
    takes, half of the time, the target needing the most words (so "the big red circle" is not rare).
    """
    clip, chosen, used = scene.clip, [], set()
    for kind in kinds:
        found = []
        for target in rng.permutation(len(clip.shapes)):
            if target in used or clip.visible[target].min() < VISIBLE_MIN:
                continue
            query = QUERY_MAKERS[kind](clip, int(target), rng)
            if query is not None:
                found.append((int(target), query))
                if kind != "attribute":
                    break
        if not found:
            return []
        if rng.random() < 0.5:
            found.sort(key=lambda tq: -len(expression_words(tq[1])))
        target, query = found[0]
        chosen.append((kind, target, query, bool(rng.random() < 0.5)))
        used.add(target)
    return chosen


def _make_clip(task: _ClipTask) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Sample, check, render and write one clip; returns its objects record and its expression entries."""
    rng = np.random.default_rng(task.seed)
    name = f"vid_{task.index:05d}"
    frames = int(rng.integers(task.min_frames, task.max_frames + 1))
    width, height = int(rng.integers(160, 257)), int(rng.integers(112, 225))
    for _ in range(MAX_ATTEMPTS):
        scene = _sample_scene(rng, width, height, frames)
        if scene is None:
            continue
        chosen = _choose_expressions(scene, task.kinds, rng)
        phrases = [render_phrase(q, alt) for _, _, q, alt in chosen]
        refs = [int(np.flatnonzero(scene.clip.attribute_mask(q.ref))[0]) if q.ref else None
                for _, _, q, _ in chosen]
        if chosen and not any(check_expression(p, scene.clip, t, r)
                              for p, (_, t, _, _), r in zip(phrases, chosen, refs)):
            break
    else:
        raise RuntimeError(f"synthvid: no scene for {task.split}/{name} with expressions {task.kinds} after "
                           f"{MAX_ATTEMPTS} attempts")
    folder = task.out / "frames" / task.split / name
    folder.mkdir(parents=True, exist_ok=True)
    for t, image in enumerate(_render(scene, rng)):
        path = folder / f"{t:06d}.JPEG"
        tmp = folder / f".{t:06d}.tmp.JPEG"
        if not cv2.imwrite(str(tmp), image, [cv2.IMWRITE_JPEG_QUALITY, task.jpeg_quality]):
            raise OSError(f"could not write {tmp}")
        os.replace(tmp, path)
    clip = scene.clip
    step = np.round(np.diff(clip.centres(), axis=1), 2)  # (O, T-1, 2)
    velocity = np.concatenate([step, step[:, -1:]], axis=1)  # last frame repeats the previous step
    states = clip.motion_states()
    record = {"video": name, "width": width, "height": height, "num_frames": frames, "objects": [
        {"id": i, "shape": clip.shapes[i], "colour": clip.colours[i], "size": clip.sizes[i], "z": i,
         "moving": bool(states[i] == "moving"), "box": clip.boxes[i].tolist(),
         "velocity": velocity[i].tolist(), "visible": clip.visible[i].tolist()} for i in range(len(clip.shapes))]}
    entries = [{"video": name, "phrase": p, "types": expression_types(q), "target": t, "num_frames": frames,
                "kind": kind, "reference": r} for p, (kind, t, q, _), r in zip(phrases, chosen, refs)]
    return record, entries


def _kind_schedule(count: int, mix: Sequence[float], rng: np.random.Generator) -> list[str]:
    """``count`` kinds in proportion to ``mix`` (largest remainder), shuffled."""
    share = np.asarray(mix, dtype=np.float64) / sum(mix) * count
    counts = np.floor(share).astype(int)
    for k in np.argsort(-(share - counts), kind="stable")[: count - counts.sum()]:
        counts[k] += 1
    kinds = np.repeat(np.array(KINDS), counts)
    return [str(k) for k in kinds[rng.permutation(count)]]


def _split_tasks(out: Path, config: SynthConfig, split_index: int) -> list[_ClipTask]:
    split, n, per = SPLITS[split_index], config.videos(SPLITS[split_index]), config.expressions_per_video
    seeds = np.random.SeedSequence([config.seed, split_index]).spawn(n + 1)
    kinds = _kind_schedule(n * per, config.type_mix, np.random.default_rng(seeds[0]))
    return [_ClipTask(out, split, i, tuple(kinds[i * per:(i + 1) * per]), seeds[i + 1], *config.frame_range(split),
                      config.jpeg_quality) for i in range(n)]


# ---------------------------------------------------------------------------------------------
# Writing the set, idempotently.


def _frame_path(split: str, video: str, t: int) -> str:
    return f"frames/{split}/{video}/{t:06d}.JPEG"


def _xyxy_to_xywh(box: Sequence[float]) -> list[float]:
    return [box[0], box[1], round(box[2] - box[0], 2), round(box[3] - box[1], 2)]


def _write_split(out: Path, split: str, records: list[dict], entries: list[dict], image_stride: int) -> dict:
    """Write the split's JSON files, then the indexes built from what they say.

    Building the indexes from the parsed JSON makes their pickles independent of which process made
    each clip (pickle shares equal objects by identity), so they are byte-identical for any ``workers``.
    """
    entries_text = json.dumps(entries, indent=1) + "\n"
    records_text = json.dumps(records, separators=(",", ":")) + "\n"
    atomic_write_text(entries_text, out / "VID" / f"expressions_{split}.json")
    atomic_write_text(records_text, out / "VID" / f"objects_{split}.json")
    entries, records = json.loads(entries_text), json.loads(records_text)
    boxes = {r["video"]: [o["box"] for o in r["objects"]] for r in records}
    videos = [[(_frame_path(split, e["video"], t), list(boxes[e["video"]][e["target"]][t]), e["phrase"])
               for t in range(e["num_frames"])] for e in entries]
    images = [(path, "", _xyxy_to_xywh(box), phrase, entries[k]["types"])
              for k, video in enumerate(videos) for path, box, phrase in video[::image_stride]]
    atomic_save(videos, video_index_path(out, "VID", split))
    atomic_save(images, refer_index_path(out, "synthvid", split))
    return {"videos": len(records), "entries": len(entries), "image_items": len(images),
            "frames": [r["num_frames"] for r in records],
            "kinds": {k: sum(e["kind"] == k for e in entries) for k in KINDS}}


def build_synthvid_corpus(train_phrases: Sequence[str]) -> Corpus:
    """Corpus of the training phrases, then the rest of the (closed) grammar's words (never <unk> later)."""
    return build_corpus([*train_phrases, *GRAMMAR_WORDS])


def _expected_files(manifest: dict[str, Any]) -> list[str]:
    """The set's files, relative to its root."""
    files = [default_corpus_path("", "VID").as_posix(), default_corpus_path("", "synthvid").as_posix()]
    for split in SPLITS:
        files += [video_index_path("", "VID", split).as_posix(), f"VID/expressions_{split}.json",
                  f"VID/objects_{split}.json", refer_index_path("", "synthvid", split).as_posix()]
        for i, frames in enumerate(manifest["counts"][split]["frames"]):
            files += [_frame_path(split, f"vid_{i:05d}", t) for t in range(frames)]
    return files


def _is_complete(out: Path, config: SynthConfig, force: bool) -> bool:
    """True if ``out`` holds a complete set with these parameters; raise if it holds anything else."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise UserInputError(f"synthvid output {out} exists and is not a folder")
    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            same = manifest.get("format_version") == FORMAT_VERSION and manifest.get("config") == config.as_json()
            missing = [f for f in _expected_files(manifest) if not (out / f).is_file()] if same else []
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise UserInputError(f"{manifest_path} is not a synthvid manifest ({err}); pass --force to "
                                 f"regenerate over it") from err
        if same and not missing:
            return True
        reason = (f"it is incomplete ({len(missing)} files missing, e.g. {missing[0]})" if same
                  else f"it was generated with other parameters ({manifest.get('config')})")
    else:
        if not any(out.iterdir()):
            return False
        reason = f"it is not empty and has no {MANIFEST} (foreign data or an interrupted run)"
    if force:
        return False
    raise UserInputError(f"synthvid output {out}: {reason}. Refusing to overwrite; pass --force to write the "
                         f"set over it (files of the set are replaced, other files are kept), or choose "
                         f"another --out")


def generate(out: str | os.PathLike, config: SynthConfig, force: bool = False, workers: int = 1) -> bool:
    """Write the set under ``out``; returns False (and writes nothing) if it is already there.

    Refuses (``UserInputError``) a non-empty ``out`` that is not this very set unless ``force``; with
    ``force`` the set's files are written over it and nothing else is deleted.
    """
    config.validate()
    out = Path(out)
    if _is_complete(out, config, force):
        return False
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    results = {}
    for split_index, split in enumerate(SPLITS):
        tasks = _split_tasks(out, config, split_index)
        if workers > 1 and len(tasks) > 1:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                results[split] = pool.map(_make_clip, tasks, chunksize=4)
        else:
            results[split] = [_make_clip(task) for task in tasks]
    corpus = build_synthvid_corpus([e["phrase"] for _, entries in results["train"] for e in entries])
    save_corpus(corpus, default_corpus_path(out, "VID"))
    save_corpus(corpus, default_corpus_path(out, "synthvid"))
    counts = {split: _write_split(out, split, [r for r, _ in results[split]],
                                  [e for _, entries in results[split] for e in entries], config.image_stride)
              for split in SPLITS}
    manifest = {"format_version": FORMAT_VERSION, "generator": "dataset.synthvid", "config": config.as_json(),
                "counts": counts, "total_frames": sum(sum(c["frames"]) for c in counts.values()),
                "vocabulary": len(corpus)}
    atomic_write_text(json.dumps(manifest, indent=1) + "\n", out / MANIFEST)
    return True


def load_clips(root: str | os.PathLike, split: str) -> dict[str, ClipObjects]:
    """Ground truth of every clip of ``split`` from ``objects_<split>.json``, keyed by video name."""
    path = Path(root) / "VID" / f"objects_{split}.json"
    if not path.is_file():
        raise UserInputError(f"synthvid objects file not found: {path}")
    return {r["video"]: ClipObjects.from_record(r) for r in json.loads(path.read_text(encoding="utf-8"))}


def run(args: argparse.Namespace) -> None:
    """Generate the set the parsed command line describes."""
    if len(args.frames) not in (1, 2):
        raise UserInputError(f"--frames takes MIN MAX or one N, got {args.frames}")
    config = SynthConfig(args.seed, args.train_videos, args.val_videos, args.test_videos, args.frames[0],
                         args.frames[-1], args.expressions, args.image_stride, tuple(args.type_mix),
                         args.jpeg_quality, tuple(args.eval_frames) if args.eval_frames else None)
    written = generate(args.out, config, force=args.force, workers=max(1, args.workers))
    print(f"synthvid: {'wrote' if written else 'already complete, nothing to do:'} {args.out}")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dataset.synthvid", description=__doc__.split("\n")[0])
    defaults = SynthConfig()
    parser.add_argument("--out", default="data/synthvid", help="output root R (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--train_videos", type=int, default=defaults.train_videos)
    parser.add_argument("--val_videos", type=int, default=defaults.val_videos)
    parser.add_argument("--test_videos", type=int, default=defaults.test_videos)
    parser.add_argument("--frames", type=int, nargs="+", metavar="N",
                        default=[defaults.min_frames, defaults.max_frames],
                        help="frames per clip: MIN MAX, or one fixed N (default: %(default)s)")
    parser.add_argument("--eval_frames", type=int, nargs=2, metavar=("MIN", "MAX"), default=None,
                        help="frames per val/test clip (default: as --frames)")
    parser.add_argument("--expressions", type=int, default=defaults.expressions_per_video,
                        help="expressions (= video entries) per clip, each for a different target")
    parser.add_argument("--image_stride", type=int, default=defaults.image_stride,
                        help="image-level export keeps every N-th frame (default: %(default)s)")
    parser.add_argument("--type_mix", type=float, nargs=3, default=list(defaults.type_mix),
                        metavar=("ATTRIBUTE", "LOCATION", "MOTION"))
    parser.add_argument("--jpeg_quality", type=int, default=defaults.jpeg_quality)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="processes (the output does not depend on it)")
    parser.add_argument("--force", action="store_true",
                        help="write over a non-empty --out that is not this very set (other files are kept)")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_main(run, get_args_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
