"""The one way command lines run: argument parsing and error reporting for all three of them.

``python -m srcnn_theano`` (:mod:`srcnn_theano.cli`), ``train.py`` and
``data_prep/generate_h5.py`` parse their arguments with :class:`ArgumentParser`
and run through :func:`run_command`, so that a bad option or input prints
``error: ...`` on one line with exit status 2 (3 for a diverged training),
and Ctrl-C exits with 130, never with a traceback. Their ``__main__`` ends with
:func:`exit_process`.
"""
import argparse
import atexit
import logging
import os
import sys

from srcnn_theano.errors import SRCNNError


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports usage mistakes as a single ``error:`` line (status 2)."""

    def error(self, message):
        self.exit(2, f"error: {message} (see --help)\n")


class _PixelLimit(argparse.Action):
    def __call__(self, parser, namespace, value, option_string=None):
        from srcnn_theano.image.io import set_pixel_limit

        set_pixel_limit(value)
        setattr(namespace, self.dest, value)


def add_pixel_limit_option(parser):
    """``--max-pixels N``: the largest image (width x height) read; see :mod:`srcnn_theano.image.io`."""
    from srcnn_theano.image.io import DEFAULT_PIXEL_LIMIT

    parser.add_argument("--max-pixels", type=int, action=_PixelLimit, metavar="N",
                        help=f"refuse images over N pixels (default {DEFAULT_PIXEL_LIMIT:,}: "
                             "decoding takes about 4 bytes a pixel and more)")
    return parser


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


def exit_process(status):
    """End a command-line process with ``status`` without the interpreter's teardown.

    Freeing every module and object of a process that has loaded Theano takes
    0.3-0.4 s, a fifth of upscaling one photo. By the time a command returns
    its files are written, closed and renamed into place, so this runs the
    ``atexit`` handlers, flushes logging and the standard streams, and leaves
    with ``os._exit``. Only for a command line's ``__main__``, never inside a
    library call.
    """
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):   # a closed pipe (| head): nothing more to say
            pass
    os._exit(status)
