"""Fixtures for the interoperability tests: build the socket-demo peers once."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The helper module lives next to this file; make it importable whatever
# pytest's import mode is.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from peers import PeerBuildError, build_peers  # noqa: E402


@pytest.fixture(scope="session")
def built_peers() -> None:
    """Run ``make -C peers`` once per session; fail clearly if cc/javac/java are missing."""
    try:
        build_peers()
    except PeerBuildError as exc:
        pytest.fail(str(exc), pytrace=False)
