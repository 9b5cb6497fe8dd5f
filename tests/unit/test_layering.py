"""The library stands below the command line: importing it loads no argparse.

Each check imports in a fresh interpreter (this one has the CLI loaded
already) and reads ``sys.modules`` there. No socket is opened.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from socketkit.cli._flags import family_from_flags
from socketkit.errors import UsageError

#: Seconds a fresh interpreter may take to import the library.
IMPORT_TIMEOUT = 30.0

LIBRARY = [
    "socketkit.access",
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


def test_family_flags_are_worded_by_the_command_line() -> None:
    # The library says what is wrong in its own terms (test_address); the
    # command line names the flags the user typed, with the usage exit code.
    with pytest.raises(UsageError) as info:
        family_from_flags(ipv4=True, ipv6=True)
    assert str(info.value) == "choose at most one of -4 and -6"
    assert info.value.exit_code == 2


def test_the_version_is_written_once() -> None:
    import tomllib
    from pathlib import Path

    import socketkit

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text())["project"]
    assert socketkit.__version__ == project["version"]
    assert project["version"] not in Path(socketkit.__file__).read_text()


SRC = Path(__file__).resolve().parents[2] / "src" / "socketkit"
#: An option as a user types it: ``--insecure``, ``-k/...``, ``-4 ``.
_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]+|(?<![\w-])-[a-zA-Z46](?=[/ ])")
#: Library strings that name options on purpose, and why.
_FLAGS_ALLOWED = {
    # iperf3's own option names, in the refusals sent to an iperf3 client.
    "bench/_protocol.py",
}


def _library_modules() -> list[Path]:
    return [p for p in sorted(SRC.rglob("*.py")) if "cli" not in p.relative_to(SRC).parts]


def _strings_that_reach_users(tree: ast.AST) -> list[ast.Constant]:
    """Every string constant but docstrings."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_the_library_names_no_command_line_option() -> None:
    # Hints are kinds (``exc.hint``) that the CLI words with its options.
    found = []
    for path in _library_modules():
        rel = path.relative_to(SRC).as_posix()
        if rel in _FLAGS_ALLOWED:
            continue
        for node in _strings_that_reach_users(ast.parse(path.read_text())):
            if isinstance(node.value, str) and _FLAG.search(node.value):
                found.append(f"{rel}:{node.lineno}: {node.value!r}")
    assert not found, "\n".join(found)


def test_only_the_command_line_raises_usage_errors() -> None:
    # The library raises SettingError (or its own errors) for bad settings.
    found = [
        f"{path.relative_to(SRC)}:{node.lineno}"
        for path in _library_modules()
        if path.name != "errors.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Name | ast.alias)
        and (node.id if isinstance(node, ast.Name) else node.name) == "UsageError"
    ]
    assert not found, found


#: The packages and modules a library user imports.
PUBLIC = ["socketkit", "socketkit.errors", *LIBRARY, "socketkit.bench"]
PUBLIC += ["socketkit.trace", "socketkit.lecture"]


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_is_documented_and_none_is_private(name: str) -> None:
    import importlib
    import inspect

    module = importlib.import_module(name)
    exported = module.__all__
    assert not [n for n in exported if n.startswith("_") and n != "__version__"]
    undocumented = [
        n
        for n in exported
        if (inspect.isclass(obj := getattr(module, n)) or inspect.isfunction(obj))
        and not (inspect.getdoc(obj) or "").strip()
    ]
    assert not undocumented, f"{name}: {undocumented} have no docstring"
