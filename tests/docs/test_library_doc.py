"""docs/library.md runs as written: its examples are doctests against loopback servers.

The page's examples talk to a TCP and a UDP echo server, named ``ECHO`` and
``UDP_ECHO`` there; this test starts both (``-p 0``, ready when they print
their listening line) and runs every ``>>>`` example of the page in order,
checking what each prints.
"""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

from helpers import start_server

PAGE = Path(__file__).resolve().parents[2] / "docs" / "library.md"

pytestmark = pytest.mark.timeout(60)


def test_library_page_examples_run_as_written() -> None:
    host = ["--host", "127.0.0.1", "-p", "0", "-q"]
    with (
        start_server("tcp-server", "--service", "echo", *host) as tcp,
        start_server("udp-server", "--service", "echo", *host) as udp,
    ):
        globs = {"ECHO": f"127.0.0.1:{tcp.port()}", "UDP_ECHO": f"127.0.0.1:{udp.port()}"}
        text = PAGE.read_text()
        parser = doctest.DocTestParser()
        test = parser.get_doctest(text, globs, "library.md", str(PAGE), 0)
        assert len(test.examples) > 20, "the page lost its examples"
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        failures: list[str] = []
        runner.run(test, out=failures.append)
        assert runner.failures == 0, "".join(failures)
