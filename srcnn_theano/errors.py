"""The one exception type that the command line prints as a one-line error."""


class SRCNNError(Exception):
    """A problem with the user's input (file, option, weights), not a bug.

    The command-line entry points catch it and print ``error: <message>``
    on one line with exit status 2; library callers get it as an exception.
    """
