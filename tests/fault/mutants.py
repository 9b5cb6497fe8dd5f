"""Show that each fault check fails against a deliberately broken variant.

    python tests/fault/mutants.py [NAME ...]

Each mutant is one textual change to a copy of ``src/`` (the working tree
is never touched); the checks it must break run against that copy (via
PYTHONPATH, which the server subprocesses inherit) and must fail. Prints
one line per mutant and exits non-zero if a check survived its mutant.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
T = "tests/fault/"
TCP, LIM, UDP, RELAY, FUZZ = (
    T + "test_tcp_faults.py::",
    T + "test_tcp_shutdown_limits.py::",
    T + "test_udp_faults.py::",
    T + "test_relay_faults.py::",
    T + "test_fuzz.py::",
)

#: name: (file, old text, new text, checks that must fail)
MUTANTS: dict[str, tuple[str, str, str, list[str]]] = {
    "1 echo drops bytes past 64 KiB per read": (
        "server/_services.py",
        "        self.idle_ticks = 0\n        self.transport.write(data)",
        "        self.idle_ticks = 0\n        self.transport.write(data[:65536])",
        [TCP + "test_integrity_under_load"],
    ),
    "2 no backpressure (pause_writing does not pause reading)": (
        "server/_services.py",
        "        self.writing_paused = True\n        if self.transport is not None:\n"
        "            self.transport.pause_reading()",
        "        self.writing_paused = True",
        [TCP + "test_slow_reader_memory_bounded_others_served"],
    ),
    "3 idle sweep closes nothing": (
        "server/_engine.py",
        "            for conn in idle:\n",
        "            for conn in idle[:0]:\n",
        [
            TCP + "test_slowloris_then_idle_timeout",
            LIM + "test_client_that_never_reads_is_released",
        ],
    ),
    "4 max-conns ignores sockets not yet connected (the bug fixed in d86323a)": (
        "server/_engine.py",
        "self.stats.active + self._pending < limits.max_conns",
        "self.stats.active < limits.max_conns",
        [TCP + "test_flood_past_max_conns_no_leak"],
    ),
    "4b one descriptor leaked per connection": (
        "server/_engine.py",
        "        self._pending += 1\n",
        "        self._pending += 1\n        self.__dict__.setdefault('leak', []).append(sock.dup())\n",
        [TCP + "test_flood_past_max_conns_no_leak"],
    ),
    "5 half-close never ends the echo (write side kept open)": (
        "server/_services.py",
        "    def eof_received(self) -> bool | None:\n        return self.ended()",
        "    def eof_received(self) -> bool | None:\n        return True",
        [TCP + "test_abrupt_endings"],
    ),
    "5b peer named by getpeername() (the bug fixed in 7680574)": (
        "server/_services.py",
        '        if self.peer == "?":',
        "        if True:",
        [TCP + "test_abrupt_endings"],
    ),
    "6 line codec never checks the length of an unfinished line": (
        "framing/codecs.py",
        "            if len(buffer) > self.max_line_length + 1:",
        "            if False:",
        [
            TCP + "test_oversize_line_and_garbage",
            FUZZ + "test_arbitrary_bytes_any_split_only_documented_errors",
        ],
    ),
    "6b u32 codec trusts any length prefix": (
        "framing/codecs.py",
        "        if length > self.max_frame_size:",
        "        if False:",
        [TCP + "test_oversize_frame_header_and_garbage"],
    ),
    "7 udp server leaves an empty datagram unanswered": (
        "server/_engine.py",
        "            if reply is not None:",
        "            if reply:",
        [UDP + "test_udp_largest_empty_flood_then_legitimate_client"],
    ),
    "8 no drain: shutdown aborts in-flight exchanges": (
        "server/_engine.py",
        "deadline = loop.time() + self.limits.drain_timeout",
        "deadline = loop.time()",
        [
            LIM + "test_sigterm_drains_in_flight_then_restart_binds",
            LIM + "test_sigterm_drain_timeout_and_framed_restart",
        ],
    ),
    "8b no SO_REUSEADDR": (
        "_sockets.py",
        "        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)",
        "        pass",
        [LIM + "test_sigterm_drain_timeout_and_framed_restart"],
    ),
    "9 EMFILE: retry accept at once (spin)": (
        "server/_engine.py",
        "                    self._stop_accepting()\n                    self._loop.call_later(",
        "                    return\n                    self._loop.call_later(",
        [LIM + "test_out_of_descriptors_backs_off_and_recovers"],
    ),
    "2r relay: a full sink does not pause the other side (no backpressure)": (
        "relay/_link.py",
        "        if source is not None and not self.finished:\n"
        "            with contextlib.suppress(RuntimeError, AttributeError):\n"
        "                source.pause_reading()",
        "        if False:\n            pass",
        [
            RELAY + "test_relay_slow_reader_memory_bounded",
            RELAY + "test_relay_client_that_never_reads_is_released",
        ],
    ),
    "5r relay: an ended link leaves the other side open (descriptor leak)": (
        "relay/_link.py",
        "        for side in self.sides:\n            for transport in",
        "        for side in self.sides[:1]:\n            for transport in",
        [
            RELAY + "test_relay_abrupt_endings",
            RELAY + "test_relay_flood_of_5000_then_serves_at_once",
        ],
    ),
    "9b a write stall does not count as idle": (
        "server/_engine.py",
        "                conn.idle_ticks += 1\n",
        "                conn.idle_ticks += 0 if conn.writing_paused else 1\n",
        [LIM + "test_client_that_never_reads_is_released"],
    ),
    "9c listen backlog 5": (
        "_sockets.py",
        "    return max(128, socket.SOMAXCONN)",
        "    return 5",
        [LIM + "test_burst_of_a_thousand_connects"],
    ),
    "10 codec settings raise ValueError (the bug fixed in 5e4a40c)": (
        "framing/__init__.py",
        "    except ValueError as exc:",
        "    except ZeroDivisionError as exc:",
        [FUZZ + "test_codec_by_name_takes_any_setting_or_says_why"],
    ),
    "10b port parser accepts any number": (
        "address.py",
        "    if not 0 <= value <= 65535:",
        "    if False:",
        [FUZZ + "test_port_parser_parses_or_raises_address_error"],
    ),
    "10c huge backlog overflows listen() (the bug fixed in 8522aca)": (
        "_sockets.py",
        "        return min(max(0, requested), _MAX_BACKLOG)",
        "        return max(0, requested)",
        [FUZZ + "test_any_backlog_setting_is_one_listen_accepts"],
    ),
}


def run(name: str) -> bool:
    """Apply one mutant to a copy of src/ and run its checks; True if they all failed."""
    file, old, new, checks = MUTANTS[name]
    with tempfile.TemporaryDirectory(prefix="socketkit-mutant-") as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
        target = src / "socketkit" / file
        text = target.read_text()
        assert text.count(old) == 1, f"{name}: the text to mutate is not in {file} exactly once"
        target.write_text(text.replace(old, new))
        env = {**os.environ, "PYTHONPATH": str(src)}
        survived = []
        for check in checks:
            cmd = [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-x",
                "-m",
                "fault",
                "-p",
                "no:cacheprovider",
                check,
            ]
            rc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=300).returncode
            if rc == 0:
                survived.append(check)
    print(
        f"{'killed  ' if not survived else 'SURVIVED'} {name}"
        + (f": {survived}" if survived else "")
    )
    return not survived


def main(names: list[str]) -> int:
    results = [run(n) for n in (names or list(MUTANTS))]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
