"""Helpers shared by the tests that start local processes (gloo groups, fairseq command lines)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

FAIRSEQ_BIN = Path(sys.executable).parent
PLUGINS = Path(__file__).resolve().parent.parent / "plugins"


def free_port() -> int:
    """A free TCP port on the loopback interface, for a test's process group rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def gloo_group(rank: int, world: int, port: int) -> Iterator[None]:
    """Make this spawned test worker ``rank`` of a ``world``-process gloo group on the loopback interface.

    When the body succeeds, the worker process ends right here with ``os._exit(0)``: torch's teardown of a
    gloo group that a DDP reducer still references can deadlock on the GIL (seen in CI: ~ProcessGroupGloo
    joining its worker thread while that thread waits for the GIL to free a finished work), which hung the
    test. An exception propagates, so ``mp.spawn`` reports it; collectives time out after two minutes.
    """
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)  # the ranks share a small machine: no thread oversubscription
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(minutes=2))
    yield
    dist.barrier()  # both ranks are done (and their results written) before either leaves
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_fairseq(tool: str, *args: str, user_dir: bool = True) -> subprocess.CompletedProcess:
    """Run a fairseq command-line tool of this environment, with graftkit's plugins as ``--user-dir``."""
    cmd = [str(FAIRSEQ_BIN / tool), *args] + (["--user-dir", str(PLUGINS)] if user_dir else [])
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def run_fairseq_ok(tool: str, *args: str, user_dir: bool = True) -> subprocess.CompletedProcess:
    """:func:`run_fairseq`, asserting it succeeded (the end of its stderr is the failure message)."""
    done = run_fairseq(tool, *args, user_dir=user_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def run_fairseq_train_on_two_ranks(*args: str, timeout: float = 300) -> list[str]:
    """fairseq-train's own distributed training: one process per rank of a 2-rank gloo group on the loopback
    interface, ``legacy_ddp`` (fairseq's CPU-capable DDP), graftkit's plugins as ``--user-dir``. Asserts both
    ranks finished; returns their logs (stdout and stderr). fairseq all-reduces every update's gradient norm
    and stops when the ranks disagree, so finished updates mean the ranks stayed in sync."""
    argv = [str(FAIRSEQ_BIN / "fairseq-train"), *args, "--user-dir", str(PLUGINS), "--distributed-world-size", "2",
            "--distributed-init-method", f"tcp://127.0.0.1:{free_port()}", "--distributed-backend", "gloo",
            "--distributed-no-spawn", "--ddp-backend", "legacy_ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    procs = [subprocess.Popen(argv + ["--distributed-rank", str(rank)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for rank in (0, 1)]
    logs = [p.communicate(timeout=timeout)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert "distributed init (rank 1)" in logs[0] + logs[1]
    return logs


def run_script_on_two_ranks(script: Path, *args: str, timeout: float = 300) -> None:
    """Run a Python script as 2 local ranks under ``torch.distributed.run`` (the launcher HF's ``Trainer``
    and accelerate expect), importing graftkit from this checkout; asserts it succeeded."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(PLUGINS.parent), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(script), *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
