"""Forwarding one plain ``http://`` request to its origin server, on the event loop.

``curl -x http://proxy:1080 http://site/`` sends ``GET http://site/ HTTP/1.1``
to the proxy (absolute-form, RFC 9112 section 3.2.2). The proxy's
``HttpProxyServer`` turns that into a ``ForwardRequest`` (origin-form
target, end-to-end headers), then ``RequestBody``/``RequestEnd`` events.
A ``Forwarding`` connects to the origin (policy and timeouts as for a
tunnel: ``_server.connect_target``), re-frames the request with an h11
client connection, and relays the answer back through the server machine
(``send_response``, ``send_body``, ``end_response``), which drops
hop-by-hop headers and frames the body for the client.

Each request gets its own connection to the origin, sent with
``Connection: close``: the answer then ends at the latest when the origin
closes, and nothing is kept between requests. The client's connection stays
open (keep-alive) when both its request and our answer allow it.

Flow control both ways: a client that reads slowly pauses reading from the
origin, an origin that reads slowly pauses reading from the client.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, cast

import h11

from ..errors import SocketkitError
from ..framing.http_proxy import ForwardRequest, HttpProxyServer
from ..framing.tunnel import TunnelFailure
from ._settings import TargetUnavailable, connect_target

if TYPE_CHECKING:
    from ._server import ProxyProtocol

__all__ = ["Forwarding"]


class Forwarding(asyncio.Protocol):
    """One forwarded request and its answer; the origin connection's protocol."""

    def __init__(self, client: ProxyProtocol, request: ForwardRequest) -> None:
        self.client = client
        self.request = request
        #: True until the client's request (with its body) has been read.
        self.reading_request = True
        self._conn = h11.Connection(h11.CLIENT)
        self._transport: asyncio.Transport | None = None
        self._pending = bytearray()
        self._answered = False
        self._done = False
        headers = [(name, value) for name, value in request.headers if name.lower() != b"host"]
        host = next((v for n, v in request.headers if n.lower() == b"host"), None)
        authority = client.target.encode("ascii")
        if request.port == 80 and ":" not in request.host:
            authority = request.host.encode("ascii")
        headers = [(b"host", host or authority), *headers, (b"connection", b"close")]
        self._pending += self._send(
            h11.Request(method=request.method, target=request.target, headers=headers)
        )
        self._task: asyncio.Task[None] | None = asyncio.get_running_loop().create_task(
            self._connect()
        )

    @property
    def _machine(self) -> HttpProxyServer:
        machine = self.client._machine
        assert isinstance(machine, HttpProxyServer)
        return machine

    def _send(self, event: h11.Request | h11.Data | h11.EndOfMessage) -> bytes:
        return self._conn.send(event) or b""

    async def _connect(self) -> None:
        client = self.client
        try:
            sock = await connect_target(self.request.host, self.request.port, client.settings)
        except TargetUnavailable as exc:
            self._task = None
            self._done = True
            client.forward_failed(exc.failure, exc.reason)
            return
        except SocketkitError as exc:
            self._task = None
            self._done = True
            client.forward_failed(TunnelFailure.GENERAL, str(exc))
            return
        self._task = None
        if self._done:
            sock.close()
            return
        try:
            await asyncio.get_running_loop().create_connection(lambda: self, sock=sock)
        except OSError as exc:
            sock.close()
            self._done = True
            client.forward_failed(TunnelFailure.GENERAL, str(exc))

    # -- the request, from the client ----------------------------------

    def body(self, data: bytes) -> None:
        """A piece of the request body."""
        self._write(self._send(h11.Data(data=data)))

    def end_request(self) -> None:
        """The request is complete: now wait for the answer (reading no more
        from the client meanwhile, so a pipelining client cannot fill memory)."""
        self.reading_request = False
        self._write(self._send(h11.EndOfMessage()))
        if self.client.transport is not None:
            self.client.transport.pause_reading()

    def _write(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)
            return
        self._pending += data
        # Not connected yet: read no more from the client until we are.
        if self.client.transport is not None:
            self.client.transport.pause_reading()

    # -- the origin's connection ---------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)
        self._transport = stream
        if self._done:
            transport.close()
            return
        stream.write(bytes(self._pending))
        self._pending.clear()
        client_transport = self.client.transport
        if client_transport is not None and self.reading_request:
            client_transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self._conn.receive_data(data)
        self._answer()

    def eof_received(self) -> bool | None:
        self._conn.receive_data(b"")
        self._answer()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if not self._done:
            self._fail(str(exc) if exc else "the origin closed the connection mid-answer")

    def pause_writing(self) -> None:
        if self.client.transport is not None:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        transport = self.client.transport
        if transport is not None and self.reading_request and not transport.is_closing():
            transport.resume_reading()

    def _answer(self) -> None:
        machine = self._machine
        while not self._done:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._fail(f"the origin's answer is not HTTP: {exc}")
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.InformationalResponse):
                continue  # 100 Continue and the like: ours to the client is h11's business
            if isinstance(event, h11.Response):
                self._answered = True
                machine.send_response(event.status_code, event.headers, event.reason)
            elif isinstance(event, h11.Data):
                machine.send_body(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                machine.end_response()
                self._finish()
            elif isinstance(event, h11.ConnectionClosed):
                self._fail("the origin closed the connection without answering")
                return
            self.client.flush()

    def _finish(self) -> None:
        self._done = True
        self.client.flush()
        self.close()
        self.client.forward_done(keep_alive=not self._machine.closed)

    def _fail(self, reason: str) -> None:
        self._done = True
        self.close()
        if self._answered:
            self.client.forward_failed(None, reason)
        else:
            self.client.forward_failed(TunnelFailure.GENERAL, reason)

    # -- called by the client's protocol --------------------------------

    def pause(self) -> None:
        """The client reads slowly: stop reading the origin."""
        if self._transport is not None:
            with contextlib.suppress(RuntimeError):
                self._transport.pause_reading()

    def resume(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def close(self) -> None:
        """Drop the origin's connection (and stop connecting)."""
        self._done = True
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._transport is not None:
            self._transport.close()
