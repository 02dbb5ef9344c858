"""Keep the memory an update frees for the next update, instead of giving it back to the kernel.

XLA's CPU runtime allocates each call's temporaries with malloc. glibc serves large blocks with
mmap and unmaps them on free, so every call of a jitted step maps its temporaries afresh and the
kernel zero-fills them page by page on first touch. Measured for DACER's frame step
(HalfCheetah-v5, batch 256): 5,680 minor page faults per call, 49.4 ms a call; with freed memory
kept (`mallopt(M_MMAP_MAX, 0)`, so large blocks come from the heap, and a trim threshold of 2 GB,
so the heap keeps them), no faults and 44.4 ms. A fused block (`train.fused_frames`) had already
hidden most of this, since a loop reuses its temporaries across frames.

The price is that a process keeps its peak heap until it exits. It does not always remove every
fault: a block too large for a thread's arena (glibc grows those in 64 MB heaps) is still mapped
afresh (docs/benchmarks.md, "Freed memory kept for reuse"). glibc only; elsewhere, or with
FLOWRL_KEEP_FREED_MEMORY=0, nothing changes.
"""
import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1   # glibc's malloc.h
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2 ** 31 - 1   # bytes: mallopt takes an int


def keep_freed_memory() -> bool:
  """Tell glibc's malloc to keep freed memory for reuse; True if it was told (once per process
  is enough, and calling again is harmless)."""
  if os.environ.get('FLOWRL_KEEP_FREED_MEMORY', '1') == '0' or not sys.platform.startswith('linux'):
    return False
  try:
    mallopt = ctypes.CDLL('libc.so.6').mallopt
  except (OSError, AttributeError):     # not glibc (musl has no mallopt)
    return False
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
