"""Safe loading and atomic saving of the files the project reads and writes.

Everything a user downloads (index files, corpora, checkpoints, caches) is read with
``torch.load(weights_only=True)``; the few classes such files legitimately pickle are allow-listed
by the caller. Everything we write goes to a temporary file in the same folder first and is then
renamed, so a crash never leaves a truncated file behind.
"""
from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import pickle
import re
import shutil
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


def _temp_prefix(name: str) -> str:
    """``.<name>.<pid>.``: temporaries carry their writer's process id, so a later write can tell stale ones."""
    return f".{name}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (signal 0 probes it on POSIX; elsewhere assume it does: keep its files)."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: Path, name: str) -> list[Path]:
    """Remove ``folder/.<name>.<pid>.*.tmp`` files and folders left by a killed write of ``name``.

    Only our own pattern, and only where the writer process (its pid is in the name) no longer runs: a write
    in progress in another process is left alone. Returns what was removed.
    """
    pattern = re.compile(rf"^\.{re.escape(name)}\.(\d+)\.[^/]+\.tmp$")
    removed = []
    for entry in folder.glob(f".{glob.escape(name)}.*.tmp"):
        match = pattern.match(entry.name)
        if match is None or int(match.group(1)) == os.getpid() or _pid_alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success it is synced and renamed onto ``path``.

    On any error the temporary file is removed and ``path`` is left as it was. Temporaries of ``path`` left by
    a killed earlier write (``.<name>.<pid>.*.tmp`` of a process that no longer runs) are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path.name), suffix=".tmp")
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


def staging_folder(path: str | os.PathLike) -> Path:
    """A new empty temporary sibling folder ``.<name>.<pid>.*.tmp`` of ``path`` to write a whole output folder into.

    Fill it, then :func:`publish_folder` it onto ``path``: readers see the old complete folder or the new
    complete one, never a mix. Stale staging folders of ``path`` (killed writers) are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)
    staged = Path(tempfile.mkdtemp(dir=path.parent, prefix=_temp_prefix(path.name), suffix=".tmp"))
    os.chmod(staged, 0o777 & ~_UMASK)
    return staged


def publish_folder(staged: Path, path: str | os.PathLike) -> Path:
    """Replace the folder ``path`` (if any) by the complete folder ``staged`` (from :func:`staging_folder`).

    An existing ``path`` is swapped out in one atomic exchange where the system has one (Linux
    ``renameat2(RENAME_EXCHANGE)``); the old folder, now under the staging name, is deleted after that, and a
    crash in between leaves it as a stale ``.tmp`` folder that the next write removes. Without the exchange the
    old folder is renamed aside first: a crash between those two renames leaves no folder at ``path``.
    """
    path = Path(path)
    if not path.exists():
        os.rename(staged, path)
        return path
    if not path.is_dir():
        raise UserInputError(f"{path} is a file, not a folder: cannot replace it by the output folder")
    if not _exchange(staged, path):
        aside = Path(tempfile.mkdtemp(dir=path.parent, prefix=_temp_prefix(path.name), suffix=".tmp"))
        os.rename(path, aside / "old")
        os.rename(staged, path)
        staged = aside
    shutil.rmtree(staged, ignore_errors=True)  # now the old folder
    return path


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux >= 3.15, glibc >= 2.28); False where that is not available."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0


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


UTF8_BOM = b"\xef\xbb\xbf"


def check_not_folder(path: str | os.PathLike, what: str) -> None:
    """A folder given where a file is expected is said to be one (not "not found")."""
    if Path(path).is_dir():
        raise UserInputError(f"{what} {path} is a folder; expected a file")


def read_text(path: str | os.PathLike, what: str) -> str:
    """The text of a user's file, by one rule (docs/behaviour.md §10): UTF-8, with or without a byte-order mark
    (dropped, so it never becomes part of a sentence or key). Anything else is one line naming ``what``, the
    file and the byte offset of the first byte that is not UTF-8."""
    check_not_folder(path, what)
    if not Path(path).is_file():
        raise UserInputError(f"{what} not found: {path}")
    data = Path(path).read_bytes()
    try:
        return data.removeprefix(UTF8_BOM).decode("utf-8")
    except UnicodeDecodeError as err:
        offset = err.start + (len(UTF8_BOM) if data.startswith(UTF8_BOM) else 0)
        raise UserInputError(f"{what} {path} is not UTF-8 text: byte {offset} (0x{data[offset]:02x}) cannot be "
                             "decoded (save the file as UTF-8)") from None


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
    check_not_folder(path, what)
    if not path.is_file():
        raise UserInputError(f"{what} not found: {path}")
    if path.stat().st_size == 0:
        raise UserInputError(f"{what} {path} is empty (0 bytes)")
    try:
        with torch.serialization.safe_globals(list(allowed_globals)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _REFUSED_GLOBAL.search(str(err))
        if refused:
            raise UserInputError(
                f"{what} {path} was refused: it names {refused.group(1) or refused.group(2)}, which is outside "
                f"the allow-list (a {what} holds only tensors, containers, numbers and the project's own classes)"
            ) from None
        raise UserInputError(f"{what} {path} is not a valid {what}: not a file written by torch.save, "
                             "or damaged") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise UserInputError(
            f"{what} {path} is truncated or not a file written by torch.save ({_first_line(err)})"
        ) from None
    except Exception:  # whatever the unpickler trips over in foreign bytes: struct.error, KeyError, ...
        raise UserInputError(f"{what} {path} is not a valid {what}: not a file written by torch.save, "
                             "or damaged") from None


# how torch's weights-only unpickler names a refused global ("GLOBAL module.name") or class in its message
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)|but got <class '([\w.]+)'>")


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
    """The first line of an error, without torch's advice to load unsafely (never repeated to users)."""
    text = str(err).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    return line.split(" If you are seeing this error")[0] if "weights_only" not in line else type(err).__name__
