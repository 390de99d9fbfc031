"""Checks every entry script runs first, before any data is read or model built (docs/behaviour.md §10).

An output that cannot be written, or would replace the user's files without ``--overwrite``, or an input path
given on the command line that does not exist, is found here, not after an epoch or a full evaluation.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from app.argparser import DEFAULT_DARKNET_WEIGHTS
from app.cache import default_cache_dir
from app.predictions import JSONL_SUFFIXES, check_writable
from utils.io import UserInputError, check_not_folder
from utils.windows import EVAL_FRAMES, TRAIN_FRAMES

# output flag -> what it names: a file, a folder we write into, or a folder replaced as a whole (staged)
FILE, FOLDER, STAGED_FOLDER = "file", "folder", "staged folder"


def outputs(args: argparse.Namespace, training: bool, cache: bool) -> dict[str, tuple[Path, str]]:
    """The outputs this run will write: flag -> (path, kind). ``training``: checkpoints under ``--save_dir``;
    ``cache``: the cache folder (``--cache`` of an evaluation)."""
    found = {"--log_dir": (Path(args.log_dir), FOLDER)}
    if training:
        found["--save_dir"] = (Path(args.save_dir), FOLDER)
    if args.save_pred:
        found["--save_pred"] = (Path(args.save_pred), FILE)
    if args.save_plot:
        found["--save_plot"] = (Path(args.save_plot), STAGED_FOLDER)
    if cache:
        found["--cache_dir"] = (default_cache_dir(args), STAGED_FOLDER)
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


def check_before_work(args: argparse.Namespace, training: bool, cache: bool = False) -> None:
    """A grounding script's checks: every input given on the command line present, ``--num_frame_k``, then
    :func:`check_outputs`."""
    check_inputs(args, training)
    check_window_frames(args, training)
    check_outputs(args, training, cache)


def check_outputs(args: argparse.Namespace, training: bool = False, cache: bool = False) -> None:
    """Every output (see :func:`outputs`) writable and not clobbering user files."""
    for flag, (path, kind) in outputs(args, training, cache).items():
        check_output(flag, path, kind)
        if flag == "--save_pred":
            check_suffix(flag, path, JSONL_SUFFIXES)
        if kind != FOLDER:
            check_writable(path, args.overwrite, flag)
