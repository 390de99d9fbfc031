"""Reading checkpoints (the training scripts' and the authors' released ones) and loading them into a model.

Released checkpoints are ``{'epoch', 'state_dict', 'best_loss', 'optimizer'}`` with every key prefixed
``module.`` (saved from ``nn.DataParallel``, docs/behaviour.md §4). ``best_loss`` there is a numpy float64
scalar (the reference's accuracy), so the loader allow-lists numpy scalars and their dtypes, nothing else.
The training scripts add keys the reference code ignores: ``rng_state``, ``scaler``, ``lr_scheduler`` (its state,
for exact resumption), ``args`` (the training flags, checked on resume) and ``inference`` (what grounding needs
besides the weights: model kind, cfg text, input and embedding sizes, anchors, corpus words).
"""
from __future__ import annotations

import logging
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from utils.io import UserInputError, atomic_save, numpy_scalar_globals, safe_load

MODULE_PREFIX = "module."
INFERENCE_KEY = "inference"
NUMPY_SCALAR_GLOBALS = numpy_scalar_globals(np.float64, np.float32)  # best_loss is a numpy scalar (above)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint safely (weights only); returns a dict with at least ``state_dict``.

    Accepts the reference format ``{'epoch', 'state_dict', 'best_loss', 'optimizer'}`` and a bare state dict
    (which is returned as ``{'state_dict': ...}``).
    """
    checkpoint = safe_load(path, what="checkpoint", allowed_globals=NUMPY_SCALAR_GLOBALS)
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping):
        checkpoint = dict(checkpoint)
    elif isinstance(checkpoint, Mapping) and checkpoint and all(isinstance(v, torch.Tensor)
                                                                for v in checkpoint.values()):
        checkpoint = {"state_dict": dict(checkpoint)}
    else:
        raise UserInputError(
            f"checkpoint {path} is neither a state dict nor a dict with a 'state_dict' entry "
            f"(found {type(checkpoint).__name__})"
        )
    check_finite_weights(checkpoint["state_dict"], path)
    return checkpoint


def check_finite_weights(state_dict: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Every floating-point tensor of ``state_dict`` is finite; else one line naming the first that is not
    (a model with NaN or inf weights grounds every frame at NaN)."""
    for key, value in state_dict.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            kind = "NaN" if bool(torch.isnan(value).any()) else "inf"
            count = int((~torch.isfinite(value)).sum())
            raise UserInputError(f"checkpoint {path}: tensor {key} holds {kind} ({count} of {value.numel()} values "
                                 "not finite): the weights are damaged, or saved from a diverged run")


def _strip_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix(MODULE_PREFIX): v for k, v in state_dict.items()}


def _listed(keys: list[str], limit: int = 20) -> str:
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _shape_mismatches(state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> list[str]:
    """'key: checkpoint (shape) vs model (shape)' for each key of both whose shapes differ."""
    return [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
            for k, v in state_dict.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]


def load_model_state(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state_dict`` (a leading ``module.`` stripped) into ``model``; every key must match in name and shape.

    ``source`` names where the weights come from (a file path) in the error message. Missing, unexpected
    or shape-mismatched keys raise :class:`UserInputError` listing them.
    """
    state_dict = _strip_prefix(state_dict)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = _shape_mismatches(state_dict, expected)
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


def load_matching_state(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> list[str]:
    """Initialise ``model`` from the keys of ``state_dict`` it shares (``--pretrain``, e.g. SL-Att -> CG-SL-Att).

    Shared keys must have the same shape (else :class:`UserInputError`); keys the checkpoint lacks keep their
    current values and are returned so the caller can report them. A checkpoint sharing no key is an error.
    """
    state_dict = _strip_prefix(state_dict)
    expected = model.state_dict()
    shared = {k: v for k, v in state_dict.items() if k in expected}
    mismatched = _shape_mismatches(shared, expected)
    if not shared or mismatched:
        reason = f"shape mismatches: {_listed(mismatched)}" if mismatched else "no parameter name in common"
        raise UserInputError(f"cannot initialise {type(model).__name__} from {source}: {reason}")
    model.load_state_dict(shared, strict=False)
    return [k for k in expected if k not in shared]


def capture_rng_state() -> dict:
    """Python, numpy, torch (and CUDA) random states, in a form ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (the global RNG the seeds set)
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping) -> None:
    """Inverse of :func:`capture_rng_state`."""
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32),  # noqa: NPY002
                         numpy_state["pos"], numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    best_accuracy: float,
    scaler: torch.amp.GradScaler | None = None,
    rng_states: list[dict] | None = None,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    flags: Mapping[str, Any] | None = None,
    inference: dict | None = None,
) -> None:
    """Write a resumable checkpoint atomically, in the reference format plus our resume fields.

    ``epoch`` is the next epoch to run; ``best_loss`` keeps the reference's (misleading) name for the best
    validation accuracy. ``rng_state`` (one state per process, rank order; default: this process's),
    ``scaler``, ``lr_scheduler``, ``args`` (the run's flags) and ``inference`` (plain values a weights-only load
    accepts) are extra keys the reference code ignores.
    """
    checkpoint = {
        "epoch": epoch,
        "state_dict": state_dict_for_release(model),
        "best_loss": float(best_accuracy),
        "optimizer": optimizer.state_dict(),
        "rng_state": rng_states if rng_states is not None else [capture_rng_state()],
    }
    if scaler is not None:
        checkpoint["scaler"] = scaler.state_dict()
    if lr_scheduler is not None:
        checkpoint["lr_scheduler"] = lr_scheduler.state_dict()
    if flags is not None:
        checkpoint["args"] = dict(flags)
    if inference is not None:
        checkpoint[INFERENCE_KEY] = inference
    atomic_save(checkpoint, path)


def resume_training(
    checkpoint: Mapping[str, Any],
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[int, float, bool]:
    """Restore model, optimiser, epoch, best accuracy, this process's RNG state (and AMP scaler) from
    ``checkpoint`` (:func:`read_checkpoint` of ``path``). The learning-rate scheduler is the caller's: it is
    built at the resumed position.

    Returns ``(start_epoch, best_accuracy, exact)``; ``exact`` is False for a checkpoint without RNG states for
    ``world_size`` processes (e.g. the authors', or one saved with another process count), which resumes with
    fresh random streams.
    """
    load_model_state(model, checkpoint["state_dict"], str(path))
    for key in ("epoch", "optimizer"):
        if key not in checkpoint:
            raise UserInputError(f"checkpoint {path} has no '{key}' entry: it cannot resume training "
                                 "(use --pretrain to start a new run from its weights)")
    try:
        optimizer.load_state_dict(checkpoint["optimizer"])
    except (ValueError, KeyError) as err:
        raise UserInputError(f"checkpoint {path}: its optimizer state does not fit this run "
                             f"(different --optimizer or model?): {err}") from err
    if scaler is not None and "scaler" in checkpoint:
        scaler.load_state_dict(checkpoint["scaler"])
    states = checkpoint.get("rng_state")
    exact = isinstance(states, list) and len(states) == world_size
    if exact:
        restore_rng_state(states[rank])
    return int(checkpoint["epoch"]), float(checkpoint.get("best_loss", 0.0)), exact


# Flags stored in a checkpoint and compared on --resume. A mismatch in any stored flag not listed here changes what
# the resumed run computes (schedule, data, model, numerics, best-model selection) and is refused; these only
# change where things are read or written, how the run reports, or what it did before the checkpoint: warned.
RESUME_NEUTRAL_FLAGS = ("data_root", "split_root", "corpus", "workers", "print_freq", "log_dir", "save_dir",
                        "savename", "no_progress", "gpu", "overwrite", "pretrain", "darknet_weights", "eval_method")
# evaluation-only flags: not part of a training run
UNSTORED_FLAGS = ("resume", "test", "test_split", "save_pred", "save_plot", "max_plots", "cache", "cache_dir")


def training_flags(flags: Mapping[str, Any]) -> dict[str, Any]:
    """The flags a checkpoint stores (``vars(args)`` less the evaluation-only ones; plain values, so the safe
    loader reads them back)."""
    return {k: v for k, v in flags.items() if k not in UNSTORED_FLAGS}


def _same_flag(name: str, stored: Any, current: Any) -> bool:
    if name == "cfg" and stored != current and Path(stored).is_file() and Path(current).is_file():
        return Path(stored).read_bytes() == Path(current).read_bytes()  # the same cfg moved with the repository
    return stored == current


def check_resume_flags(flags: Mapping[str, Any], checkpoint: dict, logger: logging.Logger) -> None:
    """Refuse to resume ``checkpoint`` (read from ``flags['resume']``) with flags that change the run; warn for
    flags that do not (see the lists above). A checkpoint without stored flags resumes with a warning."""
    path = flags["resume"]
    stored = checkpoint.get("args")
    if not isinstance(stored, dict):
        logger.warning("warning: %s holds no training flags (e.g. a released checkpoint): this run's flags "
                       "cannot be checked against the ones it was trained with", path)
        return
    current = training_flags(flags)
    differing = [k for k in current if k in stored and not _same_flag(k, stored[k], current[k])]
    changed = [k for k in differing if k not in RESUME_NEUTRAL_FLAGS]
    if changed:
        raise UserInputError(
            f"--resume {path} was trained with " + " ".join(f"--{k} {stored[k]!r}" for k in changed)
            + ", this run has " + " ".join(f"--{k} {current[k]!r}" for k in changed)
            + ": that changes the run (resume with the checkpoint's values, or start a new --savename)")
    if differing:
        logger.warning("warning: resuming %s with other %s than it was trained with; they do not change the run",
                       path, ", ".join(f"--{k} ({stored[k]!r} -> {current[k]!r})" for k in differing))
