"""The fault suite: real servers and the relay under bad clients (run with ``pytest -m fault``)."""

from __future__ import annotations

import sys
from pathlib import Path

# faultsupport.py lives next to this file; make it importable whatever the import mode.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
