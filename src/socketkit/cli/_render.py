"""Library errors as the command line says them: the hint in flag words.

The library's errors carry what failed and where (``exc.message``) and, when
the user can do something about it, a hint kind (``exc.hint``, a key of
``socketkit.errors.HINTS``). The library words a hint in terms of its own
settings; here each kind is worded with the options a user types, so the
one line on standard error reads as it always has, e.g.
``TLS: certificate verify failed for localhost:4433: hostname mismatch
(use --insecure to skip verification)``.
"""

from __future__ import annotations

from ..errors import HINTS, SocketkitError

__all__ = ["FLAG_HINTS", "render"]

#: Every kind of ``socketkit.errors.HINTS``, worded with command-line options.
FLAG_HINTS = {
    "insecure": " (use --insecure to skip verification)",
    "ca-file": " (pass its CA with --ca-file) (use --insecure to skip verification)",
    "certificate": ": --cert FILE (and --key FILE) or --self-signed",
    "key": ": give it with --key FILE (key= in a relay)",
    "latency": " (--latency measures against any echo server)",
    "latency-peer": ": --latency needs an echo service or socketkit bench server",
}
assert FLAG_HINTS.keys() == HINTS.keys(), "a hint kind without its command-line wording"


def render(exc: SocketkitError) -> str:
    """What the command line says of ``exc``: its message and its hint in flag words.

    ``socketkit.cli.report_error`` puts it on the one error line.
    """
    return exc.message + FLAG_HINTS.get(exc.hint or "", "")
