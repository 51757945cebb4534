"""CPU allocator setting for long inference runs: keep freed memory for reuse (glibc only).

The emulator allocates activations of hundreds of MB per layer. glibc's ``malloc`` serves blocks above
its mmap threshold (at most 32 MB) with fresh ``mmap`` pages and returns them to the kernel on
``free``, so every layer's output is page-faulted and zeroed anew: on this project's CPU machine an
out-of-place add of a 256 MB tensor took 4x an in-place one. :func:`keep_freed_memory` switches glibc to
serve every block from its heap and to keep freed memory there, so later layers and tiles reuse pages
already mapped (docs/performance.md: 6% faster displacement, 10% faster velocities at width 64).

It changes the whole process, and only suits a process that runs same-sized tiles over and over (a
long ``predict_to_file`` run): freed memory is never returned to the kernel, and with every block on
the heap, allocations of changing sizes fragment it, so the resident size can grow well past the
working set. A test session that had called it grew to 22.6 GB and was OOM-killed in a test whose
peak is ~16 GB without it. So neither the library nor the CLI calls it: it is an opt-in for dedicated
inference processes. Results are bit-identical with and without it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

__all__ = ["keep_freed_memory"]

logger = logging.getLogger(__name__)

# mallopt parameters of glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Make glibc malloc keep freed memory for reuse instead of unmapping it (process-wide, opt-in).

    Call it once at the start of a process that only streams tiles of one size (see the module
    docstring for why nothing else should).

    Returns
    -------
    bool
        True if applied; False where the C library is not glibc (nothing changed).

    Examples
    --------
    >>> from emu_backend.inference.cpu_allocator import keep_freed_memory
    >>> keep_freed_memory() in (True, False)
    True
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        gnu_get_libc_version = libc.gnu_get_libc_version  # glibc only
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        logger.info("not glibc: the allocator setting is left as it is")
        return False
    gnu_get_libc_version.restype = ctypes.c_char_p
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    logger.info("glibc %s malloc: large blocks from the heap, freed memory kept for reuse (%s)",
                gnu_get_libc_version().decode(), "applied" if ok else "refused")
    return ok
