"""The one exception type users see.

Every error caused by the user's input (a model name, a file, an image, a build directory)
is raised as `P2VitError` with a one-line message that says what is wrong and what to do.
The command-line entry points print it as `error: <message>` and exit with status 2, as they do
an OSError that only the user's paths or disk can cause (a name too long, a disk full, a
read-only file system: `PATH_ERRORS`; `writing_to` names the output where the write names no file); anything else is a bug and keeps its traceback. Ctrl-C exits with 130 and SIGTERM with 143,
both after the same cleanup (partial outputs are removed). A reader that closes the output
early (`... | head`) ends the command quietly with 141, as the shell reports SIGPIPE.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import numbers
import os
import select
import signal
import sys
import threading


class P2VitError(Exception):
    """A problem with the user's input, explained in one line."""


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that every `finally`/cleanup runs as on Ctrl-C."""


# errno -> what to do. Not ENOENT or EACCES: the CLIs check their inputs and outputs for those
# up front, so one arriving here is a bug (e.g. a file missing from the package) and keeps its traceback.
PATH_ERRORS = {
    errno.ENAMETOOLONG: "choose a shorter path",
    errno.ELOOP: "the path has a symbolic-link loop; choose another path",
    errno.ENOSPC: "free some space or choose another output path",
    errno.EDQUOT: "free some space or choose another output path",
    errno.EROFS: "choose an output path on a writable file system",
    errno.EACCES: "choose a path this user may write",
    errno.EPERM: "choose a path this user may write (the file or folder may be immutable)",
    errno.EBUSY: "the path is in use (a mount point?); choose another output path",
}


def _short(name, limit: int = 80) -> str:
    name = str(name)
    return name if len(name) <= limit else name[:limit // 2] + "..." + name[-limit // 2:]


def path_error_message(exc: OSError) -> str | None:
    """One line for an OSError caused by the user's paths or disk (`PATH_ERRORS`), else None."""
    todo = PATH_ERRORS.get(exc.errno)
    if todo is None:
        return None
    where = f"{_short(exc.filename)}: " if exc.filename is not None else ""
    return f"{where}{exc.strerror or exc}; {todo}"


@contextlib.contextmanager
def writing_to(path, attempt=None):
    """Writes to the output `path`, perhaps assembled in a hidden `attempt` (a folder or file that a
    failure removes) first. A disk error (`PATH_ERRORS`) names the output: one that names no file (a
    write() call's, e.g. a full disk) gets `path`, and one that names something in the attempt (as
    its file, or as a copy's destination, filename2) gets its place in `path`, so the one-line error
    says where the output was going, not a name that no longer exists or the copy's source."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in PATH_ERRORS:
            raise
        base = os.fspath(attempt) if attempt is not None else None
        inside = [os.fspath(n) for n in (exc.filename2, exc.filename) if n is not None and base is not None
                  and (os.fspath(n) == base or os.fspath(n).startswith(base + os.sep))]
        if inside:
            name = os.fspath(path) + inside[0][len(base):]
        elif exc.filename is None:
            name = os.fspath(path)
        else:
            raise
        raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), name) from exc


def _raise_terminated(signum, frame):
    raise Terminated()


CLI_PACKAGES = ("quantizer", "codegen", "cosim")   # python -m <one of these>[.<module>] is one of our CLIs


def _interrupted_while_starting(signum, frame):
    os.write(2, b"error: interrupted\n")
    os._exit(130)


def interrupt_quietly_while_starting() -> None:
    """Under `python -m` of one of our CLIs, a Ctrl-C during the imports (torch alone takes a second
    or two, before cli_errors is in place) ends as one in main does, 'error: interrupted' and exit
    130, not with a traceback from inside torch. Nothing is written before main runs, so nothing is
    left half-written. cli_errors gives Python's handler back when main starts. Anything else
    (a library import, pytest, worker processes, a SIGINT already ignored or handled) is left alone."""
    argv = list(getattr(sys, "orig_argv", ()))
    target = next((a[2:] or (argv[i + 1] if i + 1 < len(argv) else "") for i, a in enumerate(argv[1:], 1)
                   if a.startswith("-m")), "")
    if (target.split(".")[0] in CLI_PACKAGES and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
        signal.signal(signal.SIGINT, _interrupted_while_starting)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors end like every other bad input: one line `error: ...`, exit 2,
    instead of the whole usage block above it (the options are one --help away). A shortened
    option (--row for --rows) is refused like any other unknown one: argparse's prefix matching
    would take a typo for whichever option it begins."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


# --help's epilog of a CLI whose only outcomes are done or refused (pass formatter_class=
# argparse.RawDescriptionHelpFormatter to keep its lines)
EXIT_STATUS_HELP = """\
exit status:
  0    done
  2    bad input (model, data, flags, paths): one line 'error: ...' on stderr
  130  interrupted (Ctrl-C); 143: terminated (SIGTERM); nothing is left half-written
"""


def path_arg(text: str) -> str:
    """argparse `type` of every path option: an empty string would mean the current directory; a
    leading ~ is the home directory, also where the shell left it alone (--out=~/b)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; give a file or directory")
    return os.path.expanduser(text)


def check_count(value, name: str, minimum: int = 1, none_ok: bool = False) -> None:
    """A whole-number argument of a Python call (the CLIs parse theirs with count_arg): an int (a
    numpy one too) of at least `minimum`, or None where `none_ok`. A bool, float or string is
    refused here, not by a TypeError deep in the run."""
    if value is None and none_ok:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise P2VitError(f"{name} must be a whole number of at least {minimum}{' (or None)' if none_ok else ''}, "
                         f"not {value!r}")


def check_flag(value, name: str) -> None:
    """A True/False argument of a Python call: a string such as "no" would switch it on by its truth."""
    numpy_bool = type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")   # 2.x, 1.x
    if not isinstance(value, bool) and not numpy_bool:
        raise P2VitError(f"{name} must be True or False, not {value!r}")


def count_arg(minimum: int = 1):
    """argparse `type` of a whole-number option with a lower bound (image counts, repeats, jobs)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, not {value}")
        return value

    parse.__name__ = "count"   # argparse names the type in its messages
    return parse


def _stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader has gone (rather than some other pipe breaking):
    poll reports POLLERR on the write end of a pipe with no reader."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):   # no real file descriptor (a captured stdout)
        return False


def _close_progress_bars() -> None:
    """Close the progress bars a stopped or failed step left open, so that their last line comes
    before the error line, not after it when they are garbage-collected."""
    tqdm_module = sys.modules.get("tqdm")
    if tqdm_module is None:
        return
    try:
        for bar in list(getattr(tqdm_module.tqdm, "_instances", ())):
            bar.close()
    except Exception:   # a bar that cannot draw any more must not hide the error itself
        pass


def _error_exit(message: str, code: int) -> SystemExit:
    """Print the one 'error: ...' line, after the last line of any progress bar still open, and
    return the SystemExit to raise."""
    _close_progress_bars()
    print(f"error: {message}", file=sys.stderr)
    return SystemExit(code)


def _escape_unencodable_output() -> None:
    """Print what the output's encoding cannot hold (a path's 'é' under PYTHONIOENCODING=ascii or a
    C locale) as backslash escapes, as the error messages do, rather than end in UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) != "strict":   # a C locale's surrogateescape prints a file name's bytes back
            continue
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):   # not a TextIOWrapper (a test's capture), or closed
            pass


def cli_errors(main):
    """Decorate a CLI `main(argv)` so that a P2VitError ends as one line and exit code 2."""

    @functools.wraps(main)
    def wrapper(argv=None):
        _escape_unencodable_output()
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main else None
        if in_main and signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
            signal.signal(signal.SIGINT, signal.default_int_handler)   # from here on, KeyboardInterrupt
        try:
            return main(argv)
        except P2VitError as exc:
            raise _error_exit(str(exc), 2) from None
        except BrokenPipeError:
            if not _stdout_closed():
                raise
            # the reader has gone: point stdout at /dev/null so that the exit's flush raises nothing
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(141) from None
        except OSError as exc:
            message = path_error_message(exc)
            if message is None:
                raise
            raise _error_exit(message, 2) from None
        except KeyboardInterrupt:
            raise _error_exit("interrupted", 130) from None
        except Terminated:
            raise _error_exit("terminated", 143) from None
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)

    return wrapper
