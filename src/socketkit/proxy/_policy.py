"""Where a proxy's clients may go: allowed and denied destinations (sans-I/O).

A rule names a host part, a port part, or both::

    10.0.0.0/8        addresses in a range (an address alone is a /32 or /128)
    example.com       that name; ``.example.com`` or ``*.example.com``: its subdomains too
    :22   :1-1023     a port, or a range of ports
    10.0.0.0/8:443    both must match; ``[::1]:22`` for IPv6

Rules, as for clients (``socketkit.access``): a target matching any deny rule
is refused; when there is at least one allow rule, a target matching none
is refused; everything else may be reached.

A name is checked twice: before it is resolved (by name and port, so a
denied name costs no lookup), and for each address it resolves to (by
name, address and port), so that denying ``10.0.0.0/8`` also holds
for a name that resolves into that range. Before resolution an allow rule
that only an address could match leaves the answer open (None) until the
addresses are known.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import AddressError
from ..framing.tunnel import validate_hostname

__all__ = ["DestinationPolicy", "DestinationRule", "parse_destination_rule"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class DestinationRule:
    """One ``--allow-dest``/``--deny-dest`` rule (see the module docstring).

    Attributes:
        text: the rule as written, for messages.
        network: the address range, or None.
        name: a lower-case host name, or None.
        subdomains: ``name`` also matches every name ending in ``.name``.
        ports: the (first, last) port range, or None for any port.
    """

    text: str
    network: Network | None = None
    name: str | None = None
    subdomains: bool = False
    ports: tuple[int, int] | None = None

    def _port_matches(self, port: int) -> bool:
        return self.ports is None or self.ports[0] <= port <= self.ports[1]

    def _name_matches(self, name: str) -> bool:
        if self.name is None:
            return False
        name = name.lower().rstrip(".")
        if name == self.name:
            return True
        return self.subdomains and name.endswith("." + self.name)

    def matches(self, name: str | None, address: Address | None, port: int) -> bool | None:
        """Whether the rule matches the target; None when only ``address`` could tell."""
        if not self._port_matches(port):
            return False
        if self.network is None and self.name is None:
            return True
        if self.name is not None and name is not None and self._name_matches(name):
            return True
        if self.network is not None:
            if address is None:
                return None
            return address.version == self.network.version and address in self.network
        return False


def _bad(text: str, why: str) -> AddressError:
    return AddressError(f"invalid destination rule {text!r}: {why}")


def _parse_ports(text: str, rule: str) -> tuple[int, int]:
    first, dash, last = text.partition("-")
    try:
        low = int(first)
        high = int(last) if dash else low
    except ValueError:
        raise _bad(rule, f"{text!r} is not a port or a range LO-HI") from None
    if not (1 <= low <= high <= 65535):
        raise _bad(rule, f"ports {text!r} are outside 1..65535")
    return low, high


def _unmapped(address: Address) -> Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_destination_rule(text: str) -> DestinationRule:
    """One rule from its text (see the module docstring).

    Raises:
        AddressError: a rule that is neither a range, a name nor a port.
    """
    rule = text.strip()
    if not rule:
        raise _bad(text, "empty")
    host, ports = rule, None
    if rule.startswith("["):
        end = rule.find("]")
        if end < 0:
            raise _bad(text, "missing ']'")
        host, rest = rule[1:end], rule[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise _bad(text, "expected ':PORT' after ']'")
            ports = _parse_ports(rest[1:], text)
    elif rule.count(":") == 1:
        host, _, port_text = rule.partition(":")
        ports = _parse_ports(port_text, text)
    if not host:
        return DestinationRule(text, ports=ports)
    try:
        network = ipaddress.ip_network(host, strict=False)
    except ValueError:
        pass
    else:
        if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
            mapped = network.network_address.ipv4_mapped
            if mapped is not None:
                network = ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}")
        return DestinationRule(text, network=network, ports=ports)
    subdomains = host.startswith((".", "*."))
    name = host.removeprefix("*").removeprefix(".").lower()
    try:
        validate_hostname(name)
    except ValueError as exc:
        raise _bad(text, f"not an address range, host name or :PORT ({exc})") from None
    return DestinationRule(text, name=name.rstrip("."), subdomains=subdomains, ports=ports)


@dataclass(frozen=True, slots=True)
class DestinationPolicy:
    """Which targets a proxy may connect to. Empty lists allow every target.

    Attributes:
        allow: the rules allowed (when any is given, only these).
        deny: the rules refused, whatever ``allow`` says.
        names: what the reasons call the two lists (allowed, denied); the
            command line passes its option names.
    """

    allow: tuple[DestinationRule, ...] = ()
    deny: tuple[DestinationRule, ...] = ()
    names: tuple[str, str] = ("allow", "deny")

    @classmethod
    def from_strings(
        cls,
        allow: Iterable[str] = (),
        deny: Iterable[str] = (),
        *,
        names: tuple[str, str] = ("allow", "deny"),
    ) -> DestinationPolicy:
        """The policy from rule texts.

        Raises:
            AddressError: a rule that does not parse.
        """
        return cls(
            tuple(parse_destination_rule(a) for a in allow),
            tuple(parse_destination_rule(d) for d in deny),
            names,
        )

    @property
    def active(self) -> bool:
        return bool(self.allow or self.deny)

    def check(self, host: str, port: int, address: str | None = None) -> str | None:
        """Why ``host:port`` may not be reached, or None when it may (or cannot tell yet).

        Args:
            host: the target as the client named it: an address or a name.
            port: the target port.
            address: the address ``host`` resolved to, once known. For an
                address ``host`` it is ``host`` itself.

        Returns:
            None to let it through, else the reason for the log.
        """
        if not self.active:
            return None
        ip: Address | None = None
        name: str | None = host
        try:
            ip = _unmapped(ipaddress.ip_address((address or host).split("%", 1)[0]))
        except ValueError:
            ip = None
        if address is None and ip is not None:
            name = None  # the client gave an address, not a name
        for rule in self.deny:
            if rule.matches(name, ip, port):
                return f"destination denied by {self.names[1]} {rule.text}"
        if not self.allow:
            return None
        answers = [rule.matches(name, ip, port) for rule in self.allow]
        if any(answers):
            return None
        if ip is None and None in answers:
            return None  # an address range may match once the name is resolved
        return f"destination not in any {self.names[0]} rule"
