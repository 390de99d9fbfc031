"""Running an entry script: clean errors and exit codes instead of tracebacks for bad input."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from utils.distributed import cleanup
from utils.io import UserInputError


def run_main(main: Callable[[argparse.Namespace], None], parser: argparse.ArgumentParser,
             argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run ``main``; bad input exits 2 and a diverging run 1, each with a one-line reason."""
    args = parser.parse_args(argv)
    try:
        main(args)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except FloatingPointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        cleanup()
    return 0
