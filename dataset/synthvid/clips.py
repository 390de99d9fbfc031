"""One clip: sample scenes until the requested expressions exist, then write its frames."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dataset.synthvid.config import SPLITS, SynthConfig
from dataset.synthvid.expressions import (
    KINDS,
    VISIBLE_MIN,
    check_expression,
    expression_types,
    expression_words,
    render_phrase,
)
from dataset.synthvid.hard import HardFrames, plan_frames
from dataset.synthvid.queries import QUERY_MAKERS
from dataset.synthvid.scene import Scene, render, sample_scene
from utils.io import atomic_file

MAX_ATTEMPTS = 1000


@dataclass(frozen=True)
class ClipTask:
    out: Path
    split: str
    index: int
    kinds: tuple[str, ...]
    seed: np.random.SeedSequence
    min_frames: int
    max_frames: int
    jpeg_quality: int
    hard: HardFrames


def _choose_expressions(scene: Scene, kinds: Sequence[str], rng: np.random.Generator) -> list[tuple]:
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


def make_clip(task: ClipTask) -> tuple[dict[str, Any], list[dict[str, Any]], list[list[str]]]:
    """Sample, check, render and write one clip; returns its objects record, its expression entries and the
    degradation names of each frame."""
    rng = np.random.default_rng(task.seed)
    name = f"vid_{task.index:05d}"
    frames = int(rng.integers(task.min_frames, task.max_frames + 1))
    width, height = int(rng.integers(160, 257)), int(rng.integers(112, 225))
    for _ in range(MAX_ATTEMPTS):
        scene = sample_scene(rng, width, height, frames)
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
    plans = hard_rng = None
    if task.hard.enabled:  # a child of the clip's seed: the clip's own draws stay what they are without it
        hard_rng = np.random.default_rng(np.random.SeedSequence(task.seed.entropy,
                                                                spawn_key=(*task.seed.spawn_key, 1)))
        plans = plan_frames(task.hard, scene.clip, [t for _, t, _, _ in chosen], width, height, hard_rng)
    for t, image in enumerate(render(scene, rng, plans, hard_rng)):
        path = folder / f"{t:06d}.JPEG"
        encoded, data = cv2.imencode(".JPEG", image, [cv2.IMWRITE_JPEG_QUALITY, task.jpeg_quality])
        if not encoded:
            raise OSError(f"could not encode {path}")
        with atomic_file(path, "wb", sync=False) as f:
            f.write(data.tobytes())
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
    return record, entries, [plan.labels() for plan in plans] if plans else [[] for _ in range(frames)]


def _kind_schedule(count: int, mix: Sequence[float], rng: np.random.Generator) -> list[str]:
    """``count`` kinds in proportion to ``mix`` (largest remainder), shuffled."""
    share = np.asarray(mix, dtype=np.float64) / sum(mix) * count
    counts = np.floor(share).astype(int)
    for k in np.argsort(-(share - counts), kind="stable")[: count - counts.sum()]:
        counts[k] += 1
    kinds = np.repeat(np.array(KINDS), counts)
    return [str(k) for k in kinds[rng.permutation(count)]]


def split_tasks(out: Path, config: SynthConfig, split_index: int) -> list[ClipTask]:
    split, n, per = SPLITS[split_index], config.videos(SPLITS[split_index]), config.expressions_per_video
    seeds = np.random.SeedSequence([config.seed, split_index]).spawn(n + 1)
    kinds = _kind_schedule(n * per, config.type_mix, np.random.default_rng(seeds[0]))
    return [ClipTask(out, split, i, tuple(kinds[i * per:(i + 1) * per]), seeds[i + 1], *config.frame_range(split),
                      config.jpeg_quality, config.hard_frames) for i in range(n)]
