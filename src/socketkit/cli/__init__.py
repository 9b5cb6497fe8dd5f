"""The command line: parse, call the library, turn errors into one line and an exit code.

Exit codes (documented in the README):
    0    success
    1    an error not covered below
    2    bad input: usage, malformed address, bad port, unknown host
    3    connection refused or unreachable
    4    cannot listen: address in use, permission, unusable path
    5    timed out
    6    connection broken by the peer or the network
    7    framing: message too large, malformed frame
    8    not supported on this platform
    130  interrupted (Ctrl-C)

``main`` is what the console script runs; tests call it with their own argv
and streams. A ``SocketkitError`` is printed as one line; anything else is a
bug and is shown in full.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn, TextIO

from ..errors import SocketkitError, UsageError
from . import bench, clients, demo, netcat, proxy, relay, servers
from ._common import Env, add_trace_option

__all__ = ["EXIT_INTERRUPTED", "build_parser", "main"]

EXIT_INTERRUPTED = 130
PROG = "socketkit"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and a ``UsageError``."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message} (see --help)")


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
        if getattr(args, "trace", False):
            return _run_traced(args, env)
        code: int = args.run(args, env)
        return code
    except SocketkitError as exc:
        if show_traceback:
            import traceback

            traceback.print_exc(file=env.stderr)
        env.stderr.write(
            f"{PROG}: error: {exc}\n" if not isinstance(exc, UsageError) else f"{exc}\n"
        )
        env.stderr.flush()
        return exc.exit_code
    except KeyboardInterrupt:
        env.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Standard output went away (``socketkit ... | head``): exit quietly.
        _silence_stdout()
        return 0


def _run_traced(args: argparse.Namespace, env: Env) -> int:
    """Run the command with every socket call printed on standard error."""
    from ..trace import tracing

    if hasattr(args, "splice"):
        args.splice = False  # splice(2) moves data where no traced call sees it
    with tracing(env.stderr):
        code: int = args.run(args, env)
    return code


def _silence_stdout() -> None:
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def console_main() -> NoReturn:
    """Entry point of the ``socketkit`` script.

    SIGPIPE keeps Python's default (ignored), so a closed standard output
    raises BrokenPipeError, which ``main`` turns into a quiet exit.
    """
    sys.exit(main())
