"""TLS for socketkit: SSL contexts for client and server roles, and one-line errors.

Defaults are the safe ones: a client verifies the server's certificate
against the system's CAs (or ``TLSSettings.cafile``) and checks the host name
(``ssl.create_default_context``); ``verify=False`` turns both off (saying so
is the caller's part: the command line warns on standard error). SNI is the
host connected to unless ``server_name`` names another; ALPN protocols are
offered (client) or accepted (server) as given.

A server needs a certificate: ``certfile``/``keyfile``, or ``self_signed``
to generate a throw-away one in memory (an EC P-256 key and a certificate
for localhost, 127.0.0.1, ::1 and this host's name, made with the
``cryptography`` package, valid for 30 days). A server given a ``cafile``
requires and verifies client certificates (mutual TLS).

Errors: ``translate_ssl_error`` turns ``ssl.SSLError`` into ``TLSError``
with a line that says what failed and where, e.g. ``TLS: certificate verify
failed for localhost:4433: hostname mismatch``, and a hint kind
(``exc.hint == "insecure"``) that the command line words as
``(use --insecure to skip verification)``.

The command-line options that fill ``TLSSettings`` live in
``socketkit.cli._tls``: nothing here knows argparse or a flag's name.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TextIO

from .address import Endpoint, InetEndpoint
from .errors import SettingError, TLSError

__all__ = [
    "MemoryTLS",
    "TLSSettings",
    "client_context",
    "client_server_hostname",
    "handshake",
    "handshake_memory",
    "self_signed_pem",
    "server_context",
    "translate_ssl_error",
]

Role = Literal["client", "server"]

#: Seconds a TLS handshake may take before the connection is given up.
HANDSHAKE_TIMEOUT = 10.0

# OpenSSL X509_V_ERR_* codes (include/openssl/x509_vfy.h) and what to say.
_VERIFY_REASONS = {
    2: "unknown CA (unable to get the issuer certificate)",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "self-signed certificate",
    19: "self-signed certificate in the chain",
    20: "unknown CA (unable to get local issuer certificate)",
    21: "unknown CA (unable to verify the first certificate)",
    62: "hostname mismatch",
    64: "IP address mismatch",
}
#: Verify failures whose remedy is trusting the certificate's own CA.
_SELF_SIGNED = frozenset({18, 19})


@dataclass(frozen=True, slots=True)
class TLSSettings:
    """Everything a TLS context is built from.

    Attributes:
        certfile: certificate chain (PEM) to present; a server needs one.
        keyfile: its private key (PEM), if not in ``certfile``.
        cafile: CA certificates to trust (client: instead of the system's;
            server: require client certificates signed by them).
        verify: client: verify the server's certificate and name.
        server_name: client: the name to send (SNI) and check.
        alpn: ALPN protocols to offer (client) or accept (server).
        self_signed: server without ``certfile``: generate a throw-away one.
    """

    certfile: str | None = None
    keyfile: str | None = None
    cafile: str | None = None
    verify: bool = True
    server_name: str | None = None
    alpn: tuple[str, ...] = ()
    self_signed: bool = False


def _pem_lacks(path: str, label: str) -> bool:
    """True when the file at ``path`` is readable and has no ``-----BEGIN ...label``
    block (OpenSSL's own error for it is a bare "PEM lib")."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError:
        return False
    return not any(
        line.startswith(b"-----BEGIN ") and label.encode() in line for line in text.splitlines()
    )


def _load_chain(ctx: ssl.SSLContext, certfile: str, keyfile: str | None) -> None:
    try:
        ctx.load_cert_chain(certfile, keyfile)
    except FileNotFoundError as exc:
        raise SettingError(f"TLS: cannot read {exc.filename or certfile}: no such file") from exc
    except (ssl.SSLError, OSError) as exc:
        # Say which file lacks what: OpenSSL only says "PEM lib".
        if _pem_lacks(certfile, "CERTIFICATE"):
            raise SettingError(f"TLS: {certfile} holds no certificate (PEM)") from exc
        if keyfile is None and _pem_lacks(certfile, "PRIVATE KEY"):
            raise SettingError(f"TLS: {certfile} holds no private key", hint="key") from exc
        if keyfile is not None and _pem_lacks(keyfile, "PRIVATE KEY"):
            raise SettingError(f"TLS: {keyfile} holds no private key (PEM)") from exc
        what = certfile if keyfile is None else f"{certfile} / {keyfile}"
        raise SettingError(
            f"TLS: cannot load certificate and key from {what}: {_reason(exc)}"
        ) from exc


def _load_ca(ctx: ssl.SSLContext, cafile: str) -> None:
    try:
        ctx.load_verify_locations(cafile=cafile)
    except FileNotFoundError as exc:
        raise SettingError(f"TLS: cannot read CA file {cafile}: no such file") from exc
    except (ssl.SSLError, OSError) as exc:
        raise SettingError(f"TLS: cannot load CA file {cafile}: {_reason(exc)}") from exc


def _alpn(ctx: ssl.SSLContext, protocols: Sequence[str]) -> None:
    if protocols:
        try:
            ctx.set_alpn_protocols(list(protocols))
        except (ValueError, NotImplementedError) as exc:
            raise SettingError(f"TLS: bad ALPN protocol list {','.join(protocols)}: {exc}") from exc


def _tolerate_half_close(ctx: ssl.SSLContext) -> None:
    # A TLS half-close from socketkit (or from many peers) is a TCP FIN
    # without close_notify; read it as end of stream, as Python does by default.
    ctx.options |= getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)


def client_context(settings: TLSSettings) -> ssl.SSLContext:
    """A context for the client role: verification and hostname check unless ``verify`` is off.

    Args:
        settings: certificate (for client authentication), CA, verify, ALPN.

    Raises:
        SettingError: a certificate, key or CA file cannot be loaded.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    _tolerate_half_close(ctx)
    if settings.cafile:
        _load_ca(ctx, settings.cafile)
    if not settings.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if settings.certfile:
        _load_chain(ctx, settings.certfile, settings.keyfile)
    _alpn(ctx, settings.alpn)
    return ctx


def server_context(settings: TLSSettings, *, info: TextIO | None = None) -> ssl.SSLContext:
    """A context for the server role.

    Args:
        settings: certificate and key (or ``self_signed``), CA, ALPN.
        info: where to print a generated certificate's fingerprint
            (standard error by default).

    Raises:
        SettingError: no certificate (hint ``"certificate"``), files that
            cannot be loaded, or ``self_signed`` without ``cryptography``.
    """
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _tolerate_half_close(ctx)
    if settings.certfile:
        _load_chain(ctx, settings.certfile, settings.keyfile)
    elif settings.self_signed:
        cert_pem, key_pem, fingerprint = self_signed_pem()
        with tempfile.TemporaryDirectory(prefix="socketkit-tls-") as tmp:
            cert = os.path.join(tmp, "cert.pem")
            key = os.path.join(tmp, "key.pem")
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key_pem)
            with open(cert, "wb") as f:
                f.write(cert_pem)
            _load_chain(ctx, cert, key)
        stream = info if info is not None else sys.stderr
        stream.write(
            f"socketkit: TLS: self-signed certificate for localhost, SHA-256 {fingerprint}\n"
        )
        stream.flush()
    else:
        raise SettingError("TLS: a server needs a certificate", hint="certificate")
    if settings.cafile:
        _load_ca(ctx, settings.cafile)
        ctx.verify_mode = ssl.CERT_REQUIRED
    _alpn(ctx, settings.alpn)
    return ctx


def self_signed_pem(hostnames: Sequence[str] = ()) -> tuple[bytes, bytes, str]:
    """Generate a self-signed certificate and key (PEM), and the certificate's fingerprint.

    The certificate names localhost, 127.0.0.1, ::1, this host's name and
    ``hostnames``; it is valid from one hour ago for 30 days.

    Raises:
        SettingError: the ``cryptography`` package is not installed.
    """
    try:
        import datetime as dt
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise SettingError(
            "TLS: a self-signed certificate needs the 'cryptography' package "
            "(pip install cryptography)"
        ) from exc
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for extra in (socket.gethostname(), *hostnames):
        if extra and extra != "localhost":
            names.append(x509.DNSName(extra))
    names += [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "socketkit self-signed")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    digest = cert.fingerprint(hashes.SHA256()).hex().upper()
    fingerprint = ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
    return cert_pem, key_pem, fingerprint


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc).lower() or type(exc).__name__


def translate_ssl_error(exc: BaseException, *, where: str, role: Role = "client") -> TLSError:
    """Turn a handshake failure into a one-line ``TLSError`` (the caller chains it)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        reason = _VERIFY_REASONS.get(code, (exc.verify_message or _reason(exc)).rstrip(".").lower())
        hint = None
        if role == "client":
            hint = "ca-file" if code in _SELF_SIGNED else "insecure"
        return TLSError(f"TLS: certificate verify failed for {where}: {reason}", hint=hint)
    if isinstance(exc, ssl.SSLEOFError | ConnectionResetError | BrokenPipeError):
        return TLSError(
            f"TLS: handshake with {where} failed: the peer closed the connection "
            "(does it speak TLS? does it accept our certificate?)"
        )
    if isinstance(exc, TimeoutError | socket.timeout):
        return TLSError(f"TLS: handshake with {where} timed out")
    reason = _reason(exc)
    if "wrong version number" in reason or "record layer failure" in reason:
        reason += " (is the peer speaking TLS?)"
    if role == "server" and "unknown ca" in reason:
        reason += " (the client does not trust our certificate)"
    return TLSError(f"TLS: handshake with {where} failed: {reason}")


def client_server_hostname(endpoint: Endpoint, server_hostname: str | None) -> str | None:
    """The name a client sends (SNI) and checks: the one given, else the endpoint's host.

    None for a Unix socket with no name given: there is no host to check.
    """
    if server_hostname:
        return server_hostname
    return endpoint.host if isinstance(endpoint, InetEndpoint) else None


def handshake(
    sock: socket.socket,
    ctx: ssl.SSLContext,
    *,
    role: Role,
    where: str,
    server_hostname: str | None = None,
    timeout: float | None = HANDSHAKE_TIMEOUT,
) -> ssl.SSLSocket:
    """Wrap a connected socket and complete the handshake (blocking, with a timeout).

    On failure the socket is closed and a ``TLSError`` raised.
    """
    try:
        sock.settimeout(timeout)
        tls = ctx.wrap_socket(
            sock,
            server_side=role == "server",
            server_hostname=server_hostname if role == "client" else None,
        )
        tls.settimeout(None)
        return tls
    except (ssl.SSLError, OSError) as exc:
        with contextlib.suppress(OSError):
            sock.close()
        raise translate_ssl_error(exc, where=where, role=role) from exc


@dataclass(slots=True)
class MemoryTLS:
    """A TLS session over memory BIOs on a plain socket: we move the bytes ourselves.

    Used by the relay, which needs to send close_notify without the second
    SSL_shutdown call of ``SSLSocket.unwrap`` (that call reads on and
    discards application data the peer is still sending).
    """

    sock: socket.socket
    obj: ssl.SSLObject
    incoming: ssl.MemoryBIO
    outgoing: ssl.MemoryBIO


def handshake_memory(
    sock: socket.socket,
    ctx: ssl.SSLContext,
    *,
    role: Role,
    where: str,
    server_hostname: str | None = None,
    timeout: float | None = HANDSHAKE_TIMEOUT,
) -> MemoryTLS:
    """Complete a handshake over memory BIOs on a connected, blocking socket.

    On failure the socket is closed (after trying to send our alert) and a
    ``TLSError`` raised.
    """
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    try:
        obj = ctx.wrap_bio(
            incoming,
            outgoing,
            server_side=role == "server",
            server_hostname=server_hostname if role == "client" else None,
        )
    except (ssl.SSLError, ValueError) as exc:
        sock.close()
        raise TLSError(f"TLS: cannot start a session with {where}: {exc}") from exc
    try:
        sock.settimeout(timeout)
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pending = outgoing.read()
                if pending:
                    sock.sendall(pending)
                data = sock.recv(65536)
                if data:
                    incoming.write(data)
                else:
                    incoming.write_eof()
        pending = outgoing.read()
        if pending:
            sock.sendall(pending)
        sock.settimeout(None)
    except (ssl.SSLError, OSError) as exc:
        with contextlib.suppress(OSError):
            pending = outgoing.read()  # our alert, so the peer learns why
            if pending:
                sock.settimeout(1.0)
                sock.sendall(pending)
        with contextlib.suppress(OSError):
            sock.close()
        raise translate_ssl_error(exc, where=where, role=role) from exc
    return MemoryTLS(sock, obj, incoming, outgoing)
