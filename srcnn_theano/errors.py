"""The one exception type users see.

:class:`SRCNNError` is a problem with the user's input (file, option,
weights), not a bug. Library callers get it as an exception; every command
line prints it as ``error: <message>`` on one line and exits with
``exit_status`` (:func:`srcnn_theano.commandline.run_command`). Messages
name the file they are about.
"""


class SRCNNError(Exception):
    """A problem with the user's input; ``exit_status`` is what a command line exits with."""

    exit_status = 2


class OutputExistsError(SRCNNError):
    """An output's name was taken by another process between the check and the publication.

    Nothing was replaced; the temporary file is removed
    (:func:`srcnn_theano.files.publish`).
    """
