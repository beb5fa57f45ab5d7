"""Run a command line that stops at a barrier at one function, so that a race happens every time.

Used by tests/test_races.py as a separate process::

    python tests/racing.py BARRIER MODULE:NAME before|after -- -m srcnn_theano upscale ...
    python tests/racing.py BARRIER MODULE:NAME before|after -- train.py --resume RUN

``MODULE:NAME`` is replaced by a wrapper that, the first time it is called,
creates ``BARRIER/ready.<pid>`` and waits until ``BARRIER/go`` exists:
``before`` the call (``srcnn_theano.files:publish``: the temporary file is
complete, the output not yet published), or ``after`` it (for a context
manager such as ``srcnn_theano.training.checkpoint:hold_folder``: once it
is entered, that is once the lock is held). The test starts its processes,
waits for their ``ready`` files, and creates ``go``. A process that waits
more than a minute exits with status 99.
"""
import functools
import importlib
import os
import runpy
import sys
import time

WAIT_S = 60


def wait_at(barrier):
    open(os.path.join(barrier, f"ready.{os.getpid()}"), "w").close()
    deadline = time.monotonic() + WAIT_S
    while not os.path.exists(os.path.join(barrier, "go")):
        if time.monotonic() > deadline:
            print(f"racing: no {barrier}/go after {WAIT_S} s", file=sys.stderr)
            os._exit(99)
        time.sleep(0.01)


class _EnterThenWait:
    def __init__(self, manager, wait):
        self.manager, self.wait = manager, wait

    def __enter__(self):
        value = self.manager.__enter__()
        self.wait()
        return value

    def __exit__(self, *exc):
        return self.manager.__exit__(*exc)


def install(target, when, barrier):
    """Replace ``MODULE:NAME`` by the waiting wrapper."""
    module, _, name = target.partition(":")
    owner = importlib.import_module(module)
    original = getattr(owner, name)
    waited = []

    def wait():
        if not waited:
            waited.append(True)
            wait_at(barrier)

    @functools.wraps(original)
    def hooked(*args, **kwargs):
        if when == "before":
            wait()
            return original(*args, **kwargs)
        result = original(*args, **kwargs)
        if hasattr(result, "__enter__"):
            return _EnterThenWait(result, wait)
        wait()
        return result

    setattr(owner, name, hooked)


def main(argv):
    barrier, target, when, dash, *command = argv
    assert dash == "--" and when in ("before", "after"), argv
    install(target, when, barrier)
    if command[0] == "-m":
        sys.argv = [command[1]] + command[2:]
        runpy.run_module(command[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = command
        runpy.run_path(command[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
