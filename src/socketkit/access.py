"""Access control: who may connect, as allowed and denied IP addresses and CIDR ranges.

Rules, as ncat applies them: a peer in any denied range is refused; when
there is at least one allowed range, a peer outside all of them is refused;
everyone else is let in. IPv4-mapped IPv6 peers (``::ffff:10.0.0.1``, seen on
a dual-stack listener) are checked as the IPv4 address they carry, so
allowing ``10.0.0.0/8`` means the same on every listener.

Unix-domain peers have no IP address; they are always let in (file
permissions are their access control).

``AccessList.check`` has the shape of the server engine's and the relay's
``accept_filter(addr) -> str | None`` hook (None: let in; a string: the
reason for refusing). The reason names the rule that refused, in the words
the list was given (``names``): the command line passes its option names,
so its log reads ``denied by --deny 10.0.0.0/8``.

Sans-I/O: no socket, no clock.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import AddressError

__all__ = ["AccessList", "parse_network"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(text: str) -> Network:
    """An address or CIDR range: ``10.0.0.1``, ``10.0.0.0/8``, ``::1``, ``fd00::/8``.

    Host bits may be set (``10.1.2.3/8`` means ``10.0.0.0/8``), as ncat allows.

    Raises:
        AddressError: not an IP address or range.
    """
    cleaned = text.strip()
    if cleaned.startswith("[") and "]" in cleaned:
        cleaned = cleaned[1:].replace("]", "", 1)
    try:
        net = ipaddress.ip_network(cleaned, strict=False)
    except ValueError:
        raise AddressError(
            f"invalid address range {text!r}: expected an IP address or CIDR (10.0.0.0/8)"
        ) from None
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96:
        mapped = net.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network(f"{mapped}/{net.prefixlen - 96}")
    return net


def _peer_ip(addr: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    host: object = addr
    if isinstance(addr, tuple) and addr:
        host = addr[0]
    if not isinstance(host, str) or not host or host.startswith("\0") or "/" in host:
        return None
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@dataclass(frozen=True, slots=True)
class AccessList:
    """Who may connect. Empty lists let everyone in.

    Attributes:
        allow: the ranges allowed (when any is given, only these).
        deny: the ranges refused, whatever ``allow`` says.
        names: what the reasons call the two lists (allowed, denied).
    """

    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()
    names: tuple[str, str] = ("allow", "deny")

    @classmethod
    def from_strings(
        cls,
        allow: Iterable[str] = (),
        deny: Iterable[str] = (),
        *,
        names: tuple[str, str] = ("allow", "deny"),
    ) -> AccessList:
        """The list from address texts (see ``parse_network``).

        Raises:
            AddressError: an address or range that does not parse.
        """
        return cls(
            tuple(parse_network(a) for a in allow), tuple(parse_network(d) for d in deny), names
        )

    @property
    def active(self) -> bool:
        """True when the list can refuse anyone."""
        return bool(self.allow or self.deny)

    def check(self, addr: object) -> str | None:
        """None when ``addr`` (a sockaddr or an address string) may connect, else why not."""
        if not self.active:
            return None
        ip = _peer_ip(addr)
        if ip is None:
            return None
        allow_name, deny_name = self.names
        for net in self.deny:
            if ip.version == net.version and ip in net:
                return f"denied by {deny_name} {net}"
        if self.allow and not any(ip.version == n.version and ip in n for n in self.allow):
            return f"not in any {allow_name} range"
        return None

    __call__ = check
