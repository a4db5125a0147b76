import ctypes
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from graftkit.runtime import single_thread


def test_single_thread_restores_the_callers_setting_even_on_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with single_thread():
            assert torch.get_num_threads() == 1
            raise RuntimeError
    assert torch.get_num_threads() == before


FREED_BYTES = textwrap.dedent("""
    import ctypes, sys, torch
    from graftkit.runtime import keep_freed_memory
    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                    "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    if sys.argv[1] == "keep":
        assert keep_freed_memory()
    block = torch.ones(4 << 20)  # 16 MiB, above glibc's default mmap threshold
    del block
    print(libc.mallinfo2().fordblks)  # free bytes kept in the heap
""")


def _has_mallinfo2() -> bool:
    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")  # glibc >= 2.33
    except OSError:
        return False


@pytest.mark.skipif(not _has_mallinfo2(), reason="needs glibc >= 2.33 (mallinfo2)")
def test_keep_freed_memory_keeps_a_freed_feature_map_for_reuse():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}  # glibc's defaults
    kept = {mode: int(subprocess.run([sys.executable, "-c", FREED_BYTES, mode], env=env, capture_output=True,
                                     text=True, check=True).stdout) for mode in ("default", "keep")}
    assert kept["default"] < 16 << 20 <= kept["keep"], kept
