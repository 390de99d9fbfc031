"""Running an entry script: clean errors and exit codes instead of tracebacks for bad input, from the parser
(one-line usage errors, ``type=`` checks of numeric flags) to ``main``."""
from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable
from typing import NoReturn

from utils.distributed import cleanup
from utils.io import UserInputError

# a worker's exception reaches the main process as "Caught X in DataLoader worker process N.\nOriginal
# Traceback ...\n<module>.UserInputError: <message>"; the message is the last line
_WORKER_ERROR = re.compile(r"^(?:[\w.]+\.)?UserInputError: (.*)$")


MAX_SEED = 2**32 - 2  # numpy is seeded with seed + 1 (< 2**32)


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


def run_main(main: Callable[[argparse.Namespace], None], parser: argparse.ArgumentParser,
             argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run ``main``; bad input exits 2 and a diverging run 1, each with a one-line reason."""
    args = parser.parse_args(argv)
    try:
        main(args)
    except UserInputError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    except FloatingPointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        cleanup()
    return 0
