"""One whole command, timed: wall seconds and peak RSS (shared by the benchmark scripts)."""
import os
import subprocess
import time


def run_timed(cmd, cwd=None, env=None):
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
