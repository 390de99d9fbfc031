"""Load plain-data pickles (the ``refer`` annotations) without running any code they name.

The ``refs(unc).p`` / ``refs(umd).p`` / ``refs(google).p`` files of lichengunc/refer are Python 2 pickles
of dicts, lists, strings and numbers. Those need no global at all to unpickle, so
:class:`RestrictedUnpickler` refuses every global a pickle names (``os.system``,
``collections.OrderedDict``, ``copy_reg._reconstructor``, ...) except the two builtin containers
``set`` and ``frozenset``; a downloaded file can therefore only produce plain data.

Python 2 ``str`` values are read as ``bytes`` and decoded as UTF-8 (latin-1 where that fails), so
non-ASCII sentences come back as the text the annotators typed rather than latin-1 mojibake.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

from utils.io import UserInputError, check_not_folder

ALLOWED_GLOBALS = frozenset(
    {
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("__builtin__", "set"),
        ("__builtin__", "frozenset"),
    }
)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` accepts only :data:`ALLOWED_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return frozenset if name == "frozenset" else set
        raise pickle.UnpicklingError(
            f"global '{module}.{name}' is not allowed (only builtin containers and scalars may be unpickled)"
        )


def decode_py2_strings(obj: Any) -> Any:
    """``obj`` with every ``bytes`` (a Python 2 ``str``) decoded to ``str``, recursing into containers."""
    if isinstance(obj, bytes):
        try:
            return obj.decode("utf-8")
        except UnicodeDecodeError:
            return obj.decode("latin-1")
    if isinstance(obj, dict):
        return {decode_py2_strings(key): decode_py2_strings(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [decode_py2_strings(item) for item in obj]
    if isinstance(obj, tuple):
        return tuple(decode_py2_strings(item) for item in obj)
    if isinstance(obj, (set, frozenset)):
        return type(obj)(decode_py2_strings(item) for item in obj)
    return obj


def load_plain_pickle(path: str | os.PathLike, what: str) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler`; Python 2 strings become ``str``.

    ``what`` names the file in error messages. A missing file, a truncated or foreign file and a
    pickle naming a disallowed global all raise :class:`UserInputError` with the path and the reason.
    """
    path = Path(path)
    check_not_folder(path, what)
    if not path.is_file():
        raise UserInputError(f"{what} not found: {path}")
    try:
        with path.open("rb") as f:
            data = RestrictedUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as err:
        raise UserInputError(f"{what} {path} was refused or is not a pickle: {err}") from err
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError) as err:
        raise UserInputError(f"{what} {path} is truncated or not a plain-data pickle ({err!r})") from err
    return decode_py2_strings(data)
