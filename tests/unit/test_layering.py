"""The library stands below the command line: importing it loads no argparse.

Each check imports in a fresh interpreter (this one has the CLI loaded
already) and reads ``sys.modules`` there. No socket is opened.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest

from socketkit.cli._flags import family_from_flags
from socketkit.errors import UsageError

#: Seconds a fresh interpreter may take to import the library.
IMPORT_TIMEOUT = 30.0

LIBRARY = [
    "socketkit.tls",
    "socketkit.address",
    "socketkit.framing",
    "socketkit.server",
    "socketkit.relay",
    "socketkit.sync",
    "socketkit.aio",
    "socketkit.proxy_client",
    "socketkit.proxy",
]


def _modules_after_import(*names: str) -> list[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(names)!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=IMPORT_TIMEOUT
    )
    assert proc.returncode == 0, proc.stderr
    loaded: list[str] = json.loads(proc.stdout)
    return loaded


def test_the_library_imports_no_argparse() -> None:
    loaded = _modules_after_import(*LIBRARY)
    assert "argparse" not in loaded
    assert not [name for name in loaded if name.startswith("socketkit.cli")]


@pytest.mark.parametrize("name", LIBRARY)
def test_each_library_package_alone_imports_no_argparse(name: str) -> None:
    assert "argparse" not in _modules_after_import(name)


def test_tls_command_line_helpers_moved_with_a_warning() -> None:
    import socketkit.cli._tls
    import socketkit.tls

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        moved = socketkit.tls.add_tls_arguments  # type: ignore[attr-defined]
    assert moved is socketkit.cli._tls.add_tls_arguments
    assert [w.category for w in caught] == [DeprecationWarning]
    with pytest.raises(AttributeError):
        socketkit.tls.no_such_name  # type: ignore[attr-defined]  # noqa: B018


def test_family_flags_are_worded_by_the_command_line() -> None:
    # The library says what is wrong in its own terms (test_address); the
    # command line names the flags the user typed, with the usage exit code.
    with pytest.raises(UsageError) as info:
        family_from_flags(ipv4=True, ipv6=True)
    assert str(info.value) == "choose at most one of -4 and -6"
    assert info.value.exit_code == 2
