"""TLS for links: an ``ssl.SSLObject`` on memory BIOs between a raw transport and a protocol.

asyncio's own TLS transport cannot half-close (``can_write_eof`` is False,
and a received close_notify closes it), but a relay must: ``connect --tls
... < file`` sends its end of stream and keeps reading the answer.
``TLSLayer`` is the raw transport's protocol and, to the protocol above it,
a transport that can:

- ``write_eof`` decrypts the records already received (so none is lost),
  sends close_notify and then the TCP FIN, and keeps reading until the
  peer's own close_notify or FIN (RFC 8446 section 6.1: each side closes
  its write direction independently);
- a close_notify from the peer, or a FIN without one (a "ragged" end, as
  Python's ``suppress_ragged_eofs`` reads it), is ``eof_received`` above,
  and writing may go on.

Plaintext is handed up only once the protocol above is ready
(``start_app``), so what arrives with the handshake's last flight waits in
the BIO until then. Flow control passes straight through: pausing the
layer pauses the raw transport; the raw transport's ``pause_writing``
reaches the protocol above.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

from ..tls import HANDSHAKE_TIMEOUT, translate_ssl_error

__all__ = ["TLSLayer", "handshake_done"]

#: Plaintext bytes decrypted per read (one TLS record is at most 16 KiB).
READ_SIZE = 256 * 1024


class TLSLayer(asyncio.Protocol):
    """TLS between a raw transport (below) and a protocol (above); see the module doc."""

    def __init__(
        self,
        ctx: ssl.SSLContext,
        app: Any,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(
            self.incoming,
            self.outgoing,
            server_side=server_side,
            server_hostname=None if server_side else server_hostname,
        )
        self.app = app
        self.raw: Any = None
        self.handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._app_ready = False
        self._eof_up = False
        self._sent_close = False
        self._lost = False

    # ----------------------------------------------------- below: raw protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw = transport
        self._do_handshake()

    def data_received(self, data: bytes) -> None:
        self.incoming.write(data)
        if not self.handshake.done():
            self._do_handshake()
        elif self._app_ready:
            self._read_plain()

    def eof_received(self) -> bool:
        self.incoming.write_eof()
        if not self.handshake.done():
            self._do_handshake()
            return False
        if self._app_ready:
            self._read_plain()
            self._eof_to_app()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if not self.handshake.done():
            self.handshake.set_exception(exc or ConnectionResetError("connection closed"))
            return
        self.app.connection_lost(exc)

    def pause_writing(self) -> None:
        self.app.pause_writing()

    def resume_writing(self) -> None:
        self.app.resume_writing()

    def _do_handshake(self) -> None:
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, OSError) as exc:
            self._flush()  # our alert, so the peer learns why
            if not self.handshake.done():
                self.handshake.set_exception(exc)
            return
        self._flush()
        if not self.handshake.done():
            self.handshake.set_result(None)

    def _read_plain(self) -> None:
        while not self._eof_up:
            try:
                chunk = self.obj.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                self._eof_to_app()
                break
            except ssl.SSLError as exc:
                self.raw.abort()
                self.app.connection_lost(exc)
                self._eof_up = True
                return
            if not chunk:
                self._eof_to_app()
                break
            self.app.data_received(chunk)
        self._flush()  # TLS 1.3 may answer (key updates)

    def _eof_to_app(self) -> None:
        if not self._eof_up:
            self._eof_up = True
            self.app.eof_received()

    def _flush(self) -> None:
        if self.outgoing.pending and self.raw is not None and not self._lost:
            self.raw.write(self.outgoing.read())

    # -------------------------------------------------------- above: transport

    def start_app(self) -> None:
        """The protocol above is ready: hand it what has arrived, and what will."""
        self._app_ready = True
        self._read_plain()
        if self.incoming.eof:
            self._eof_to_app()

    def write(self, data: Any) -> None:
        if self._sent_close or self._lost:
            return
        view = memoryview(data)
        for start in range(0, len(view), READ_SIZE):
            self.obj.write(view[start : start + READ_SIZE])
        self._flush()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self._sent_close or self._lost:
            return
        if self._app_ready:
            self._read_plain()  # records already here are delivered, not lost to unwrap()
        self._sent_close = True
        with contextlib.suppress(ssl.SSLError, ValueError):
            self.obj.unwrap()
        self._flush()
        with contextlib.suppress(OSError, RuntimeError, NotImplementedError):
            self.raw.write_eof()

    def close(self) -> None:
        if not self._lost:
            self.write_eof()
            self.raw.close()

    def abort(self) -> None:
        if self.raw is not None:
            self.raw.abort()

    def is_closing(self) -> bool:
        return self.raw is None or bool(self.raw.is_closing())

    def pause_reading(self) -> None:
        self.raw.pause_reading()

    def resume_reading(self) -> None:
        self.raw.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.raw.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return int(self.raw.get_write_buffer_size())

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self.obj
        return self.raw.get_extra_info(name, default)

    def describe(self) -> str:
        """``TLSv1.3 TLS_AES_256_GCM_SHA384, ALPN h2`` for the -v log."""
        cipher = self.obj.cipher()
        alpn = self.obj.selected_alpn_protocol()
        return f"{self.obj.version()} {cipher[0] if cipher else ''}" + (
            f", ALPN {alpn}" if alpn else ""
        )


async def handshake_done(layer: TLSLayer, *, role: str, where: str, timeout: float | None) -> None:
    """Wait for the handshake (at most ``timeout`` s).

    Raises:
        TLSError: it failed or timed out (the connection is aborted).
    """
    try:
        async with asyncio.timeout(timeout or HANDSHAKE_TIMEOUT):
            await layer.handshake
    except (ssl.SSLError, OSError, TimeoutError) as exc:
        layer.abort()
        raise translate_ssl_error(exc, where=where, role=role) from exc  # type: ignore[arg-type]
