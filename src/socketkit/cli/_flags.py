"""Library values from command-line flags, with the library's errors worded as flags.

The library takes plain values (``ipv4=True``) and words its errors
without knowing any flag; here a refusal becomes the usage message that
names the flags the user typed.
"""

from __future__ import annotations

from .. import address
from ..errors import AddressError, UsageError

__all__ = ["family_from_flags"]


def family_from_flags(ipv4: bool = False, ipv6: bool = False) -> int:
    """The address family ``-4`` / ``-6`` ask for (AF_UNSPEC for neither).

    Raises:
        UsageError: both were given.
    """
    try:
        return address.family_from_flags(ipv4, ipv6)
    except AddressError as exc:
        raise UsageError("choose at most one of -4 and -6") from exc
