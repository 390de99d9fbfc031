"""Choosing an expression of each kind (attribute, location, motion) for a target of a sampled clip."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from dataset.synthvid.expressions import (
    DIRECTIONS,
    OPTIONAL_ATTRIBUTES,
    RELATIONS,
    VISIBLE_MIN,
    ClipObjects,
    Query,
    denotes_only,
)


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
                if denotes_only(candidate, clip, target):
                    return candidate
    return None


QUERY_MAKERS = {"attribute": _attribute_query, "location": _location_query, "motion": _motion_query}
