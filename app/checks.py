"""Checks every entry script runs first, before any data is read or model built (docs/behaviour.md §10).

An output that cannot be written, or would replace the user's files without ``--overwrite``, or an input path
given on the command line that does not exist, is found here, not after an epoch or a full evaluation.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from collections.abc import Collection, Mapping
from pathlib import Path

from app.argparser import DEFAULT_DARKNET_WEIGHTS
from app.cache import default_cache_dir
from app.predictions import JSONL_SUFFIXES, check_writable
from utils.io import FILE, FOLDER, REPLACED_FOLDER, UserInputError, check_not_folder, check_paths, lock_outputs
from utils.windows import EVAL_FRAMES, TRAIN_FRAMES


def checkpoint_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """``<save_dir>/<savename>_checkpoint.pth.tar`` and ``..._model_best.pth.tar`` (the reference's names)."""
    save_dir = Path(args.save_dir)
    return save_dir / f"{args.savename}_checkpoint.pth.tar", save_dir / f"{args.savename}_model_best.pth.tar"


LATEST, BEST = "--save_dir (checkpoint)", "--save_dir (best checkpoint)"  # how messages name the checkpoints


def outputs(args: argparse.Namespace, training: bool, cache: bool) -> dict[str, tuple[Path, str]]:
    """The outputs this run will write: flag -> (path, kind). ``training``: checkpoints under ``--save_dir``;
    ``cache``: the cache folder (``--cache`` of an evaluation)."""
    found = {"--log_dir": (Path(args.log_dir), FOLDER)}
    if training:
        found["--save_dir"] = (Path(args.save_dir), FOLDER)
        found[LATEST], found[BEST] = ((path, FILE) for path in checkpoint_paths(args))
    if args.save_pred:
        found["--save_pred"] = (Path(args.save_pred), FILE)
    if args.save_plot:
        found["--save_plot"] = (Path(args.save_plot), REPLACED_FOLDER)
    if cache:
        found["--cache_dir"] = (default_cache_dir(args), REPLACED_FOLDER)
    return found


def _creatable_in(path: Path) -> Path:
    """The nearest existing ancestor of ``path`` (where new files and folders for it will be created)."""
    for folder in (path, *path.parents):
        if folder.exists():
            return folder
    return Path()


def check_output(flag: str, path: Path, kind: str) -> None:
    """``path`` can be written as ``kind``: right type if it exists, and its folder accepts new files.

    Probed by creating (and removing) a temporary file there, which also catches read-only file systems
    and runs as root, where permission bits say nothing.
    """
    if path.exists() and kind == FILE and path.is_dir():
        raise UserInputError(f"{flag} {path} is a folder; expected the path of a file to write")
    if path.exists() and kind != FILE and not path.is_dir():
        raise UserInputError(f"{flag} {path} is a file; expected a folder")
    where = _creatable_in(path if kind == FOLDER else path.parent)
    if not where.is_dir():
        raise UserInputError(f"{flag} {path} cannot be created: {where} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=where):
            pass
    except OSError as err:
        raise UserInputError(f"{flag} {path} is not writable: cannot create files in {where} "
                             f"({err.strerror or err})") from None


def check_suffix(flag: str, path: str | os.PathLike, suffixes: tuple[str, ...]) -> None:
    """An output's suffix names its format: ``--out_gif x.png`` would be GIF bytes under a PNG name."""
    if Path(path).suffix.lower() not in suffixes:
        raise UserInputError(f"{flag} {path}: the suffix must be {' or '.join(suffixes)} (the format written)")


def check_inputs(args: argparse.Namespace, training: bool) -> None:
    """Every input path given on the command line of a grounding script exists (a missing default is no error)
    and is a file."""
    for flag in ("--resume", "--pretrain", "--darknet_weights") if training else ("--resume",):
        if getattr(args, flag[2:]):
            check_not_folder(getattr(args, flag[2:]), flag)
    if args.resume:
        if not Path(args.resume).is_file():
            raise UserInputError(f"checkpoint not found: {args.resume} (--resume)")
    if training and args.pretrain:
        if not Path(args.pretrain).is_file():
            raise UserInputError(f"checkpoint not found: {args.pretrain} (--pretrain)")
    if training and args.darknet_weights and not Path(args.darknet_weights).is_file():
        raise UserInputError(f"--darknet_weights {args.darknet_weights} not found (pass '' for random weights, "
                             f"or leave the flag out to use {DEFAULT_DARKNET_WEIGHTS} when it exists)")


def check_window_frames(args: argparse.Namespace, training: bool) -> None:
    """``--num_frame_k`` fits the run: frame pairs to train, an odd window of >= 3 frames to evaluate."""
    k = getattr(args, "num_frame_k", None)
    if k is None:
        return
    if training and k != TRAIN_FRAMES:
        raise UserInputError(f"--num_frame_k {k}: training uses frame pairs ({TRAIN_FRAMES})")
    if not training and (k < 3 or k % 2 == 0):
        raise UserInputError(f"--num_frame_k {k}: evaluation grounds the centre of a window of an odd number of "
                             f"frames >= 3 (default {EVAL_FRAMES}); {TRAIN_FRAMES} is for training")


def inputs(args: argparse.Namespace, training: bool) -> dict[str, Path | None]:
    """What a grounding script (or post-processing) reads: flag -> path. A training run's ``--resume`` is not
    listed: resuming continues that very checkpoint, which the run then replaces."""
    found = {"--data_root": Path(args.data_root), "--split_root": Path(args.split_root) / args.dataset}
    flags = ("corpus", "cfg", *(("pretrain", "darknet_weights") if training else ("resume",)))
    return {**found, **input_files({f"--{flag}": getattr(args, flag, None) for flag in flags})}


def input_files(flags: Mapping[str, str | os.PathLike | None]) -> dict[str, Path]:
    """The flags that name an existing file (a folder or a missing path given for a file is the input checks'
    error, not a collision)."""
    return {flag: Path(value) for flag, value in flags.items() if value and Path(value).is_file()}


def check_before_work(args: argparse.Namespace, training: bool, cache: bool = False) -> contextlib.ExitStack:
    """A grounding script's checks: every input given on the command line present, ``--num_frame_k``, then
    :func:`check_outputs`. Returns the locks on the outputs, to hold for the run (``with``)."""
    check_inputs(args, training)
    check_window_frames(args, training)
    return check_outputs(args, training, cache)


def is_main_process() -> bool:
    """Rank 0 of a ``torchrun`` job, or a single process (read before the process group exists)."""
    return int(os.environ.get("RANK", "0")) == 0


def claim_outputs(inputs: Mapping[str, object], found: Mapping[str, tuple[Path | None, str]], overwrite: bool,
                  locked: Mapping[str, Path | None] | None = None, replacing: Collection[str] = (),
                  suffixes: Mapping[str, tuple[str, ...]] | None = None) -> contextlib.ExitStack:
    """Every entry point's output checks, in order: no output on an input or on another output
    (:func:`utils.io.check_paths`); each writable as its kind, with a suffix of ``suffixes`` (flag -> suffixes)
    where given; locked against a second run (on the main process; ``locked``: flag -> path, by default every
    file and replaced folder); then, under the lock, none replacing existing files without ``overwrite`` (except
    the flags in ``replacing``, which the caller checks). Returns the held locks."""
    check_paths(inputs, found)
    for flag, (path, kind) in found.items():
        if path is not None:
            check_output(flag, Path(path), kind)
            if flag in (suffixes or {}):
                check_suffix(flag, path, suffixes[flag])
    if locked is None:
        locked = {flag: path for flag, (path, kind) in found.items() if kind != FOLDER}
    locks = lock_outputs(locked if is_main_process() else {})
    try:
        for flag, (path, kind) in found.items():
            if kind != FOLDER and flag not in replacing:
                check_writable(path, overwrite, flag)
    except BaseException:
        locks.close()
        raise
    return locks


def check_outputs(args: argparse.Namespace, training: bool = False, cache: bool = False,
                  read: Mapping[str, Path] | None = None) -> contextlib.ExitStack:
    """Every output (see :func:`outputs`) apart from the inputs (:func:`inputs`, and ``read``) and each other,
    writable, locked and not clobbering user files; returns the locks. A training run's checkpoints are checked
    by the training loop (resume, or start over), under the lock of the latest one."""
    found = outputs(args, training, cache)
    locked = {flag: path for flag, (path, kind) in found.items() if kind != FOLDER and flag != BEST}
    return claim_outputs({**inputs(args, training), **(read or {})}, found, args.overwrite, locked, (LATEST, BEST),
                         {"--save_pred": JSONL_SUFFIXES})
