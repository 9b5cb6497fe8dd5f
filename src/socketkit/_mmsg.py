"""Batched datagram I/O: many datagrams per system call with recvmmsg/sendmmsg.

Linux only (recvmmsg(2) and sendmmsg(2), glibc or musl, through ctypes).
Elsewhere ``DatagramBatch.available()`` is False and callers keep their
one-datagram-per-call path.

Strategy: one ``DatagramBatch`` owns ``count`` receive slots, each a buffer
of ``size`` bytes and a ``sockaddr_storage`` for the sender, laid out once
as C arrays. ``receive`` fills up to ``count`` slots in one recvmmsg call.
``echo`` sends every received slot back to its sender in one sendmmsg call,
and ``reply`` sends one fixed payload to every sender: neither creates a
Python object per datagram (the lengths and address sizes are copied
between the receive and send headers with strided memoryview assignments,
which loop in C). ``data(i)`` and ``address(i)`` give one slot to code that
needs to look at it (access control, logging, services that compute an
answer). A sender on a connected socket writes into ``slot(i)`` and hands
the first ``n`` slots to ``send`` (one sendmmsg, every datagram the same
length). A relay passes received slots on without copying them: ``forward``
sends chosen slots, each as received, on a connected socket, and
``send_to`` sends the first ``n`` to one address; ``names`` gives each
slot's sender as raw ``struct sockaddr`` bytes, a cheap dictionary key.

Invariants:
- Slot ``i`` is valid from a ``receive`` that returned more than ``i`` until
  the next ``receive``.
- A datagram longer than ``size`` is cut by the kernel and flagged with
  MSG_TRUNC; ``length(i)`` is then ``size``. Callers that must refuse
  oversize datagrams allocate ``limit + 1`` bytes per slot and compare, as
  the one-call path does with ``recvfrom(limit + 1)``.
- ``echo``, ``reply``, ``forward`` and ``send_to`` never block: a full
  socket buffer (EAGAIN) drops the rest of the batch, as a lost datagram
  would be, and the caller counts it. A datagram the kernel refuses (an
  ICMP error from an earlier send) is skipped; its errno is kept in
  ``refused`` for the caller to report.
  ``send`` (a client's own datagrams) waits for room instead, up to its
  ``wait`` seconds, as a blocking ``send`` would.

The header layouts are those of ``<sys/socket.h>`` on Linux (ctypes lays
out the padding): ``struct mmsghdr`` is a ``struct msghdr`` followed by an
``unsigned int`` length.
"""

from __future__ import annotations

import array
import ctypes
import ctypes.util
import errno
import mmap
import os
import select
import socket
import sys
from typing import Any, Literal

__all__ = ["DatagramBatch"]

#: sizeof(struct sockaddr_storage) on every platform this runs on.
_SOCKADDR_SIZE = 128
_MSG_TRUNC = getattr(socket, "MSG_TRUNC", 0x20)
_MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0x40)


class _IOVec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class _MsgHdr(ctypes.Structure):
    _fields_ = (
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_IOVec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    )


class _MMsgHdr(ctypes.Structure):
    _fields_ = (("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint32))


def _load() -> tuple[Any, Any] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        recvmmsg, sendmmsg = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    # int recvmmsg(int, struct mmsghdr *, unsigned, int, struct timespec *)
    recvmmsg.argtypes = (
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_void_p,
    )
    recvmmsg.restype = ctypes.c_int
    # int sendmmsg(int, struct mmsghdr *, unsigned, int)
    sendmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
    sendmmsg.restype = ctypes.c_int
    return recvmmsg, sendmmsg


_CALLS = _load()

# Offsets into the headers, in 32-bit words, for the strided copies.
_STRIDE = ctypes.sizeof(_MMsgHdr) // 4
_NAMELEN = _MsgHdr.msg_namelen.offset // 4
_LEN = _MMsgHdr.msg_len.offset // 4
_FLAGS = _MsgHdr.msg_flags.offset // 4
#: The array/memoryview format of size_t (iov_len).
_SIZE_T: Literal["Q", "I"] = "Q" if ctypes.sizeof(ctypes.c_size_t) == 8 else "I"


def _decode_sockaddr(raw: bytes, family: int) -> Any:
    """A ``struct sockaddr`` as ``socket.recvfrom`` would return it."""
    if family == socket.AF_INET:
        port = int.from_bytes(raw[2:4], "big")
        return (socket.inet_ntop(socket.AF_INET, raw[4:8]), port)
    if family == socket.AF_INET6:
        port = int.from_bytes(raw[2:4], "big")
        flowinfo = int.from_bytes(raw[4:8], "big")
        scope = int.from_bytes(raw[24:28], sys.byteorder)
        return (socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, flowinfo, scope)
    # AF_UNIX: the path after the 2-byte family; an unbound sender has none.
    path = raw[2:]
    if path[:1] == b"\0":
        return path.decode("utf-8", "surrogateescape") if path.strip(b"\0") else None
    return path.split(b"\0", 1)[0].decode("utf-8", "surrogateescape") or None


class DatagramBatch:
    """Receive and send many datagrams per system call on one socket.

    Args:
        count: datagrams per call (slots).
        size: bytes per slot: the largest datagram kept whole.
    """

    __slots__ = (
        "_addrs",
        "_bases",
        "_buffers",
        "_echo_hdrs",
        "_echo_lens",
        "_fwd_hdrs",
        "_fwd_words",
        "_iovs",
        "_lens",
        "_payload",
        "_recv_hdrs",
        "_recv_words",
        "_reply_hdrs",
        "_reply_iov",
        "_send_hdrs",
        "_send_lens",
        "_to_hdrs",
        "_to_key",
        "_to_name",
        "_view",
        "count",
        "refused",
        "size",
    )

    @staticmethod
    def available() -> bool:
        """Whether this platform has recvmmsg/sendmmsg (Linux)."""
        return _CALLS is not None

    def __init__(self, count: int = 64, size: int = 65508) -> None:
        if _CALLS is None:
            raise OSError(errno.ENOSYS, "recvmmsg/sendmmsg are not available on this platform")
        self.count = count
        self.size = size
        # Anonymous pages: zero, and resident only once written (a batch of
        # small datagrams costs a page per slot, not ``size`` bytes).
        self._buffers = (ctypes.c_char * (size * count)).from_buffer(mmap.mmap(-1, size * count))
        self._addrs = (ctypes.c_char * (_SOCKADDR_SIZE * count))()
        recv_iovs = (_IOVec * count)()
        echo_iovs = (_IOVec * count)()
        self._reply_iov = _IOVec()
        self._payload: Any = None
        self._recv_hdrs = (_MMsgHdr * count)()
        self._echo_hdrs = (_MMsgHdr * count)()
        self._reply_hdrs = (_MMsgHdr * count)()
        # Connected sends: no address, each slot's own buffer.
        send_iovs = (_IOVec * count)()
        self._send_hdrs = (_MMsgHdr * count)()
        # Forwarded slots (``forward``): no address, an iovec filled per call.
        fwd_iovs = (_IOVec * count)()
        self._fwd_hdrs = (_MMsgHdr * count)()
        # Slots to one address (``send_to``): the echo iovecs, one shared name.
        self._to_name = (ctypes.c_char * _SOCKADDR_SIZE)()
        self._to_key = b""
        self._to_hdrs = (_MMsgHdr * count)()
        self.refused = 0
        base = ctypes.addressof(self._buffers)
        names = ctypes.addressof(self._addrs)
        reply_iov = ctypes.pointer(self._reply_iov)
        for i in range(count):
            recv_iovs[i].iov_base = echo_iovs[i].iov_base = base + i * size
            recv_iovs[i].iov_len = size
            for hdrs, iov in (
                (self._recv_hdrs, ctypes.pointer(recv_iovs[i])),
                (self._echo_hdrs, ctypes.pointer(echo_iovs[i])),
                (self._reply_hdrs, reply_iov),
            ):
                hdr = hdrs[i].msg_hdr
                hdr.msg_name = names + i * _SOCKADDR_SIZE
                hdr.msg_namelen = _SOCKADDR_SIZE
                hdr.msg_iov = iov
                hdr.msg_iovlen = 1
            send_iovs[i].iov_base = base + i * size
            for hdrs, iov in (
                (self._send_hdrs, ctypes.pointer(send_iovs[i])),
                (self._fwd_hdrs, ctypes.pointer(fwd_iovs[i])),
                (self._to_hdrs, ctypes.pointer(echo_iovs[i])),
            ):
                hdr = hdrs[i].msg_hdr
                hdr.msg_iov = iov
                hdr.msg_iovlen = 1
            self._to_hdrs[i].msg_hdr.msg_name = ctypes.addressof(self._to_name)
        # The iovecs are referenced from the headers only: keep them alive.
        self._iovs = (recv_iovs, echo_iovs, send_iovs, fwd_iovs)
        self._fwd_words = memoryview(fwd_iovs).cast("B").cast(_SIZE_T)
        self._send_lens = memoryview(send_iovs).cast("B").cast(_SIZE_T)
        self._recv_words = memoryview(self._recv_hdrs).cast("B").cast("I")
        #: Each slot's received length, and each slot's buffer address.
        self._lens = self._recv_words[_LEN::_STRIDE]
        self._bases = tuple(base + i * size for i in range(count))
        self._view = memoryview(self._buffers).cast("B")
        self._echo_lens = memoryview(echo_iovs).cast("B").cast(_SIZE_T)

    def receive(self, sock: socket.socket) -> int:
        """Receive up to ``count`` datagrams without blocking.

        Returns:
            How many slots were filled (at least 1).

        Raises:
            BlockingIOError: nothing was waiting.
            OSError: the call failed (e.g. an ICMP error from an earlier send).
        """
        assert _CALLS is not None
        # Every slot's address buffer is offered whole again.
        self._recv_words[_NAMELEN : _STRIDE * self.count : _STRIDE] = _full_names(self.count)
        n: int = _CALLS[0](sock.fileno(), self._recv_hdrs, self.count, _MSG_DONTWAIT, None)
        if n < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        return n

    def length(self, i: int) -> int:
        """The byte count of slot ``i`` (``size`` when it was cut)."""
        return int(self._recv_words[i * _STRIDE + _LEN])

    def longest(self, n: int) -> int:
        """The largest byte count among the first ``n`` slots."""
        return max(self._recv_words[_LEN : _STRIDE * n : _STRIDE])

    def total(self, n: int) -> int:
        """The byte count of the first ``n`` slots together."""
        return sum(self._recv_words[_LEN : _STRIDE * n : _STRIDE])

    def truncated(self, i: int) -> bool:
        """Whether slot ``i``'s datagram was longer than ``size``."""
        return bool(self._recv_words[i * _STRIDE + _FLAGS] & _MSG_TRUNC)

    def data(self, i: int) -> bytes:
        """A copy of slot ``i``'s datagram."""
        return ctypes.string_at(ctypes.addressof(self._buffers) + i * self.size, self.length(i))

    def address(self, i: int, family: int) -> Any:
        """Slot ``i``'s sender, as ``socket.recvfrom`` gives it for ``family``."""
        namelen = self._recv_words[i * _STRIDE + _NAMELEN]
        raw = ctypes.string_at(ctypes.addressof(self._addrs) + i * _SOCKADDR_SIZE, namelen)
        return _decode_sockaddr(raw, family)

    def view(self, i: int) -> memoryview:
        """Slot ``i``'s datagram without a copy (valid until the next ``receive``)."""
        start = i * self.size
        return self._view[start : start + self._lens[i]]

    def names(self, n: int) -> list[bytes]:
        """The senders of the first ``n`` slots as raw ``struct sockaddr`` bytes.

        Equal senders give equal bytes (the kernel zeroes the padding), so
        they serve as dictionary keys; ``address`` decodes one.
        """
        if n == 1:
            return [ctypes.string_at(self._addrs, self._recv_words[_NAMELEN])]
        blob = ctypes.string_at(ctypes.addressof(self._addrs), n * _SOCKADDR_SIZE)
        lens = self._recv_words[_NAMELEN : _STRIDE * n : _STRIDE].tolist()
        step = _SOCKADDR_SIZE
        return [blob[i * step : i * step + length] for i, length in enumerate(lens)]

    def forward(self, sock: socket.socket, slots: list[int]) -> int:
        """Send the given slots, in that order and each as received, on a connected socket.

        Returns:
            How many were sent; the rest were dropped (full buffer or refused).
        """
        k = len(slots)
        if k == 1:  # one datagram: the socket's own send costs less than a ctypes call
            try:
                sock.send(self.view(slots[0]))
            except (BlockingIOError, InterruptedError):
                return 0
            except OSError as exc:
                self.refused = exc.errno or 0
                return 0
            return 1
        bases, lens = self._bases, self._lens
        words = self._fwd_words
        words[0 : 2 * k : 2] = array.array(_SIZE_T, [bases[i] for i in slots])
        words[1 : 2 * k : 2] = array.array(_SIZE_T, [lens[i] for i in slots])
        return self._send(sock, self._fwd_hdrs, k, names=False)

    def send_to(self, sock: socket.socket, n: int, name: bytes) -> int:
        """Send the first ``n`` slots, each as received, to ``name`` (raw sockaddr bytes).

        Returns:
            How many were sent; the rest were dropped (full buffer or refused).
        """
        lens = self._recv_words[_LEN : _STRIDE * n : _STRIDE]
        self._echo_lens[1 : 2 * n : 2] = array.array(_SIZE_T, lens)
        if name != self._to_key:
            ctypes.memmove(self._to_name, name, len(name))
            self._to_key = name
            words = memoryview(self._to_hdrs).cast("B").cast("I")
            words[_NAMELEN : _STRIDE * self.count : _STRIDE] = array.array(
                "I", [len(name)] * self.count
            )
        return self._send(sock, self._to_hdrs, n, names=False)

    def echo(self, sock: socket.socket, n: int) -> int:
        """Send the first ``n`` slots back to their senders, each as received.

        Returns:
            How many were sent; the rest were dropped (full buffer or an error).
        """
        lens = self._recv_words[_LEN : _STRIDE * n : _STRIDE]
        self._echo_lens[1 : 2 * n : 2] = array.array(_SIZE_T, lens)
        return self._send(sock, self._echo_hdrs, n)

    def reply(self, sock: socket.socket, n: int, payload: bytes) -> int:
        """Send ``payload`` to the senders of the first ``n`` slots.

        Returns:
            How many were sent; the rest were dropped.
        """
        if payload is not self._payload:
            self._payload = ctypes.create_string_buffer(payload, len(payload))
            self._reply_iov.iov_base = ctypes.addressof(self._payload)
            self._reply_iov.iov_len = len(payload)
        return self._send(sock, self._reply_hdrs, n)

    def slot(self, i: int) -> memoryview:
        """Slot ``i``'s whole buffer, writable (for ``send``)."""
        return memoryview(self._buffers).cast("B")[i * self.size : (i + 1) * self.size]

    def send(self, sock: socket.socket, n: int, length: int, wait: float | None = None) -> int:
        """Send the first ``length`` bytes of the first ``n`` slots on a connected socket.

        Args:
            wait: seconds to wait for room in a full socket buffer (None: for ever).

        Returns:
            How many were sent: all ``n``, unless the wait ran out or the
            kernel refused some (an ICMP error from earlier; those are lost).
        """
        assert _CALLS is not None
        self._send_lens[1 : 2 * n : 2] = array.array(_SIZE_T, [length]) * n
        sendmmsg = _CALLS[1]
        fd = sock.fileno()
        sent = start = 0
        while start < n:
            k: int = sendmmsg(fd, ctypes.byref(self._send_hdrs, start * 4 * _STRIDE), n - start, 0)
            if k >= 0:
                sent += k
                start += k
                continue
            code = ctypes.get_errno()
            if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS):
                _, writable, _ = select.select([], [fd], [], wait)
                if writable:
                    continue
                break
            if code != errno.EINTR:
                start += 1  # refused (an ICMP error from an earlier one): lost, as UDP may
        return sent

    def _send(self, sock: socket.socket, hdrs: Any, n: int, names: bool = True) -> int:
        """Send headers ``0 .. n-1`` of ``hdrs`` without blocking (``names``: each to
        its slot's sender, whose name length is copied from the receive)."""
        assert _CALLS is not None
        if names:
            words = memoryview(hdrs).cast("B").cast("I")
            words[_NAMELEN : _STRIDE * n : _STRIDE] = self._recv_words[
                _NAMELEN : _STRIDE * n : _STRIDE
            ]
        sendmmsg = _CALLS[1]
        fd = sock.fileno()
        sent = start = 0
        while start < n:
            k: int = sendmmsg(fd, ctypes.byref(hdrs, start * 4 * _STRIDE), n - start, 0)
            if k < 0:
                code = ctypes.get_errno()
                if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS):
                    break
                if code != errno.EINTR:
                    self.refused = code
                    start += 1  # this one datagram cannot go (e.g. no route): skip it
                continue
            sent += k
            start += k
        return sent


_FULL: dict[int, memoryview] = {}


def _full_names(count: int) -> memoryview:
    """``count`` words of ``sizeof(sockaddr_storage)``, for resetting the name lengths."""
    view = _FULL.get(count)
    if view is None:
        view = _FULL[count] = memoryview(array.array("I", [_SOCKADDR_SIZE] * count))
    return view
