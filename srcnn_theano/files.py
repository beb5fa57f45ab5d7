"""Files the project writes, and how it identifies files it reads.

One home for three ideas:

* **Atomic writes.** Every output (images, weights, checkpoints, logs, HDF5
  patch files, tables) is written to a temporary file in the destination
  folder, named ``.tmp-<final name>-<pid>-<random><suffix>``, and renamed
  onto its final name (``os.replace``) only once complete, with the mode a
  plainly created file would get (0666 less the umask; ``mkstemp`` uses
  0600). On any error or interruption the temporary file is removed, so a
  final name never holds a partial file. A process killed outright
  (``kill -9``, the OOM killer) cannot clean up: the next write of the same
  output removes the temporary files whose process is gone, and says so on
  stderr (:func:`remove_stale_temps`).
* **Outputs never replace inputs.** :func:`check_outputs` refuses an output
  that is one of the inputs (the same path, a hard or symbolic link to it),
  and any other existing output unless the user asked to replace it
  (``--force``): the one rule of every command.
* **File hashes.** :func:`sha256_file` identifies training images, patch
  files and initial weights in provenance records.
"""
import contextlib
import hashlib
import os
import re
import sys
import tempfile

from srcnn_theano.errors import SRCNNError

TEMP_PREFIX = ".tmp-"


def new_file_mode():
    """Permissions of a newly created file under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _temp_prefix(path):
    return f"{TEMP_PREFIX}{os.path.basename(path)}-"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True   # another user's process
    return True


def remove_stale_temps(path):
    """Remove the temporary files a killed process left for ``path``; return their names.

    Only files named ``.tmp-<name of path>-<pid>-...`` whose process no
    longer exists are removed (a live writer's files are never touched);
    each removal is reported on stderr.
    """
    folder, prefix = os.path.dirname(os.path.abspath(path)), _temp_prefix(path)
    pattern = re.compile(re.escape(prefix) + r"(\d+)-")
    removed = []
    try:
        names = [n for n in os.listdir(folder) if n.startswith(prefix)]
    except OSError:
        return removed
    for name in names:
        m = pattern.match(name)
        if m is None or _alive(int(m.group(1))):
            continue
        try:
            os.remove(os.path.join(folder, name))
        except OSError:
            continue
        removed.append(name)
        print(f"note: removed {os.path.join(folder, name)}, left by a run that was killed",
              file=sys.stderr)
    return removed


@contextlib.contextmanager
def scratch_file(path, suffix=""):
    """Yield an empty temporary file next to ``path``, removed when the block ends (whatever happens).

    Named ``.tmp-<basename of path>-<pid>-<random><suffix>``; stale ones of
    killed runs are removed first (:func:`remove_stale_temps`).
    :class:`SRCNNError` if the folder is missing or not writable.
    """
    folder = os.path.dirname(os.path.abspath(path))
    remove_stale_temps(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{_temp_prefix(path)}{os.getpid()}-", suffix=suffix,
                                   dir=folder)
    except OSError as e:
        raise SRCNNError(f"cannot write {path}: {e.strerror or e}") from None
    os.close(fd)
    try:
        yield tmp
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def same_file(a, b):
    """True when ``a`` and ``b`` are one file or folder (a symbolic or hard link counts)."""
    ia = _identity(a)
    return ia is not None and ia == _identity(b)


def _identity(path):
    """``(device, inode)`` of the file ``path`` resolves to, or None if there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def check_outputs(outputs, inputs=(), force=False):
    """Apply the project's one rule for existing outputs, before any work is done.

    Parameters
    ----------
    outputs : iterable of str
        Files the command will write.
    inputs : iterable of str
        Files it reads: no output may be one of them.
    force : bool
        Replace existing outputs (never an input).

    Raises
    ------
    SRCNNError
        An output that is an input (even with ``force``); an existing output
        without ``force``; an output that is a folder; an output folder that
        is missing or not writable.
    """
    known = {}
    for src in inputs:
        ident = _identity(src)
        if ident is not None:
            known[ident] = src
    folders = set()
    for out in outputs:
        folders.add(os.path.dirname(os.path.abspath(out)))
        if not os.path.lexists(out):
            continue
        src = known.get(_identity(out))
        if src is not None:
            raise SRCNNError(f"output {out} is the input {src}: refusing to overwrite it "
                             "(choose another output)")
        if os.path.isdir(out):
            raise SRCNNError(f"output is a folder, not a file: {out}")
        if not force:
            raise SRCNNError(f"output already exists: {out} (use --force to replace it)")
    for folder in sorted(folders):
        check_writable_folder(folder)


def check_writable_folder(folder):
    """:class:`SRCNNError` unless ``folder`` exists and this process may create files in it."""
    if not os.path.isdir(folder):
        raise SRCNNError(f"output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SRCNNError(f"output folder is not writable: {folder}")


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
