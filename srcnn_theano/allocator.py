"""glibc's malloc tuned to keep large freed blocks in the process (no Theano, no numpy).

Theano allocates and frees arrays of megabytes at every call (im2col
buffers, activations), and patch cutting dozens of a few hundred KB per
image; by default glibc maps each from the kernel and returns it, and the
page faults of fresh memory made up a fifth of a training step and a third
of cutting. :func:`keep_freed_memory` raises malloc's mmap and trim
thresholds so that they are recycled inside the process. Memory the process
freed stays counted in its RSS (the peak is unchanged).
``SRCNN_THEANO_MALLOPT=0`` in the environment turns it off.
"""
import ctypes
import os


def keep_freed_memory(threshold=1 << 30):
    """Have glibc malloc serve and keep large blocks on its heap (see the module docstring).
    Returns True when applied; False elsewhere (not glibc, or
    ``SRCNN_THEANO_MALLOPT=0``)."""
    if os.environ.get("SRCNN_THEANO_MALLOPT", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    # Older glibc caps the mmap threshold at 32 MiB (64-bit): fall back to it.
    ok = any(mallopt(m_mmap_threshold, int(t)) == 1 for t in (threshold, 32 << 20))
    return bool(mallopt(m_trim_threshold, int(threshold) * 2) == 1 and ok)
