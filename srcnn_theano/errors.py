"""The one exception type users see, and the one way command lines report it.

:class:`SRCNNError` is a problem with the user's input (file, option,
weights), not a bug. Every command line (``python -m srcnn_theano``,
``train.py``, ``data_prep/generate_h5.py``) parses its arguments with
:class:`ArgumentParser` and runs through :func:`run_command`, so that a bad
option or input prints ``error: ...`` on one line with exit status 2 (3 for
a diverged training), and Ctrl-C exits with 130, never with a traceback.
"""
import argparse
import sys


class SRCNNError(Exception):
    """A problem with the user's input; ``exit_status`` is what a command line exits with."""

    exit_status = 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports usage mistakes as a single ``error:`` line (status 2)."""

    def error(self, message):
        self.exit(2, f"error: {message} (see --help)\n")


def run_command(main, argv=None):
    """Call ``main(argv)`` and turn user errors into one line on stderr; return the exit status.

    Parameters
    ----------
    main : callable
        ``main(argv) -> int or None`` (None means 0). It parses ``argv``
        with an :class:`ArgumentParser` and does the work.
    argv : list of str or None
        Arguments (``None``: ``sys.argv[1:]``).

    Returns
    -------
    int
        ``main``'s status; ``SRCNNError.exit_status`` after printing
        ``error: <message>``; 130 after a ``KeyboardInterrupt`` (its message,
        or ``interrupted``); argparse's own status for ``--help`` and usage errors.
    """
    try:
        return main(argv) or 0
    except SRCNNError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt as e:
        print(str(e) or "interrupted", file=sys.stderr)
        return 130
