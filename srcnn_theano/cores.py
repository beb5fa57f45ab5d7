"""How many CPU cores this process may use, and how long idle threads spin (no Theano, no numpy)."""
import os

#: Idle-thread spins for commands that run the network beside threads of their own
#: (:func:`short_idle_spin`): OpenBLAS's threads sleep after 2**18 cycles (0.1 ms) instead
#: of 2**28 (0.1 s); OpenMP's (the network's band threads, libgomp) after 20,000 spins
#: instead of 300,000. A spinning thread holds a core that the command's own threads
#: (upscale's colour and bicubic stages, the PSNR table's scorer) need.
IDLE_SPIN = {"OPENBLAS_THREAD_TIMEOUT": "18", "GOMP_SPINCOUNT": "20000"}


def usable_cores():
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def short_idle_spin():
    """Set :data:`IDLE_SPIN` in the environment, where it says nothing else. Read when the
    BLAS and OpenMP libraries load (with the first compiled function): call it on import."""
    for name, value in IDLE_SPIN.items():
        os.environ.setdefault(name, value)
