"""The command line: parse, call the library, turn errors into one line and an exit code.

Exit codes: each error class carries its own (``socketkit.errors``), plus
130 for Ctrl-C and 143 for SIGTERM; the README's table is the one list, and
tests/cli checks every error class against it.

``main`` is what the console script runs; tests call it with their own argv
and streams. A ``SocketkitError`` is printed as one line,
``socketkit: error: <what>``, whatever the command and whatever the error
(usage ones included); anything else is a bug and is shown in full. When
standard error cannot be written (a closed pipe) the line is dropped, never
the exit code.

``console_main`` first makes sure descriptors 0, 1 and 2 are open (on the
null device when the caller closed them), before any socket exists: a
socket that got descriptor 0 or 1 would be read as standard input or
written as standard output.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sys
from typing import Any, NoReturn, TextIO

from ..errors import SocketkitError, UnsupportedError, UsageError
from . import bench, clients, demo, netcat, proxy, relay, servers
from ._common import Env, add_trace_option
from ._render import render

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_TERMINATED",
    "Terminated",
    "build_parser",
    "main",
    "report_error",
    "reserve_standard_fds",
]

EXIT_INTERRUPTED = 130
#: 128 + SIGTERM, what a shell reports for a program SIGTERM ended.
EXIT_TERMINATED = 143


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived while a command ran that does not stop on it by itself.

    Servers and relays install their own handlers once they serve (and then
    stop gracefully, exit 0); before that, and in every other command,
    SIGTERM ends the command as Ctrl-C does, with exit 143.
    """


def _raise_terminated(_signum: int, _frame: object) -> None:
    raise Terminated()


PROG = "socketkit"


#: What argparse itself takes for a negative number.
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and a ``UsageError``."""

    def _parse_optional(self, arg_string: str):  # type: ignore[no-untyped-def]
        # With -4 and -6 defined, argparse takes "-1" for an option, so
        # "-p -1" said "expected one argument". A negative number that is not
        # one of our options is a value: its type then says what is wrong.
        if _NEGATIVE_NUMBER.match(arg_string) and arg_string not in self._option_string_actions:
            return None
        return super()._parse_optional(arg_string)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    """The full parser, one sub-command per module."""
    parser = _Parser(
        prog=PROG,
        description="The socket-programming lecture's programs as real tools, and more.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"socketkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in (servers, clients, demo, netcat, relay, proxy, bench):
        module.add_parsers(sub)
    _add_trace_everywhere(sub)
    return parser


def _add_trace_everywhere(sub: argparse._SubParsersAction[Any]) -> None:
    """``--trace`` on every leaf command (``bench server`` as well as ``tcp-client``)."""
    for command in sub.choices.values():
        nested = [a for a in command._actions if isinstance(a, argparse._SubParsersAction)]
        if nested:
            for action in nested:
                _add_trace_everywhere(action)
        else:
            add_trace_option(command)


def main(
    argv: list[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run one command; return its exit code (the console script exits with it)."""
    env = Env(stdout or sys.stdout, stderr or sys.stderr)
    args_list = sys.argv[1:] if argv is None else argv
    show_traceback = "--traceback" in args_list
    try:
        args = build_parser().parse_args(args_list)
        check_optional_packages(args)
        if getattr(args, "trace", False):
            return _run_traced(args, env)
        code: int = args.run(args, env)
        return code
    except SocketkitError as exc:
        if show_traceback:
            import traceback

            _say(env.stderr, "".join(traceback.format_exc()))
        report_error(env.stderr, render(exc))
        return exc.exit_code
    except KeyboardInterrupt as exc:
        report_error(env.stderr, "interrupted")
        return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
    except BrokenPipeError:
        # Standard output went away (``socketkit ... | head``): exit quietly.
        _silence(sys.stdout)
        return 0


def report_error(stderr: TextIO, message: str) -> None:
    """Write the one error line every command uses: ``socketkit: error: <message>``."""
    _say(stderr, f"{PROG}: error: {message}\n")


def _say(stream: TextIO, text: str) -> None:
    """Write ``text`` to ``stream``; when it is gone (a closed pipe), drop it quietly.

    The stream is pointed at the null device, so that the interpreter's
    final flush cannot fail either and the exit status stays the command's.
    """
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):
        _silence(stream)


#: Options that need a package the default install may lack:
#: argparse dest -> (option, module to import, what to pip install).
OPTIONAL_PACKAGES: dict[str, tuple[str, str, str]] = {
    "plot": ("--plot", "matplotlib", "'socketkit[plot]'"),
    "self_signed": ("--self-signed", "cryptography", "cryptography"),
}


def check_optional_packages(args: argparse.Namespace) -> None:
    """Refuse an option whose package is missing before any work is done
    (a bench run of minutes must not end in "matplotlib is not installed").

    Raises:
        UnsupportedError: the package behind a given option is not installed.
    """
    import importlib.util

    for dest, (option, module, requirement) in OPTIONAL_PACKAGES.items():
        if getattr(args, dest, None) and importlib.util.find_spec(module) is None:
            raise UnsupportedError(
                f"{option} needs {module}, which is not installed: pip install {requirement}"
            )


def _run_traced(args: argparse.Namespace, env: Env) -> int:
    """Run the command with every socket call printed on standard error."""
    from ..trace import tracing

    with tracing(env.stderr):
        code: int = args.run(args, env)
    return code


def _silence(stream: TextIO) -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def reserve_standard_fds() -> None:
    """Open the null device on whichever of descriptors 0, 1 and 2 is closed.

    A program started with ``<&-`` or ``>&-`` has a free descriptor 0 or 1,
    and the next socket would take it: ``connect`` would then read its own
    socket as standard input, and prints would go to the peer. Python also
    leaves ``sys.stdin``/``sys.stdout``/``sys.stderr`` as None for a closed
    descriptor; they get text streams on the null device. Input reads as
    empty, output is discarded, exit codes stay meaningful.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stdin is None:
        sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    if sys.stdout is None:
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    if sys.stderr is None:
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115


def _ignore_stop_signals() -> None:
    """Ignore SIGINT and SIGTERM from now on: the command is over and its exit
    code decided. While the interpreter shuts down it puts the default
    handlers back, and a late Ctrl-C would kill the process (or raise in
    the middle of its exit) instead of letting it exit with that code. A
    signal already pending is dropped too once its handler is SIG_IGN."""
    while True:
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            return
        except KeyboardInterrupt:
            continue


def console_main() -> NoReturn:
    """Entry point of the ``socketkit`` script.

    SIGPIPE keeps Python's default (ignored), so a closed standard output
    raises BrokenPipeError, which ``main`` turns into a quiet exit.
    """
    reserve_standard_fds()
    # From here on the command handles interruptions itself (``main``).
    signal.signal(signal.SIGTERM, _raise_terminated)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code = main()
    except KeyboardInterrupt as exc:  # it landed just as main returned
        _ignore_stop_signals()
        report_error(sys.stderr, "interrupted")
        code = EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
    _ignore_stop_signals()
    _exit(code)


def _exit(code: int) -> NoReturn:
    """Flush the standard streams and end the process with ``code``.

    The interpreter's own shutdown is skipped: the command is over, its
    resources are closed, and a shutdown interrupted by a signal that
    arrived while the command started (a KeyboardInterrupt pending in a
    half-imported module or a thread being started) could otherwise end
    the process by SIGINT itself instead of with the code decided here.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
