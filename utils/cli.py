"""Running an entry script: clean errors and exit codes instead of tracebacks for bad input, from the parser
(one-line usage errors, ``type=`` checks of numeric flags) to ``main``."""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NoReturn

from utils.distributed import cleanup
from utils.io import UserInputError

# a worker's exception reaches the main process as "Caught X in DataLoader worker process N.\nOriginal
# Traceback ...\n<module>.UserInputError: <message>"; the message is the last line
_WORKER_ERROR = re.compile(r"^(?:[\w.]+\.)?UserInputError: (.*)$")


MAX_SEED = 2**32 - 2  # numpy is seeded with seed + 1 (< 2**32)
INTERRUPTED_EXIT = 130  # Ctrl-C and SIGTERM alike (128 + SIGINT, the shell's code for Ctrl-C)


def _number(kind: Callable[[str], int | float], low: float, low_ok: bool, what: str,
            multiple: int | None = None, high: float = math.inf) -> Callable[[str], int | float]:
    """An argparse ``type=``: ``kind(text)`` within ``[low or (low, high]``, finite, optionally a multiple."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        in_range = (value >= low if low_ok else value > low) and value <= high
        if not (math.isfinite(value) and in_range and (multiple is None or value % multiple == 0)):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


positive_int = _number(int, 0, False, "an integer >= 1")
non_negative_int = _number(int, 0, True, "an integer >= 0")
positive_float = _number(float, 0, False, "a finite number > 0")
non_negative_float = _number(float, 0, True, "a finite number >= 0")
seed = _number(int, 0, True, f"an integer from 0 to {MAX_SEED}", high=MAX_SEED)


def positive_multiple_of(multiple: int) -> Callable[[str], int]:
    """An argparse ``type=`` for a positive integer multiple of ``multiple``."""
    return _number(int, 0, False, f"a positive multiple of {multiple}", multiple=multiple)


def int_from(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type=`` for an integer from ``low`` to ``high``."""
    return _number(int, low, True, f"an integer from {low} to {high}", high=high)


def gpu_ids(text: str) -> str:
    """``--gpu``: comma-separated device ids, e.g. ``0`` or ``0,1``."""
    if not re.fullmatch(r"\d+(,\d+)*", text.strip()):
        raise argparse.ArgumentTypeError(f"expected device ids like '0' or '0,1', got {text!r}")
    return text.strip()


class Args(argparse.Namespace):
    """Parsed flags, plus ``given``: the destinations of the flags the command line named (a slot, so not in
    ``vars(args)``, which checkpoints store). A default can then yield to a stored setting while an explicit
    flag that disagrees with it is reported."""

    __slots__ = ("given",)


class _Unset(list):
    """A destination's value before parsing (a list, so that ``append`` actions accept it)."""


def _was_given(value: object) -> bool:
    return not isinstance(value, _Unset) or len(value) > 0  # an append action copies the placeholder and appends


def given_flags(args: argparse.Namespace) -> frozenset[str]:
    """The destinations the command line named (empty for a namespace not parsed by :class:`ArgumentParser`)."""
    return getattr(args, "given", frozenset())


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors are one line (``error: argument --x: ...``), exit 2, and
    whose result records which flags were given (:class:`Args`).

    The usage text argparse prints first would bury the one line that says what is wrong; ``--help`` has it.
    """

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)

    def parse_known_args(self, args: list[str] | None = None, namespace: argparse.Namespace | None = None
                         ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, Args() if namespace is None else namespace)
        if isinstance(parsed, Args):  # parse again over placeholders: what replaced one was given
            dests = {action.dest for action in self._actions if action.dest != argparse.SUPPRESS}
            probe, _ = super().parse_known_args(args, argparse.Namespace(**{d: _Unset() for d in dests}))
            parsed.given = frozenset(d for d in dests if _was_given(getattr(probe, d, None)))
        return parsed, extras


def one_line(err: UserInputError) -> str:
    """The message of ``err``; for an error raised in a DataLoader worker, the worker's message alone."""
    text = str(err).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        match = _WORKER_ERROR.match(last)
        return match.group(1) if match else last
    return text


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM), carrying the complete outputs the run had written by then (``kept``)."""

    def __init__(self, kept: Sequence[str | os.PathLike] = (), note: str = "") -> None:
        super().__init__()
        self.kept, self.note = [Path(p) for p in kept], note


@contextlib.contextmanager
def keeps(kept: list[Path] | Callable[[], list[Path]], note: str = "") -> Iterator[None]:
    """On Ctrl-C in the block, report ``kept`` (a list the block fills with each output it completes, or a
    function that finds them) with what an inner block reported; ``note`` is said where something was kept."""
    try:
        yield
    except KeyboardInterrupt as err:
        inner = err if isinstance(err, Interrupted) else Interrupted()
        found = kept() if callable(kept) else kept
        notes = (inner.note, note if found else "")
        raise Interrupted([*found, *(p for p in inner.kept if p not in found)],
                          "; ".join(n for n in notes if n)) from None


def interrupted_line(err: KeyboardInterrupt) -> str:
    """``interrupted: kept A, B; <note>``, ``interrupted: <note>`` or ``interrupted: nothing was written``."""
    kept = err.kept if isinstance(err, Interrupted) else []
    note = err.note if isinstance(err, Interrupted) else ""
    parts = [f"kept {', '.join(map(str, kept))}"] if kept else []
    return "interrupted: " + "; ".join([*parts, note] if note else parts or ["nothing was written"])


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt like Ctrl-C; after the first of either signal both are ignored, so the
    clean-up (temporaries removed, locks released) runs to its end. Only in the main thread (where Python
    runs signal handlers); the previous handlers are restored after the block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_main(main: Callable[[argparse.Namespace], None], parser: argparse.ArgumentParser,
             argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run ``main``; bad input exits 2 and a diverging run 1, each with a one-line reason;
    Ctrl-C and SIGTERM exit :data:`INTERRUPTED_EXIT` with one line saying what was kept."""
    args = parser.parse_args(argv)
    try:
        with sigterm_as_ctrl_c():
            main(args)
    except UserInputError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    except FloatingPointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        print(interrupted_line(err), file=sys.stderr)
        return INTERRUPTED_EXIT
    finally:
        cleanup()
    return 0
