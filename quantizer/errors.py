"""The one exception type users see.

Every error caused by the user's input (a model name, a file, an image, a build directory)
is raised as `P2VitError` with a one-line message that says what is wrong and what to do.
The command-line entry points print it as `error: <message>` and exit with status 2;
anything else is a bug and keeps its traceback. Ctrl-C exits with 130 and SIGTERM with 143,
both after the same cleanup (partial outputs are removed).
"""
from __future__ import annotations

import functools
import signal
import sys
import threading


class P2VitError(Exception):
    """A problem with the user's input, explained in one line."""


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that every `finally`/cleanup runs as on Ctrl-C."""


def _raise_terminated(signum, frame):
    raise Terminated()


def cli_errors(main):
    """Decorate a CLI `main(argv)` so that a P2VitError ends as one line and exit code 2."""

    @functools.wraps(main)
    def wrapper(argv=None):
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main else None
        try:
            return main(argv)
        except P2VitError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            raise SystemExit(130) from None
        except Terminated:
            print("error: terminated", file=sys.stderr)
            raise SystemExit(143) from None
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)

    return wrapper
