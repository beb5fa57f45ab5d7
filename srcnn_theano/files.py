"""Files the project writes, and how it identifies files it reads.

One home for two ideas:

* **Atomic writes.** Every output (images, weights, checkpoints, logs, HDF5
  patch files, tables) is written to a temporary file in the destination
  folder, named ``.tmp-<final name>-<random><suffix>``, and renamed onto its
  final name (``os.replace``) only once complete, with the mode a plainly
  created file would get (0666 less the umask; ``mkstemp`` uses 0600). On
  any error or interruption the temporary file is removed, so a final name
  never holds a partial file.
* **File hashes.** :func:`sha256_file` identifies training images, patch
  files and initial weights in provenance records.
"""
import contextlib
import hashlib
import os
import tempfile

from srcnn_theano.errors import SRCNNError

TEMP_PREFIX = ".tmp-"


def new_file_mode():
    """Permissions of a newly created file under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def scratch_file(path, suffix=""):
    """Yield an empty temporary file next to ``path``, removed when the block ends (whatever happens).

    Named ``.tmp-<basename of path>-<random><suffix>``; :class:`SRCNNError`
    if the folder is missing or not writable.
    """
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.path.basename(path)}-", suffix=suffix,
                                   dir=folder)
    except OSError as e:
        raise SRCNNError(f"cannot write {path}: {e.strerror or e}") from None
    os.close(fd)
    try:
        yield tmp
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_output(path, suffix=""):
    """Yield a temporary path next to ``path``; it becomes ``path`` when the block succeeds.

    Parameters
    ----------
    path : str
        Final file name. Its folder must exist.
    suffix : str
        Ending of the temporary name (writers that pick a format from the
        extension, such as Pillow or h5py, need the real one).

    Raises
    ------
    SRCNNError
        The folder is missing or not writable, or writing failed (``OSError``).
        The temporary file is removed on any error or interruption.
    """
    with scratch_file(path, suffix) as tmp:
        try:
            yield tmp
            os.chmod(tmp, new_file_mode())
            os.replace(tmp, path)
        except OSError as e:
            raise SRCNNError(f"cannot write {path}: {e.strerror or e}") from None


def atomic_write_bytes(path, data):
    """Write ``data`` (bytes) to ``path`` atomically (:func:`atomic_output`)."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def sha256_file(path):
    """Hex SHA-256 of a file's bytes; :class:`SRCNNError` naming the file if it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as e:
        raise SRCNNError(f"cannot read {path}: {e.strerror or e}") from None
    return digest.hexdigest()
