"""``python -m socketkit`` and the ``socketkit`` script.

Ctrl-C or SIGTERM can arrive while the modules are still loading, before
any command runs. Until ``socketkit.cli.console_main`` takes over, either
signal prints the one error line and exits 130 or 143 at once (nothing is
open yet, so there is nothing to clean up): no KeyboardInterrupt traceback
from the middle of an import. This module therefore imports only ``os``,
``signal`` and ``sys`` before installing the handler, and ``socketkit``'s
own ``__init__`` loads next to nothing.
"""

from __future__ import annotations

import os
import signal
import sys

TYPE_CHECKING = False  # not typing's: one import less before the guard
if TYPE_CHECKING:
    from types import FrameType
    from typing import NoReturn


def _interrupted_while_starting(signum: int, _frame: FrameType | None) -> None:
    try:  # noqa: SIM105 (contextlib is one more import before the guard)
        os.write(2, b"socketkit: error: interrupted\n")
    except OSError:
        pass
    os._exit(128 + signum)


def console_main() -> NoReturn:
    """Entry point of the ``socketkit`` script: guard the start-up, then run."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupted_while_starting)
    from .cli import console_main as run

    run()
    sys.exit(1)  # not reached: run() exits


if __name__ == "__main__":
    console_main()
