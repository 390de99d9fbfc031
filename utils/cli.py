"""Running an entry script: clean errors and exit codes instead of tracebacks for bad input."""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from typing import NoReturn

from utils.distributed import cleanup
from utils.io import UserInputError

# a worker's exception reaches the main process as "Caught X in DataLoader worker process N.\nOriginal
# Traceback ...\n<module>.UserInputError: <message>"; the message is the last line
_WORKER_ERROR = re.compile(r"^(?:[\w.]+\.)?UserInputError: (.*)$")


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors are one line (``error: argument --x: ...``), exit 2.

    The usage text argparse prints first would bury the one line that says what is wrong; ``--help`` has it.
    """

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


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
