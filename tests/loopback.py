"""Helpers shared by the tests that start local processes (gloo groups, fairseq command lines)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

FAIRSEQ_BIN = Path(sys.executable).parent
PLUGINS = Path(__file__).resolve().parent.parent / "plugins"


def free_port() -> int:
    """A free TCP port on the loopback interface, for a test's process group rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_fairseq(tool: str, *args: str, user_dir: bool = True) -> subprocess.CompletedProcess:
    """Run a fairseq command-line tool of this environment, with graftkit's plugins as ``--user-dir``."""
    cmd = [str(FAIRSEQ_BIN / tool), *args] + (["--user-dir", str(PLUGINS)] if user_dir else [])
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
