"""The one exception type users see.

Every error caused by the user's input (a model name, a file, an image, a build directory)
is raised as `P2VitError` with a one-line message that says what is wrong and what to do.
The command-line entry points print it as `error: <message>` and exit with status 2;
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import functools
import sys


class P2VitError(Exception):
    """A problem with the user's input, explained in one line."""


def cli_errors(main):
    """Decorate a CLI `main(argv)` so that a P2VitError ends as one line and exit code 2."""

    @functools.wraps(main)
    def wrapper(argv=None):
        try:
            return main(argv)
        except P2VitError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper
