"""Safe loading and atomic saving of the files the project reads and writes.

Everything a user downloads (index files, corpora, checkpoints, caches) is read with
``torch.load(weights_only=True)``; the few classes such files legitimately pickle are allow-listed
by the caller. Everything we write goes to a temporary file in the same folder first and is then
renamed, so a crash never leaves a truncated file behind.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import hashlib
import itertools
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

try:
    import fcntl
except ImportError:  # not POSIX: no advisory locks (a second writer is not detected)
    fcntl = None


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
def atomic_file(path: str | os.PathLike, mode: str = "wb", sync: bool = True) -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success it is synced (unless ``sync=False``: many small files
    that can be made again) and renamed onto ``path``.

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
            if sync:
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


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, hex."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


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


# what an output path names: a file, a folder we write files into (shared with other outputs and runs), or a
# folder replaced as a whole by a complete new one (its old content goes)
FILE, FOLDER, REPLACED_FOLDER = "file", "folder", "replaced folder"
PathArg = str | os.PathLike


def _real(path: PathArg) -> Path:
    """``path`` with symbolic links resolved and made absolute (the part that exists; the rest as written)."""
    return Path(os.path.realpath(path))


def _same(a: Path, b: Path) -> bool:
    """The same file or folder: equal real paths, or one file reached by two names (a hard link)."""
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _inside(inner: Path, outer: Path) -> bool:
    return inner != outer and inner.is_relative_to(outer)


def _named(flag: str, path: PathArg) -> str:
    return f"{flag} {path}"


def check_paths(inputs: Mapping[str, PathArg | Sequence[PathArg] | None],
                outputs: Mapping[str, tuple[PathArg | None, str]]) -> None:
    """Refuse outputs that would destroy an input or each other, before any work (docs/behaviour.md §10).

    ``inputs``: flag -> the path (or paths) it reads; ``outputs``: flag -> (path, kind) with kind :data:`FILE`,
    :data:`FOLDER` or :data:`REPLACED_FOLDER`; None skips an entry. Paths are compared with symbolic links
    resolved. Refused, with one line naming both flags: an output equal to an input or inside an input folder;
    an input inside a folder that is replaced; two outputs on one path (two flags writing into one folder are
    fine); an output inside another output's replaced folder. ``--overwrite`` does not change any of this.
    """
    named_inputs = [(flag, Path(p)) for flag, value in inputs.items() if value is not None
                    for p in ([value] if isinstance(value, str | os.PathLike) else value)]
    real_inputs = [(flag, path, _real(path)) for flag, path in named_inputs]
    real_outputs = [(flag, Path(path), _real(path), kind) for flag, (path, kind) in outputs.items() if path is not None]
    real_inputs.sort(key=lambda item: len(item[2].parts), reverse=True)  # name the nearest folder
    for out_flag, out, real_out, kind in real_outputs:
        for in_flag, source, real_in in real_inputs:
            if _same(real_out, real_in):
                raise UserInputError(f"{_named(out_flag, out)} is the same path as {_named(in_flag, source)}: an "
                                     "output never replaces an input; choose another output path")
        for in_flag, source, real_in in real_inputs:
            if _inside(real_out, real_in) and real_in.is_dir():
                raise UserInputError(f"{_named(out_flag, out)} is inside {_named(in_flag, source)}: outputs are "
                                     "never written into an input folder; choose another output path")
            if kind == REPLACED_FOLDER and _inside(real_in, real_out):
                raise UserInputError(f"{_named(out_flag, out)} holds {_named(in_flag, source)}, and that folder is "
                                     "replaced as a whole: choose another output path")
    for (flag_a, a, real_a, kind_a), (flag_b, b, real_b, kind_b) in itertools.combinations(real_outputs, 2):
        if _same(real_a, real_b) and not kind_a == kind_b == FOLDER:
            raise UserInputError(f"{_named(flag_a, a)} and {_named(flag_b, b)} are the same path: give each output "
                                 "its own path")
    for (flag_a, a, real_a, _), (flag_b, b, real_b, kind_b) in itertools.permutations(real_outputs, 2):
        if kind_b == REPLACED_FOLDER and _inside(real_a, real_b):
            raise UserInputError(f"{_named(flag_a, a)} is inside {_named(flag_b, b)}, which is replaced as a whole: "
                                 "give each output its own path")


def lock_path(path: PathArg) -> Path:
    """The advisory lock file of output ``path``: ``.<name>.lock`` beside it (a folder's lock is outside it)."""
    path = Path(path)
    return path.parent / f".{path.name}.lock"


class OutputLock(contextlib.AbstractContextManager):
    """An exclusive advisory lock (``fcntl.flock``) on output ``path`` for the length of a run.

    A second run that wants the same output gets :class:`UserInputError` naming ``flag`` at once instead of
    both writing it. The lock file holds the writer's process id; the kernel releases the lock when the writer
    dies, so a killed run never blocks the next one. The file is removed on release.
    """

    def __init__(self, path: PathArg, flag: str) -> None:
        self.path, self.flag, self.fd = Path(path), flag, -1

    def __enter__(self) -> OutputLock:
        if fcntl is None:
            return self
        lock = lock_path(self.path)
        while True:
            try:
                lock.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
            except OSError as err:
                raise UserInputError(f"{self.flag} {self.path} cannot be written: {lock} cannot be created "
                                     f"({err.strerror or err})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                os.close(fd)
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise UserInputError(f"{self.flag} {self.path} is being written by another run"
                                     f"{f' (process {holder})' if holder.isdigit() else ''}: wait for it to finish, "
                                     "or choose another path") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a file the previous holder removed after we opened it
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd < 0:
            return
        with contextlib.suppress(FileNotFoundError):
            lock_path(self.path).unlink()
        os.close(self.fd)  # releases the lock
        self.fd = -1


def lock_outputs(paths: Mapping[str, PathArg | None]) -> contextlib.ExitStack:
    """Hold an :class:`OutputLock` on every output of ``paths`` (flag -> path; None skipped); release them by
    closing the returned stack (``with``). Where one is held by another run, none is kept."""
    stack = contextlib.ExitStack()
    try:
        for flag, path in paths.items():
            if path is not None:
                stack.enter_context(OutputLock(path, flag))
    except BaseException:
        stack.close()
        raise
    return stack
