"""Fixtures for the loopback I/O tests: every test must give back its descriptors."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# iosupport.py lives next to this file; make it importable whatever the import mode.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


def _descriptors() -> dict[str, str] | None:
    """Open descriptors and what they point at; None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    result = {}
    for fd in os.listdir("/proc/self/fd"):
        # The descriptor listdir itself used is gone by now: skip it.
        with contextlib.suppress(OSError):
            result[fd] = os.readlink(f"/proc/self/fd/{fd}")
    return result


@pytest.fixture(autouse=True)
def no_descriptor_leaks() -> Iterator[None]:
    """Fail a test that leaves sockets (or any descriptor) open behind it.

    Autouse, so it is set up before and torn down after the test's other
    fixtures: listeners, event loops and their threads are closed by then.
    """
    before = _descriptors()
    yield
    if before is None:
        return
    after = _descriptors()
    assert after is not None
    leaked = {fd: target for fd, target in after.items() if before.get(fd) != target}
    assert not leaked, f"descriptors left open: {leaked}"
