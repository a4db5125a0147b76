"""Small runtime helpers shared by the experiments and benchmarks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def single_thread() -> Iterator[None]:
    """Run with one intra-op thread, restoring the caller's setting afterwards.

    The demo's models are tiny: one thread is as fast as two and immune to oversubscription when the
    cores are shared.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
