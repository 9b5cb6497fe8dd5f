"""The tutorial and command pages are what docs/generate.py produces today.

The generator runs again into a temporary folder; every page must match the
committed one once measured figures, ports and fingerprints are masked
(``generate.normalize``). If this fails, run ``python docs/generate.py`` and
commit the result.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_are_up_to_date(tmp_path: Path) -> None:
    generate = _generator()
    proc = subprocess.run(
        [sys.executable, str(DOCS / "generate.py"), "--out", str(tmp_path), "--no-images"],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stderr
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.md"))
    assert fresh, "the generator wrote no pages"
    for rel in fresh:
        committed = DOCS / rel
        assert committed.exists(), f"docs/{rel} is not committed (run docs/generate.py)"
        assert generate.normalize(committed.read_text()) == generate.normalize(
            (tmp_path / rel).read_text()
        ), f"docs/{rel} is out of date: run python docs/generate.py"
