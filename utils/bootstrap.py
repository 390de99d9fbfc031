"""Percentile bootstrap intervals of a mean, resampling clusters (videos) rather than single frames.

Frames of one video are not independent samples: their outcomes move together (one hard object, one confusing
sentence). Resampling whole clusters keeps that correlation, so the interval is not falsely narrow. The mean of
a replicate is the pooled mean of the frames of its drawn clusters (sum of frame values / number of frames).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

REPLICATES = 2000
LEVEL = 0.95


def cluster_sums(values: np.ndarray, clusters: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster sums of ``values`` (..., N) over their last axis, (..., C), and the frame counts (C,)."""
    _, inverse = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)
    values = np.asarray(values, dtype=np.float64)
    sums = np.zeros((inverse.max() + 1, *values.shape[:-1]))
    np.add.at(sums, inverse, np.moveaxis(values, -1, 0))
    return np.moveaxis(sums, 0, -1), np.bincount(inverse).astype(np.float64)


def _interval(replicates: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def cluster_bootstrap(values: Sequence[float], clusters: Sequence, replicates: int = REPLICATES,
                      level: float = LEVEL, seed: int = 0) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``values`` (N,) and its ``level`` percentile interval from
    ``replicates`` resamplings of the clusters (N labels) with replacement."""
    sums, counts = cluster_sums(np.asarray(values, dtype=np.float64), clusters)
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(counts), size=(replicates, len(counts)))  # (R, C)
    means = sums[drawn].sum(1) / counts[drawn].sum(1)
    return float(sums.sum() / counts.sum()), *_interval(means, level)


def two_level_bootstrap(values: np.ndarray, clusters: Sequence, replicates: int = REPLICATES,
                        level: float = LEVEL, seed: int = 0) -> tuple[float, float, float]:
    """``(mean, low, high)`` for ``values`` (S, N): one row per seed over the same N frames. Each replicate draws
    S seeds with replacement, then for each drawn seed the clusters with replacement, and averages the seeds'
    pooled means: the interval covers both the training-seed spread and the choice of test videos."""
    values = np.asarray(values, dtype=np.float64)
    sums, counts = cluster_sums(values, clusters)  # (S, C), (C,)
    s, c = sums.shape
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, s, size=(replicates, s))  # (R, S)
    drawn = rng.integers(0, c, size=(replicates, s, c))  # (R, S, C)
    means = (sums[seeds[..., None], drawn].sum(2) / counts[drawn].sum(2)).mean(1)  # (R,)
    return float(values.mean()), *_interval(means, level)
