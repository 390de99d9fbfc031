"""Expressions: a tiny grammar, its parser and its meaning over ground-truth object tracks.

The vocabulary is closed (shapes, colours, sizes, relations, directions); :func:`check_expression` is the
check every generated phrase passes, and the one the tests run on the saved ``objects_<split>.json``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

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
MOVING_MIN_SPEED = 1.0  # px/frame (mean over the clip) for an object to count as moving
RELATION_MARGIN = 0.5  # x the reference's width (left/right) or height (above/below): beyond its edge
VISIBLE_MIN = 0.5  # targets and references are at least this visible in every frame
# Words every phrase is built from: added to the corpus so that val/test phrases never hit <unk>.
GRAMMAR_WORDS = ("the of that is not moving still", *SHAPES, *COLOURS, *SIZES, *RELATIONS, *DIRECTIONS)


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


def denotes_only(query: Query, clip: ClipObjects, target: int) -> bool:
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
