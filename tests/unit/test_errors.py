"""The error tree: classes, exit codes and ``translate_os_error`` (``socketkit.errors``).

Opens no socket: the OSErrors are built by hand, as the socket calls raise them.
"""

from __future__ import annotations

import errno

import pytest

from socketkit import errors
from socketkit.errors import (
    AddressError,
    BrokenError,
    ClosedError,
    ConnectError,
    FramingError,
    HostNotFoundError,
    IncompleteReadError,
    ListenError,
    MessageTooLargeError,
    SettingError,
    SocketkitError,
    SocketTimeoutError,
    UnsupportedError,
    UsageError,
    translate_os_error,
)

WHERE = "127.0.0.1:8080"


def oserror(code: int) -> OSError:
    """The OSError subclass the socket module raises for ``code``."""
    return OSError(code, f"C library text for {errno.errorcode[code]}")


# -- exit codes and the shape of the tree ---------------------------------------

# As drawn in the errors module docstring; the codes are a public interface.
EXIT_CODES = {
    SocketkitError: 1,
    UsageError: 2,
    SettingError: 2,
    AddressError: 2,
    HostNotFoundError: 2,
    ConnectError: 3,
    ListenError: 4,
    SocketTimeoutError: 5,
    ClosedError: 1,
    BrokenError: 6,
    IncompleteReadError: 6,
    FramingError: 7,
    MessageTooLargeError: 7,
    UnsupportedError: 8,
}


@pytest.mark.parametrize(
    ("cls", "code"), EXIT_CODES.items(), ids=lambda v: getattr(v, "__name__", v)
)
def test_exit_codes(cls: type[SocketkitError], code: int) -> None:
    assert cls.exit_code == code


def public_error_classes() -> list[type[SocketkitError]]:
    return [
        obj
        for name in errors.__all__
        if isinstance(obj := getattr(errors, name), type) and issubclass(obj, SocketkitError)
    ]


def test_every_public_error_has_its_exit_code_in_the_module_docstring() -> None:
    doc = errors.__doc__
    assert doc is not None
    classes = public_error_classes()
    assert set(EXIT_CODES) <= set(classes)
    for cls in classes:
        lines = [line for line in doc.splitlines() if f" {cls.__name__} " in f" {line} "]
        assert len(lines) == 1, f"{cls.__name__} is not drawn once in the tree"
        assert f"exit {cls.exit_code} " in f"{lines[0]} ", lines[0]


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (AddressError, ValueError),
        (HostNotFoundError, ValueError),
        (ConnectError, ConnectionError),
        (SocketTimeoutError, TimeoutError),
        (BrokenError, ConnectionError),
        (IncompleteReadError, ConnectionError),
    ],
)
def test_errors_are_also_the_matching_builtin(cls: type, builtin: type) -> None:
    assert issubclass(cls, builtin)
    assert issubclass(cls, SocketkitError)


def test_subclass_relations() -> None:
    assert issubclass(HostNotFoundError, AddressError)
    assert issubclass(IncompleteReadError, BrokenError)
    assert issubclass(MessageTooLargeError, FramingError)
    assert not issubclass(ClosedError, BrokenError)  # you closed it vs the peer did


def test_evidence_is_carried() -> None:
    exc = IncompleteReadError("cut", partial=b"abc", expected=10)
    assert (exc.partial, exc.expected) == (b"abc", 10)
    big = MessageTooLargeError("big", size=9, limit=5, remote=False)
    assert (big.size, big.limit, big.remote) == (9, 5, False)
    assert FramingError("bad").remote is True
    timeout = SocketTimeoutError("slow", phase="accept", timeout=1.5)
    assert (timeout.phase, timeout.timeout, timeout.errno) == ("accept", 1.5, errno.ETIMEDOUT)
    assert str(SocketkitError("one line", errno=5)) == "one line"
    assert SocketkitError("x", errno=5).errno == 5


# -- translate_os_error ---------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "phase", "cls", "text"),
    [
        (errno.ECONNREFUSED, "connect", ConnectError, f"connection refused by {WHERE}"),
        (errno.ENOENT, "connect", ConnectError, f"no socket at {WHERE}"),
        (errno.ENETUNREACH, "connect", ConnectError, f"{WHERE} is unreachable"),
        (errno.EHOSTUNREACH, "connect", ConnectError, f"{WHERE} is unreachable"),
        (errno.EACCES, "connect", ConnectError, "permission denied"),
        (errno.EAFNOSUPPORT, "connect", UnsupportedError, "address family not supported"),
        (errno.ECONNRESET, "connect", ConnectError, f"cannot connect to {WHERE}"),
        (errno.EADDRINUSE, "bind", ListenError, f"address already in use: {WHERE}"),
        (errno.EADDRINUSE, "listen", ListenError, "address already in use"),
        (errno.EACCES, "bind", ListenError, f"permission denied to bind {WHERE}"),
        (errno.EPERM, "bind", ListenError, "permission denied"),
        (errno.EADDRNOTAVAIL, "bind", ListenError, "no such local address"),
        (errno.EAFNOSUPPORT, "bind", UnsupportedError, "address family not supported"),
        (errno.ETIMEDOUT, "connect", SocketTimeoutError, f"connect to {WHERE} timed out"),
        (errno.ETIMEDOUT, "receive", SocketTimeoutError, "receive"),
        (errno.ECONNRESET, "receive", BrokenError, f"connection to {WHERE} broken during receive"),
        (errno.ECONNRESET, "send", BrokenError, "broken during send"),
        (errno.EPIPE, "send", BrokenError, "broken during send"),
        (errno.ECONNABORTED, "accept", BrokenError, "broken during accept"),
        (errno.ECONNREFUSED, "receive", ConnectError, "refused the datagram"),
        (errno.EMSGSIZE, "send", MessageTooLargeError, f"too large for one datagram to {WHERE}"),
        (errno.EBADF, "send", SocketkitError, f"send on {WHERE} failed"),
    ],
)
def test_translate_os_error(code: int, phase: str, cls: type, text: str) -> None:
    exc = translate_os_error(oserror(code), phase=phase, where=WHERE)
    assert type(exc) is cls
    assert text in str(exc)
    assert "\n" not in str(exc)
    assert exc.errno == code
    assert str(exc) == str(exc).strip()


def test_translate_keeps_the_errno_of_the_real_subclasses() -> None:
    # What socket calls really raise: OSError(errno) picks the subclass.
    refused = OSError(errno.ECONNREFUSED, "Connection refused")
    assert isinstance(refused, ConnectionRefusedError)
    exc = translate_os_error(refused, phase="connect", where=WHERE)
    assert exc.errno == errno.ECONNREFUSED
    assert str(exc) == f"connection refused by {WHERE} (is a server listening?)"
    assert exc.exit_code == 3


def test_translate_timeout_without_errno() -> None:
    # What a socket with settimeout() raises (socket.timeout): no errno.
    exc = translate_os_error(TimeoutError("timed out"), phase="receive", where=WHERE)
    assert isinstance(exc, SocketTimeoutError)
    assert exc.phase == "receive"
    assert isinstance(exc, TimeoutError)


def test_translate_connection_error_without_errno_is_broken() -> None:
    exc = translate_os_error(ConnectionResetError(), phase="receive", where=WHERE)
    assert isinstance(exc, BrokenError)


def test_translate_passes_our_errors_through() -> None:
    ours = ClosedError("closed")
    assert translate_os_error(ours, phase="send", where=WHERE) is ours  # type: ignore[arg-type]


def test_messages_are_lower_case_strerror() -> None:
    exc = translate_os_error(oserror(errno.EBADF), phase="receive", where=WHERE)
    assert str(exc) == f"receive on {WHERE} failed: bad file descriptor"


# -- hints: a kind in the library, flag words on the command line ----------------


@pytest.mark.parametrize("kind", sorted(errors.HINTS))
def test_a_hint_is_worded_by_the_library_without_flags_and_by_the_cli_with_them(
    kind: str,
) -> None:
    from socketkit.cli._render import FLAG_HINTS, render

    exc = errors.TLSError("TLS: certificate verify failed for localhost:4433", hint=kind)
    assert exc.message == "TLS: certificate verify failed for localhost:4433"
    assert str(exc) == exc.message + errors.HINTS[kind]
    assert "--" not in str(exc)
    assert render(exc) == exc.message + FLAG_HINTS[kind]
    assert "--" in render(exc)


def test_the_cli_words_todays_lines() -> None:
    from socketkit.cli._render import render

    exc = errors.TLSError(
        "TLS: certificate verify failed for h:1: hostname mismatch", hint="insecure"
    )
    assert render(exc) == (
        "TLS: certificate verify failed for h:1: hostname mismatch "
        "(use --insecure to skip verification)"
    )
    assert render(SettingError("TLS: a server needs a certificate", hint="certificate")) == (
        "TLS: a server needs a certificate: --cert FILE (and --key FILE) or --self-signed"
    )
    assert render(ConnectError("connection refused by h:1")) == "connection refused by h:1"
