"""Files the project writes, and how it identifies files it reads.

One home for these ideas:

* **Atomic writes.** Every output (images, weights, checkpoints, logs, HDF5
  patch files, tables) is written to a temporary file in the destination
  folder, named ``.tmp-<final name>-<pid>-<random><suffix>``, and given its
  final name (:func:`publish`) only once complete, with the mode a plainly
  created file would get (0666 less the umask; ``mkstemp`` uses 0600). On
  any error or interruption the temporary file is removed, so a final name
  never holds a partial file. A process killed outright (``kill -9``, the
  OOM killer) cannot clean up: the next write of the same output removes
  the temporary files whose process is gone, and says so on stderr
  (:func:`remove_stale_temps`).
* **Exclusive publication.** An output that must not replace a file
  (every output named by the user, without ``--force``) is published by a
  step that fails if the name exists: a hard link of the finished temporary
  file to the final name. Of two processes racing for one name exactly one
  wins; the other gets :class:`~srcnn_theano.errors.OutputExistsError` and
  its temporary file is removed. With ``replace`` the temporary file is
  renamed over the name (``os.replace``): the last complete write wins, and
  no reader ever sees a torn file. On a filesystem without hard links the
  exclusive step is an exclusive create of the final name
  (``O_CREAT | O_EXCL``), then the rename onto it (docs/concurrent-runs.md).
* **Outputs never replace inputs.** :func:`check_outputs` refuses an output
  that is one of the inputs (the same path, a hard or symbolic link to it),
  and any other existing output unless the user asked to replace it
  (``--force``): the one rule of every command. It runs before the work,
  to fail fast; the guard against another process is the exclusive
  publication.
* **One process per folder.** :func:`hold_folder` takes an exclusive lock
  (``flock``) on ``<folder>/.lock`` for as long as a process works in a
  folder that only one may write at a time (a training's run folder).
* **File hashes.** :func:`sha256_file` identifies training images, patch
  files and initial weights in provenance records.
* **The cache folder.** :func:`cache_dir` is where the project keeps what
  it works out once per machine (the BLAS choice, compiled functions, the
  image loops' library, the GPU environment's library links):
  ``~/.cache/srcnn_theano``, ``$SRCNN_CACHE_DIR`` or
  ``$XDG_CACHE_HOME/srcnn_theano`` when set. What runs code when loaded (a
  pickle, a shared library) is kept in a :func:`private_folder` and read
  only where :func:`is_private`; :func:`remove_stale` drops the entries a
  newer one replaces.
"""
import contextlib
import errno
import fcntl
import hashlib
import os
import re
import sys
import tempfile

from srcnn_theano.errors import OutputExistsError, SRCNNError

TEMP_PREFIX = ".tmp-"
LOCK_NAME = ".lock"   #: the lock file :func:`hold_folder` keeps in a folder
#: ``os.link`` errors that mean the filesystem has no hard links (FAT, some network and FUSE
#: filesystems): :func:`publish` falls back to an exclusive create of the final name.
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.ENOSYS,
                  errno.EMLINK}


def cache_dir(*parts):
    """The project's cache folder, or a path inside it (not created here).

    ``$SRCNN_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/srcnn_theano``,
    else ``~/.cache/srcnn_theano``; ``parts`` are joined onto it.
    """
    root = os.environ.get("SRCNN_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "srcnn_theano")
    return os.path.join(root, *parts)


def is_private(st):
    """True when a stat result is ours and not writable by group or others."""
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def private_folder(folder):
    """Create ``folder`` (mode 0700) if missing; True when it is private (:func:`is_private`)."""
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        return is_private(os.stat(folder))
    except OSError:
        return False


def remove_stale(folder, prefix, keep):
    """Remove the files of ``folder`` named ``prefix*`` except ``keep`` (a name), quietly."""
    for name in os.listdir(folder):
        if name.startswith(prefix) and name != keep:
            try:
                os.remove(os.path.join(folder, name))
            except OSError:
                pass


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


def publish(tmp, path, replace=False):
    """Give the complete file ``tmp`` the name ``path``; ``tmp`` is gone afterwards, whatever happens.

    Parameters
    ----------
    tmp : str
        The finished file, in ``path``'s folder (a name from :func:`scratch_file`).
    path : str
        Its final name.
    replace : bool
        False: exclusive. ``os.link(tmp, path)`` fails if ``path`` exists, so
        of two processes publishing one name exactly one succeeds; then
        ``tmp`` is unlinked. On a filesystem without hard links: an exclusive
        create of ``path`` (``O_CREAT | O_EXCL``), which exactly one process
        wins, then ``os.replace(tmp, path)`` onto the empty file it created
        (an empty ``path`` is visible between the two calls). True:
        ``os.replace(tmp, path)``, the last complete write wins.

    Raises
    ------
    OutputExistsError
        ``replace`` is False and ``path`` exists (another process wrote it
        after this one checked; :func:`check_outputs`). Nothing is replaced.
    SRCNNError
        Publishing failed (``OSError``), naming ``path``.
    """
    try:
        if replace:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError as e:
            if e.errno not in _NO_HARD_LINKS:
                raise
            _create_then_replace(tmp, path)
            return
        os.unlink(tmp)
    except FileExistsError:
        raise OutputExistsError(f"{path} was written by another process meanwhile; "
                                "nothing replaced") from None
    except OSError as e:
        raise SRCNNError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _create_then_replace(tmp, path):
    """The exclusive step without hard links: create ``path`` (``FileExistsError`` if it exists),
    then rename ``tmp`` onto it; the empty file is removed again if the rename fails."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, new_file_mode())
    try:
        mine = os.fstat(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            st = os.stat(path)
            if (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
                os.unlink(path)
        raise


@contextlib.contextmanager
def atomic_output(path, suffix="", replace=True):
    """Yield a temporary path next to ``path``; it becomes ``path`` when the block succeeds.

    Parameters
    ----------
    path : str
        Final file name. Its folder must exist.
    suffix : str
        Ending of the temporary name (writers that pick a format from the
        extension, such as Pillow or h5py, need the real one).
    replace : bool
        How the file is published (:func:`publish`): True, the last complete
        write wins (files this process owns: caches, the files of a run
        folder it holds); False, exclusively (an output the user named,
        without ``--force``).

    Raises
    ------
    OutputExistsError
        ``replace`` is False and ``path`` appeared meanwhile.
    SRCNNError
        The folder is missing or not writable, or writing failed (``OSError``).
        The temporary file is removed on any error or interruption.
    """
    with scratch_file(path, suffix) as tmp:
        try:
            yield tmp
            os.chmod(tmp, new_file_mode())
        except OSError as e:
            raise SRCNNError(f"cannot write {path}: {e.strerror or e}") from None
        publish(tmp, path, replace)


def atomic_write_bytes(path, data, replace=True):
    """Write ``data`` (bytes) to ``path`` atomically (:func:`atomic_output`, ``replace`` as there)."""
    with atomic_output(path, replace=replace) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


_held = {}   # (st_dev, st_ino) of a folder this process holds -> [lock file descriptor, depth]


@contextlib.contextmanager
def hold_folder(folder, what="folder"):
    """Hold ``folder`` for this process while the block runs: no other process may hold it.

    An exclusive ``flock`` on ``<folder>/.lock`` (created if missing, never
    removed), which also holds this process's pid. The kernel releases it
    when the block ends or the process dies, however (``kill -9`` too), so
    a lock is never stale. Re-entrant: a block inside another for the same
    folder in the same process holds it already. Forked children that have
    not called ``exec`` share the lock while they live.

    Parameters
    ----------
    folder : str
        An existing folder.
    what : str
        What the folder is, for the message (``"run folder"``).

    Raises
    ------
    SRCNNError
        Another process holds the folder (the message names the folder and
        that process's pid), or the lock file cannot be opened.
    """
    key = _identity(folder)
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    lock = os.path.join(folder, LOCK_NAME)
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, new_file_mode())
    except OSError as e:
        raise SRCNNError(f"cannot lock {what} {folder}: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = _read_pid(fd)
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise SRCNNError(f"cannot lock {what} {folder}: {e.strerror or e}") from None
        raise SRCNNError(f"{what} {folder} is in use by another process "
                         f"(pid {holder or 'unknown'}); nothing written") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[key] = [fd, 1]
        yield
    finally:
        _held.pop(key, None)
        os.close(fd)   # releases the lock


def _read_pid(fd):
    """The pid a lock file holds, or None (its holder has not written it yet)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


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
