"""What a server says: the lecture's lines, one-line events, a summary.

Two audiences: the lecture's programs print fixed lines on standard output
(``Server listening on port 8080``, ``Client connected``, ``Received: ...``)
that learners compare with the C and Java originals; operators want one line
per event (peer, reason) on standard error, or JSON lines with
``--log-format json``. Nothing here is called per byte; ``received`` is
called per message only by services that show messages.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import TextIO

__all__ = ["MAX_SHOWN_MESSAGE", "ServerLog", "Stats", "show_message"]

#: Characters of a message shown on a text ``Received:`` line: the lecture's
#: buffer (1023 bytes), so every lecture message shows whole, while a
#: 65,507-byte datagram does not flood the terminal. JSON lines keep it all.
MAX_SHOWN_MESSAGE = 1023


@dataclass(slots=True)
class Stats:
    """Counters kept by a server while it runs, reported at exit."""

    connections: int = 0
    active: int = 0
    peak_active: int = 0
    datagrams_in: int = 0
    datagrams_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    errors: int = 0
    refused: int = 0
    started: float = field(default_factory=time.monotonic)

    def summary(self) -> dict[str, int | float]:
        """The counters as a dict, with the uptime in seconds (zero datagram or
        connection counters left out, whichever kind of server this was)."""
        data = asdict(self)
        data.pop("started")
        data.pop("active")
        unused = (
            ("connections", "peak_active")
            if self.datagrams_in
            else ("datagrams_in", "datagrams_out")
        )
        for key in unused:
            if not data[key]:
                data.pop(key)
        data["seconds"] = round(time.monotonic() - self.started, 3)
        return data


def show_message(message: bytes) -> str:
    """A received message as the lecture prints it: decoded, line ending removed."""
    if message.endswith(b"\r\n"):
        message = message[:-2]
    elif message.endswith(b"\n"):
        message = message[:-1]
    return message.decode("utf-8", "replace")


class ServerLog:
    """Writes a server's lines: lecture lines to ``out``, events to ``err``.

    Args:
        out: standard output (the lecture's lines).
        err: standard error (events, warnings, the summary).
        verbose: also log each connection's end and other details.
        json_format: write every line as one JSON object on ``out``.
        quiet: do not print per-client lecture lines (for load tests).
    """

    def __init__(
        self,
        out: TextIO | None = None,
        err: TextIO | None = None,
        *,
        verbose: bool = False,
        json_format: bool = False,
        quiet: bool = False,
    ) -> None:
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.verbose = verbose
        self.json_format = json_format
        self.quiet = quiet
        #: Prefix of event lines, e.g. ``worker 1`` (empty: none).
        self.label = ""

    def _json(self, event: str, **fields: object) -> None:
        record = {"ts": round(time.time(), 6), "event": event, **fields}
        if self.label:
            record["worker"] = self.label
        self.out.write(json.dumps(record, default=str) + "\n")
        self.out.flush()

    def line(self, text: str, *, event: str = "info", **fields: object) -> None:
        """A lecture line on standard output (or a JSON event)."""
        if self.json_format:
            self._json(event, text=text, **fields)
        else:
            self.out.write(text + "\n")
            self.out.flush()

    def event(
        self, text: str, event: str = "event", verbose_only: bool = False, **fields: object
    ) -> None:
        """A one-line event on standard error (or a JSON event)."""
        if verbose_only and not self.verbose:
            return
        if self.json_format:
            self._json(event, text=text, **fields)
        else:
            self.err.write(f"{self.label}: {text}\n" if self.label else text + "\n")
            self.err.flush()

    def listening(self, text: str, **fields: object) -> None:
        """The ready line that scripts and tests wait for."""
        self.line(text, event="listening", **fields)

    def connected(self, peer: str) -> None:
        """A client was accepted."""
        if not self.quiet:
            self.line("Client connected", event="connected", peer=peer)

    def received(self, peer: str, message: bytes) -> None:
        """A message arrived (services that show messages)."""
        if self.quiet:
            return
        text = show_message(message)
        if not self.json_format and len(text) > MAX_SHOWN_MESSAGE:
            text = f"{text[:MAX_SHOWN_MESSAGE]}... ({len(message)} bytes in all)"
        self.line(f"Received: {text}", event="received", peer=peer)

    def closed(self, peer: str, reason: str | None, bytes_in: int, bytes_out: int) -> None:
        """A connection ended; logged when verbose, or always when it ended on an error."""
        if reason is None:
            self.event(
                f"{peer}: closed ({bytes_in} bytes in, {bytes_out} out)",
                event="closed",
                verbose_only=True,
                peer=peer,
                bytes_in=bytes_in,
                bytes_out=bytes_out,
            )
        else:
            self.event(
                f"{peer}: closed: {reason}",
                event="closed",
                peer=peer,
                reason=reason,
                bytes_in=bytes_in,
                bytes_out=bytes_out,
            )

    def warning(self, text: str, **fields: object) -> None:
        """Something the operator should know."""
        self.event(f"warning: {text}", "warning", False, **fields)

    def summary(self, stats: Stats) -> None:
        """The stats line at exit."""
        data = stats.summary()
        if self.json_format:
            self._json("summary", **data)
        else:
            text = ", ".join(f"{k} {v}" for k, v in data.items())
            self.event(f"summary: {text}", "summary")
