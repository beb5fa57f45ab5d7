"""What the speed scripts of ``benchmarks/`` share; each imports it first (``import common``,
its own folder being on ``sys.path`` when run as ``python benchmarks/NAME.py``).

It puts this checkout first on ``sys.path``, so that ``srcnn_theano`` is the one beside the
scripts, installed or not; :func:`child_env` does the same for the processes they time.
"""
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def child_env(**extra):
    """``os.environ`` with this checkout first on ``PYTHONPATH`` (and ``extra`` set)."""
    return dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
                **extra)


def run_timed(cmd, cwd=REPO, env=None):
    """Run ``cmd`` (stdout discarded); return ``(wall seconds, peak RSS in MiB)`` of the process.

    Raises RuntimeError with the end of its stderr when it exits with an error.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}): {err[-2000:]}")
    return wall, usage.ru_maxrss / 1024
