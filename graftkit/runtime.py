"""Small runtime helpers shared by the experiments, commands and benchmarks."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

# glibc mallopt() parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


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


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse rather than give it back to the OS at once.

    By default glibc returns large freed blocks to the OS (unmapping them, or trimming the heap top) and the next
    tensor of that size is page-faulted in again; IRN's dense blocks allocate hundreds of 9-36 MB feature maps
    per 512² image. Measured (×4 IRN downscale + upscale at 512², 1 thread): 6.5 s → 5.2 s. The setting is
    process-wide, so only command-line entry points call it. Returns False where the C library is not glibc.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    # blocks up to 32 MiB (glibc's maximum) from the heap, and never trim the heap top
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def physical_memory() -> int | None:
    """Bytes of RAM of this machine, the most any allocation can get; None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name
        return None
