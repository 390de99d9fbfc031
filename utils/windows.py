"""The window rule (docs/behaviour.md §1) and the window lengths.

The window of frame ``t`` with ``k`` frames is ``t - floor(k/2) ... t + ceil(k/2) - 1``: the pair (t-1, t) for
``k = 2`` (training), ``t-2 .. t+2`` for ``k = 5`` (evaluation and post-processing). Near the ends of a video some
positions fall outside it: the loaders repeat the first or last frame there (:func:`window_indices`), the
post-processing marks them invalid and fills them with the centre frame (:func:`window_sources`).
"""
from __future__ import annotations

import torch
from torch import Tensor

TRAIN_FRAMES = 2  # training samples are frame pairs (t-1, t) (docs/behaviour.md §5, §6)
EVAL_FRAMES = 5  # evaluation and post-processing use 5-frame windows centred on each frame (§7, §8)


def window_positions(t: int, k: int) -> range:
    """Frame indices of the window of frame ``t`` before any clipping: ``t - k//2 ... t + ceil(k/2) - 1``."""
    if k < 1:
        raise ValueError(f"a window needs k >= 1 frames, got k={k}")
    return range(t - k // 2, t + (k + 1) // 2)


def window_centre(k: int) -> int:
    """Position of frame ``t`` itself in its window of ``k`` frames (``floor(k/2)``: 2 of 5, 1 of the pair)."""
    return -window_positions(0, k).start


def window_indices(t: int, n: int, k: int) -> list[int]:
    """The window of frame ``t`` of a video of ``n`` frames, clipped into ``[0, n-1]`` (what the loaders read)."""
    if not 0 <= t < n:
        raise ValueError(f"window_indices needs 0 <= t < n, got t={t}, n={n}")
    return [min(max(i, 0), n - 1) for i in window_positions(t, k)]


def window_sources(num_video_frames: int, k: int, first: int = 0) -> tuple[Tensor, Tensor]:
    """Post-processing's windows of the frames ``first .. n - 1`` of a video: which frame fills each position, and
    whether it is valid.

    A position outside the video is invalid and filled with the centre frame itself (the reference loads the
    centre's file when the neighbour's file does not exist). Returns (source (n', k) long, valid (n', k) bool).
    """
    t = torch.arange(first, num_video_frames)[:, None]  # (n', 1)
    offsets = window_positions(0, k)
    unclipped = t + torch.arange(offsets.start, offsets.stop)[None]  # (n', k)
    valid = (unclipped >= 0) & (unclipped < num_video_frames)
    return torch.where(valid, unclipped, t), valid
