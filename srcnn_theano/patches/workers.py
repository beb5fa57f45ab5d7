"""Worker processes for patch generation: tasks run in order, a bounded number in flight.

Nothing large travels through the pipes: a task names its images or its
block, a result is a few numbers per image; the patches go through files
(:mod:`srcnn_theano.patches.buckets`).
"""
import collections
import sys

_CONTEXT = {}  # in a worker process: what ordered_map's caller handed it


def _init(context):
    # Ctrl-C reaches the whole process group: the parent alone handles it (and stops us).
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _CONTEXT["value"] = context


def _call(fn, task):
    return fn(_CONTEXT["value"], task)


def _context():
    # fork: the workers start in milliseconds with everything imported (no Theano
    # here, and no HDF5 file is open); spawn where fork is not the safe default.
    import multiprocessing

    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def shared_counters(n):
    """``n`` int64 counters (zeros) shared with the workers of :func:`ordered_map`, with a lock
    (``get_lock()``)."""
    return _context().Array("q", n)


def ordered_map(fn, tasks, context, workers, in_flight=2):
    """Yield ``fn(context, task)`` for every task, in the tasks' order.

    Parameters
    ----------
    fn : callable
        A module-level function (the spawn start method pickles it).
    tasks : sequence
    context : object
        Handed once to each worker process (inherited with fork, pickled with
        spawn), then to every call of ``fn`` in that process.
    workers : int
        Processes (1: every call in this process, no pool).
    in_flight : int
        Tasks submitted per worker at most, so that results (and the work
        ahead) stay bounded however many tasks there are.

    When the caller stops early, by an error or ``KeyboardInterrupt``, the
    tasks not started are cancelled and the workers stopped before the
    generator returns.
    """
    if workers == 1:
        for task in tasks:
            yield fn(context, task)
        return
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(max_workers=workers, mp_context=_context(), initializer=_init,
                               initargs=(context,))
    pending = collections.deque()
    todo = iter(tasks)
    try:
        for task in todo:
            pending.append(pool.submit(_call, fn, task))
            if len(pending) >= in_flight * workers:
                break
        while pending:
            result = pending.popleft().result()
            for task in todo:
                pending.append(pool.submit(_call, fn, task))
                break
            yield result
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
