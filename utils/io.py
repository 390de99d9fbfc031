"""Safe loading and atomic saving of the files the project reads and writes.

Everything a user downloads (index files, corpora, checkpoints, caches) is read with
``torch.load(weights_only=True)``; the few classes such files legitimately pickle are allow-listed
by the caller. Everything we write goes to a temporary file in the same folder first and is then
renamed, so a crash never leaves a truncated file behind.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()  # mkstemp creates 0o600 files; finished files get the usual 0o666 & ~umask


class UserInputError(Exception):
    """Bad input from the user (a file, flag or key): the entry scripts print it and exit non-zero."""


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success it is synced and renamed onto ``path``.

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` through a temporary file and an atomic rename."""
    with atomic_file(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write a text file through a temporary file and an atomic rename."""
    with atomic_file(path, "w") as f:
        f.write(text)
    return Path(path)


def safe_load(
    path: str | os.PathLike,
    what: str,
    allowed_globals: Iterable[Any] = (),
    map_location: str | torch.device = "cpu",
) -> Any:
    """``torch.load(path, weights_only=True)`` with ``allowed_globals`` allow-listed.

    ``what`` names the file in error messages ("index file", "checkpoint", ...). A missing file,
    a truncated or foreign file, and a pickle that names a class outside the allow-list all raise
    :class:`UserInputError` with the path and the reason.
    """
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{what} not found: {path}")
    try:
        with torch.serialization.safe_globals(list(allowed_globals)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise UserInputError(
            f"{what} {path} could not be loaded safely: it refers to something outside the allow-list "
            f"({_first_line(err)})"
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise UserInputError(
            f"{what} {path} is truncated or not a file written by torch.save ({_first_line(err)})"
        ) from err


def numpy_scalar_globals(*dtypes: type) -> list[Any]:
    """The globals that pickled numpy scalars of ``dtypes`` name, for ``safe_load``'s allow-list, and no more.

    numpy 1.x pickles name ``numpy.core.multiarray.scalar``, numpy 2 ``numpy._core.multiarray.scalar``; both are
    allow-listed under their pickled names. Unpickling a dtype builds its class (``numpy.dtypes.Float32DType``
    and so on, numpy >= 1.25).
    """
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core (the old name still pickles)
    scalar = core.multiarray.scalar
    return [
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        np.dtype,
        *(type(np.dtype(d)) for d in dtypes),
    ]


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
