"""Small building blocks shared by the grounding heads (docs/behaviour.md §4)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ConvBatchNormReLU(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> ReLU, with the child names ``conv``/``bn``/``relu`` of the reference.

    quirk (docs/behaviour.md §4.4): BatchNorm momentum is 0.999, so the running statistics follow the last batch almost
    entirely; released checkpoints were trained with it.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, momentum=0.999)
        self.relu = nn.ReLU()

    def forward_concat(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        """``self(torch.cat(parts, dim=1))`` for a 1x1 conv, without building the concatenation.

        A 1x1 convolution of a concatenation is the sum of its parts' convolutions (:func:`split_conv1x1`), so
        a part may broadcast: (B, C, 1, 1) for a vector shared by every cell, (1, C, h, w) for a map shared by
        the batch. Same function as the reference's ``cat`` + conv, up to float rounding.
        """
        weights = split_conv1x1(self.conv, [p.shape[1] for p in parts])
        out = sum(F.conv2d(p, wt) for p, wt in zip(parts, weights))
        return self.relu(self.bn(out))


def split_conv1x1(conv: nn.Conv2d, in_channels: Sequence[int]) -> tuple[torch.Tensor, ...]:
    """The weight slices (out, c_i, 1, 1) of a bias-free 1x1 ``conv`` over inputs of ``in_channels`` channels.

    ``conv(cat(parts)) == sum_i F.conv2d(parts[i], slices[i])``.
    """
    if conv.kernel_size != (1, 1) or conv.bias is not None or sum(in_channels) != conv.in_channels:
        raise ValueError(f"cannot split {conv} over inputs of {list(in_channels)} channels")
    return conv.weight.split(list(in_channels), dim=1)


def l2_normalize(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``x / max(||x||_2, 1e-12)`` along ``dim`` (``F.normalize``, as the reference)."""
    return F.normalize(x, p=2, dim=dim)


def coord_map(batch: int, h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The 8-channel coordinate map of an ``h x w`` grid, (B, 8, h, w) (docs/behaviour.md §4.3).

    quirk (docs/behaviour.md §4.3): the first index runs over rows but is normalised by the width, the second runs
    over columns but is normalised by the height (the same thing on the square grids used here).
    """
    a, b = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32),
        indexing="ij",
    )  # (h, w) each, computed in float32 whatever ``dtype`` is
    a_min, b_min = (2 * a - w) / w, (2 * b - h) / h
    a_max, b_max = (2 * (a + 1) - w) / w, (2 * (b + 1) - h) / h
    inv_h, inv_w = torch.full_like(a, 1.0 / h), torch.full_like(a, 1.0 / w)
    coord = torch.stack(
        [a_min, b_min, a_max, b_max, (a_min + a_max) / 2, (b_min + b_max) / 2, inv_h, inv_w]
    )  # (8, h, w)
    return coord.to(dtype).unsqueeze(0).expand(batch, -1, -1, -1)  # (B, 8, h, w)
