"""``socketkit demo``: the lecture's TCP and UDP exchanges on loopback."""

from __future__ import annotations

import argparse

from ..lecture import run_demo
from ._common import Env, add_common_options

__all__ = ["add_parsers"]

#: Each exchange is headed by the commands that run it by hand.
TITLES = ("TCP: tcp-server --once  <->  tcp-client", "UDP: udp-server --once  <->  udp-client")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser(
        "demo",
        help="run the lecture's TCP and UDP exchanges end to end on loopback",
        description="Start each lecture server on a free loopback port, run its client "
        "against it, and show both sides' output, labelled.",
    )
    add_common_options(demo)
    demo.set_defaults(run=run)


def run(_args: argparse.Namespace, env: Env) -> int:
    return run_demo(env.stdout, titles=TITLES)
