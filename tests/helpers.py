"""Code only the tests need: writers of reference-format files and the reference's dense target maps."""
from __future__ import annotations

import importlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from app.builders import LOGGERS
from model.darknet import Darknet
from model.losses import Targets
from utils.geometry import NUM_ANCHORS_PER_SCALE, grid_sizes


def write_darknet_weights(net: Darknet, path: Path, version: tuple[int, int, int] = (0, 2, 0), seen: int = 0) -> Path:
    """Write ``net``'s convolutions as a Darknet ``.weights`` file (docs/behaviour.md §3), written independently
    of the loader: int32 major, minor, revision, ``seen`` (int64 from version 0.2 on), then float32 values."""
    major, minor, _ = version
    seen_dtype = "<i8" if major * 10 + minor >= 2 else "<i4"
    values = torch.cat([t.detach().float().flatten() for t in net.darknet_tensors()])
    path.write_bytes(np.array(version, dtype="<i4").tobytes() + np.array([seen], dtype=seen_dtype).tobytes()
                     + values.numpy().astype("<f4").tobytes())
    return path


def dense_targets(targets: Targets, image_size: int) -> tuple[list[Tensor], list[Tensor]]:
    """The reference ``build_target`` maps, for comparison with it (the losses index the flat targets instead).

    Per scale ``gt_param`` (B, 3, 5, h, w) with t at [b, anchor, :, gj, gi] of the best scale, zero elsewhere,
    and ``gt_center_param`` (B, 5, h, w) with t at [b, :, gj, gi].
    """
    grids = grid_sizes(image_size)
    batch = targets.param.shape[0]
    scale_cells = [g * g for g in grids]
    rows = torch.arange(batch, device=targets.param.device)
    per_anchor = targets.param.new_zeros(batch, NUM_ANCHORS_PER_SCALE * sum(scale_cells), 5)  # (B, 3N, 5)
    per_anchor[rows, targets.anchor_cell] = targets.param
    per_cell = targets.param.new_zeros(batch, sum(scale_cells), 5)  # (B, N, 5)
    per_cell[rows, targets.cell] = targets.param
    gt_param = [
        m.view(batch, NUM_ANCHORS_PER_SCALE, g, g, 5).permute(0, 1, 4, 2, 3)  # (B, 3, 5, h, w)
        for m, g in zip(per_anchor.split([NUM_ANCHORS_PER_SCALE * c for c in scale_cells], 1), grids)
    ]
    gt_center_param = [
        m.view(batch, g, g, 5).permute(0, 3, 1, 2)  # (B, 5, h, w)
        for m, g in zip(per_cell.split(scale_cells, 1), grids)
    ]
    return gt_param, gt_center_param


def reset_script_loggers() -> None:
    """Close and remove the handlers an in-process script run installed (they hold the test's captured stdout)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            handler.close()
        logger.handlers.clear()
        logger.propagate = True


def require(module: str, why: str) -> Any:
    """Import ``module`` for an optional feature's tests; where it is missing, skip them loudly (a warning and a
    reason), except under CI (``CI=true``), where a missing optional requirement is a failure."""
    try:
        return importlib.import_module(module)
    except ImportError:
        missing(f"{module} is not installed ({why})")
    return None


def missing(reason: str) -> None:
    """Skip loudly, or fail under CI (``CI=true``): CI installs every optional requirement (``.ci/run``)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {reason}: CI must run these tests")
    warnings.warn(f"SKIPPED: {reason}", stacklevel=2)
    pytest.skip(f"SKIPPED LOUDLY: {reason}", allow_module_level=True)
