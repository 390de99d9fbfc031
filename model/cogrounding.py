"""CG-SL-Att: the image model with co-grounding between the frames of a video (docs/behaviour.md §5).

Each grounded frame X replaces its ``fvisu`` by a co-grounded map: every cell of X receives the
average of another frame Y's cells weighted by ``softmax_j(10 <x_i, y_j>)``, and
``corr_conv(cat(x, attended))`` + L2 norm fuses the two. Evaluation runs :meth:`frame_features` once per
frame and :meth:`ground_windows` on any number of windows built from those features;
``forward(..., 'window')`` is exactly that, so both paths share one code path.

The fusion is linear in the attended map, and the attended map is a weighted average of Y's cells, so the
attended half of ``corr_conv`` is applied to Y's cells before the average (associativity): once per frame in
:meth:`frame_features` instead of once per (frame, partner) pair, and a frame is a partner in 4 windows.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from model.darknet import DEFAULT_CFG
from model.grounding import LAYOUTS, GroundingModel
from model.layers import ConvBatchNormReLU, l2_normalize, split_conv1x1
from utils.amp import autocast_off
from utils.geometry import NUM_SCALES
from utils.windows import window_centre

ATTENTION_SCALE = 10.0  # softmax temperature of the co-attention (docs/behaviour.md §5)


class CoGroundingModel(GroundingModel):
    """The video model: :class:`GroundingModel` plus ``corr_conv`` (one 1x1 ConvBNReLU 2E -> E per scale).

    ``forward(images (B, T, 3, S, S), word_id (B, L), layout)``:

    - ``'pairs'`` (training layout, T = 2): each frame attends to the other frame of its sample and every
      frame is grounded with the sample's phrase; outputs have B' = 2B rows ordered [b0f0, b0f1, b1f0, ...].
    - ``'window'`` (T odd): the centre frame attends to each of the other T - 1 frames, the T - 1 fused maps
      are averaged, and only the centre is grounded (B' = B); adds ``corr_feat`` (the averaged map).

    Outputs as :class:`GroundingModel`, with ``visual`` the co-grounded map.
    """

    def __init__(
        self,
        vocab_size: int,
        cfg_path: str | os.PathLike = DEFAULT_CFG,
        image_size: int = 256,
        emb_size: int = 512,
        light: bool = False,
    ) -> None:
        super().__init__(vocab_size, cfg_path, image_size, emb_size, light)
        self.corr_conv = nn.ModuleList(
            nn.Sequential(ConvBatchNormReLU(2 * emb_size, emb_size, 1)) for _ in range(NUM_SCALES)
        )
        # keep the reference's module order (..., mapping_lang, corr_conv, fcn_emb, fcn_out): parameter order
        # decides how a saved optimizer state maps onto the parameters
        self.fcn_emb = self._modules.pop("fcn_emb")
        self.fcn_out = self._modules.pop("fcn_out")

    def frame_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Per scale (F, h, w, 2E), channels last: ``fvisu`` (docs/behaviour.md §4.1), then its projection by the
        attended half of ``corr_conv``. Channels last because the co-attention reads a frame's cells as rows."""
        feats = []
        for scale, visual in enumerate(super().frame_features(images)):
            _, w_attended = split_conv1x1(self.corr_conv[scale][0].conv, [visual.shape[1]] * 2)
            cells = visual.permute(0, 2, 3, 1)  # (F, h, w, E)
            feats.append(torch.cat([cells, cells @ w_attended.flatten(1).t()], dim=3))  # (F, h, w, 2E)
        return feats

    def co_attend(self, x: torch.Tensor, partners: list[torch.Tensor], scale: int) -> torch.Tensor:
        """Co-grounded cells of frames ``x`` (M, hw, 2E), each attending to its frames in ``partners`` (each
        (M, P_i, hw, 2E); several parts so that a window's frames around its centre need no gathering copy).

        Both are cells of :meth:`frame_features`. Every cell of x receives the average of the cells of y weighted
        by ``softmax_j(10 <x_i, y_j>)``; then ``corr_conv(cat(x, attended))`` + L2 norm, where the attended half
        of the 1x1 conv was already applied to y's cells. Returns (M, P, hw, E), P = sum of the P_i.
        """
        e = x.shape[2] // 2
        query = x[..., :e]  # (M, hw, E)
        block = self.corr_conv[scale][0]
        w_x, _ = split_conv1x1(block.conv, [e, e])
        centre = query @ w_x.flatten(1).t()  # (M, hw, E): the query's half of corr_conv
        with autocast_off(x.device):  # the softmax of 10 x cosine is sensitive to rounding: float32 under --amp too
            query = query.float()
            fused = torch.cat([
                centre[:, None].float() + F.scaled_dot_product_attention(
                    query[:, None].expand(-1, y.shape[1], -1, -1), y[..., :e].float(), y[..., e:].float(),
                    scale=ATTENTION_SCALE)
                for y in partners], dim=1)  # (M, P, hw, E)
            m, p, n, _ = fused.shape
            fused = block.relu(block.bn(fused.flatten(0, 1).transpose(1, 2).unsqueeze(3)))  # (MP, E, hw, 1)
            return l2_normalize(fused.squeeze(3).transpose(1, 2), dim=2).unflatten(0, (m, p))  # (M, P, hw, E)

    def ground_windows(self, frame_feats: list[torch.Tensor], word_id: torch.Tensor,
                       sentences: torch.Tensor | None = None) -> dict:
        """Window layout from precomputed :meth:`frame_features`, per scale (W, T, h, w, 2E), T odd, centre T // 2.

        ``sentences`` (W,) long: how many rows of ``word_id`` (R, L) each window grounds, in order (default one
        each). The co-grounded map does not depend on the sentence, so it is computed once per window and
        shared by its sentences; outputs have R rows.
        quirk (docs/behaviour.md §5): the T - 1 co-grounded maps of the centre are averaged without renormalisation.
        """
        t = frame_feats[0].shape[1]
        if t < 3 or t % 2 == 0:
            raise ValueError(f"a window needs an odd number of frames >= 3, got {t}")
        c = window_centre(t)
        corr = []
        for s, f in enumerate(frame_feats):
            cells = f.flatten(2, 3)  # (W, T, hw, 2E)
            attended = self.co_attend(cells[:, c], [cells[:, :c], cells[:, c + 1:]], s).mean(1)  # (W, hw, E)
            corr.append(_cells_to_map(attended, *f.shape[2:4]))  # (W, E, h, w)
        if sentences is not None:
            corr = [m.repeat_interleave(sentences.to(m.device), dim=0) for m in corr]  # (R, E, h, w)
        out = self.ground(corr, word_id)
        out["corr_feat"] = corr
        return out

    def forward(self, images: torch.Tensor, word_id: torch.Tensor, layout: str) -> dict:
        """Ground ``word_id`` (B, L) in ``images`` (B, T, 3, S, S); see the class docstring for ``layout``."""
        b, t = images.shape[:2]
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if layout == "pairs" and t != 2:
            raise ValueError(f"the 'pairs' layout needs 2 frames per sample, got {t}")
        feats = self.frame_features(images.flatten(0, 1))  # per scale (B*T, h, w, 2E)
        if layout == "window":
            return self.ground_windows([f.unflatten(0, (b, t)) for f in feats], word_id)
        corr = []
        for s, f in enumerate(feats):
            cells = f.flatten(1, 2)  # (2B, hw, 2E)
            partners = cells.unflatten(0, (b, 2)).flip(1).flatten(0, 1)[:, None]  # [b0f1, b0f0, ...] (2B, 1, hw, 2E)
            corr.append(_cells_to_map(self.co_attend(cells, [partners], s)[:, 0], *f.shape[1:3]))  # (2B, E, h, w)
        return self.ground(corr, word_id.repeat_interleave(2, dim=0))


def _cells_to_map(cells: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(M, hw, C) cells -> the (M, C, h, w) map, a view (channels-last memory), no copy."""
    return cells.transpose(1, 2).unflatten(2, (h, w))
