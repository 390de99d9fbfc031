"""The paper's temporal re-scoring of a frame's candidates over its window (docs/behaviour.md §8).

The cache files it reads, and the driver that streams them video by video, are in :mod:`app.cache`.
"""
from __future__ import annotations

import torch
from torch import Tensor

from utils.box_ops import first_argmax


def rescore_window(
    centre_feats: Tensor, window_feats: Tensor, window_scores: Tensor, valid: Tensor
) -> tuple[Tensor, Tensor]:
    """Fused scores of the centre candidates and the best one (docs/behaviour.md §8); any leading batch dims ``...``.

    centre_feats (..., K, E); window_feats (..., T, K, E); window_scores (..., T, K); valid (..., T) bool.
    For candidate m and frame j: n* = first argmax_n <f_m, g_jn>, s_j = window_scores[j, n*];
    w = softmax_j(max_n <f_m, g_jn>) over all T frames, then w_j = 0 for invalid j.
    Returns (best candidate (...,) long, fused scores (..., K)).
    """
    sim = torch.einsum("...me,...tne->...mtn", centre_feats, window_feats)  # (..., K, T, K)
    best_n = first_argmax(sim, dim=-1)  # (..., K, T)
    scores = window_scores.unsqueeze(-3).expand(sim.shape)  # (..., K, T, K)
    matched = scores.gather(-1, best_n.unsqueeze(-1)).squeeze(-1)  # (..., K, T)
    # quirk: invalid (clipped) frames are zeroed after the softmax, without renormalising (docs/behaviour.md §8).
    weights = sim.amax(dim=-1).softmax(dim=-1) * valid.unsqueeze(-2).to(sim.dtype)  # (..., K, T)
    fused = (weights * matched).sum(-1)  # (..., K)
    return first_argmax(fused, dim=-1), fused
