"""Reading checkpoints (ours and the authors' released ones) and loading them into a model.

Released checkpoints are ``{'epoch', 'state_dict', 'best_loss', 'optimizer'}`` with every key prefixed
``module.`` (saved from ``nn.DataParallel``, SPEC 4). ``best_loss`` there is a numpy float64 scalar
(the reference's accuracy), so the loader allow-lists numpy scalars and their dtypes, nothing else.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from utils.io import UserInputError, safe_load

MODULE_PREFIX = "module."
try:
    from numpy._core.multiarray import scalar as _np_scalar  # numpy >= 2
except ImportError:
    from numpy.core.multiarray import scalar as _np_scalar  # numpy 1.x
# numpy 1 pickles scalars as numpy.core.multiarray.scalar, numpy 2 as numpy._core.multiarray.scalar
NUMPY_SCALAR_GLOBALS = [
    (_np_scalar, "numpy.core.multiarray.scalar"),
    (_np_scalar, "numpy._core.multiarray.scalar"),
    np.dtype,
    np.dtypes.Float64DType,
    np.dtypes.Float32DType,
]


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint safely (weights only); returns a dict with at least ``state_dict``.

    Accepts the reference format ``{'epoch', 'state_dict', 'best_loss', 'optimizer'}`` and a bare state dict
    (which is returned as ``{'state_dict': ...}``).
    """
    checkpoint = safe_load(path, what="checkpoint", allowed_globals=NUMPY_SCALAR_GLOBALS)
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping):
        return dict(checkpoint)
    if isinstance(checkpoint, Mapping) and checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return {"state_dict": dict(checkpoint)}
    raise UserInputError(
        f"checkpoint {path} is neither a state dict nor a dict with a 'state_dict' entry "
        f"(found {type(checkpoint).__name__})"
    )


def _strip_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix(MODULE_PREFIX): v for k, v in state_dict.items()}


def _listed(keys: list[str], limit: int = 20) -> str:
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_model_state(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state_dict`` (a leading ``module.`` stripped) into ``model``; every key must match in name and shape.

    ``source`` names where the weights come from (a file path) in the error message. Missing, unexpected
    or shape-mismatched keys raise :class:`UserInputError` listing them.
    """
    state_dict = _strip_prefix(state_dict)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {_listed(mismatched)}")
    if problems:
        raise UserInputError(
            f"the weights in {source} do not fit the {type(model).__name__} (different model kind, vocabulary, "
            f"cfg, image size or embedding size?): " + "; ".join(problems)
        )
    model.load_state_dict(state_dict)


def state_dict_for_release(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` with every key prefixed ``module.``, as the reference saves checkpoints."""
    return {MODULE_PREFIX + k: v for k, v in model.state_dict().items()}
