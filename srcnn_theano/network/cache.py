"""What Theano would otherwise redo in every new process, done once and kept on disk.

Most of a fresh ``upscale`` or ``evaluate`` process's start-up would go to
rebuilding things that do not change between processes:

* **Two ops that Theano's module cache would miss.** Theano-PyMC 1.1.2 keys
  each compiled C module by the versions of its ops, but ``DimShuffle``
  (every ``ExternalCOp``) puts Python's ``hash()`` of its C source in its
  version, and ``hash()`` of a string changes in every process
  (``PYTHONHASHSEED``); ``Dot22`` (and ``Dot22Scalar``) have empty
  ``__props__``, which Theano reads as "unversioned". Left alone, both are
  compiled again in every process (about 0.9 s). :func:`fix_cache_keys` gives
  ``ExternalCOp`` a sha256 of its source instead, and the two products a
  props tuple that counts as versioned
  (it compares, hashes and pickles as the empty tuple, so equality of ops
  is unchanged). Applied when this module is imported, before any
  function is compiled.
* **The compiler's ``-march=native`` probe** (three ``g++`` runs and a test
  program, about 0.2 s): :func:`cached_march_flags` keeps Theano's answer
  per machine, keyed by the compiler (path, size, modification time), the
  CPU (``/proc/cpuinfo`` model and flags) and ``gcc__cxxflags``.
* **Optimising and linking the predict graph** (about 0.3 s):
  :func:`load_or_build` pickles the compiled function together with its
  model (so that the model's shared weights are the function's) and a
  later process unpickles it.

Where and how safely: files live in ``functions/`` of the project's cache
folder (:func:`srcnn_theano.files.cache_dir`, next to the BLAS probe's
answer), a folder created with mode 0700. A pickle runs code when loaded, so one is read only from a folder and
file owned by the current user that nobody else can write to. Its name
holds a sha256 of everything the pickled object depends on: the graph's
parameters (architecture, padding, convolution implementation), the
versions of Python, numpy, Theano and Lasagne, the interpreter, Theano's
configuration (its own C-key hash plus device, floatX, mode, optimizer,
linker, OpenMP, compiledir) and the source of every project module that
builds the graph. Anything else (a missing, corrupt or foreign file, a
failed unpickle) means: build as usual and rewrite the file; an
unwritable cache is no error. Older files for the same parameters are
removed when a new one is written. The compiled C modules themselves stay
in Theano's compiledir; a pickled function whose modules were deleted
recompiles them.

``SRCNN_THEANO_FUNCTION_CACHE=0`` turns the pickled functions off (the
key fixes and the ``-march`` cache stay; they change no result). On a GPU
device nothing is pickled.
"""
import hashlib
import json
import os
import pickle
import platform
import sys

from srcnn_theano.backend import lasagne, on_gpu, theano
from srcnn_theano.errors import SRCNNError
from srcnn_theano.files import (atomic_write_bytes, cache_dir, is_private, private_folder,
                                remove_stale)

#: Bumped whenever what is cached, or how its key is made, changes.
CACHE_VERSION = 1
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Project modules whose code shapes a compiled graph (their source is in the key).
GRAPH_SOURCES = ("backend.py", "gpu.py", "network/banded_corr.py", "network/banded_corr.c",
                 "network/fused_corr.py",
                 "network/model.py", "network/functions.py", "network/cache.py")

#: Where the last :func:`load_or_build` got its object: ``'disk'`` or ``'built'``.
last_source = None


# --------------------------------------------------------------------------
# Theano's own module cache: stable keys
# --------------------------------------------------------------------------

class _VersionedEmptyProps(tuple):
    """An empty ``__props__`` that Theano's cache key does not read as "unversioned".

    Equal to, hashed as and pickled as ``()``.
    """

    def __bool__(self):
        return True

    def __reduce__(self):
        return (tuple, ())


def _external_cop_version(self):
    """``ExternalCOp.c_code_cache_version`` with a sha256 of the C source instead of ``hash()``."""
    digest = hashlib.sha256("\0".join(self.func_codes).encode()).hexdigest()
    version = (int(digest[:15], 16),)
    if hasattr(self, "params_type"):
        version += (self.params_type.c_code_cache_version(),)
    return version


def fix_cache_keys():
    """Make ``DimShuffle`` (any ``ExternalCOp``) and ``Dot22`` modules reusable across processes."""
    from theano.graph.op import ExternalCOp
    from theano.tensor import blas as tblas

    ExternalCOp.c_code_cache_version = _external_cop_version
    for op in (tblas.Dot22, tblas.Dot22Scalar):
        if op.__props__ == ():
            op.__props__ = _VersionedEmptyProps()


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------

def functions_dir():
    """``functions/`` in the project's cache folder: this module's files (not created here)."""
    return cache_dir("functions")


def _enabled():
    flag = os.environ.get("SRCNN_THEANO_FUNCTION_CACHE", "1").strip().lower()
    return flag not in ("0", "false", "no", "off") and not on_gpu()


def _read_private(path):
    """The bytes of ``path`` if it and its folder are private to us (else None)."""
    try:
        if not is_private(os.stat(os.path.dirname(path))):
            return None
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        if not is_private(os.fstat(fd)):
            return None
        with os.fdopen(fd, "rb") as f:
            fd = None
            return f.read()
    except OSError:
        return None
    finally:
        if fd is not None:
            os.close(fd)


def _write_private(path, data, stale_prefix=None):
    """Write ``data`` atomically into a 0700 folder; remove ``stale_prefix*`` siblings."""
    try:
        folder = os.path.dirname(path)
        if not private_folder(folder):
            return False
        atomic_write_bytes(path, data)
        if stale_prefix:
            remove_stale(folder, stale_prefix, os.path.basename(path))
        return True
    except (OSError, SRCNNError):
        return False


def _sha256(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _sources_digest():
    h = hashlib.sha256()
    for rel in GRAPH_SOURCES:
        h.update(rel.encode() + b"\0")
        try:
            with open(os.path.join(_PACKAGE, rel), "rb") as f:
                h.update(f.read())
        except OSError:
            h.update(b"missing")
    return h.hexdigest()


def environment_key():
    """Everything besides a graph's own parameters that a pickled function depends on."""
    import numpy as np

    cfg = theano.config
    flags = {name: str(getattr(cfg, name, None)) for name in (
        "device", "floatX", "mode", "optimizer", "optimizer_including", "optimizer_excluding",
        "linker", "openmp", "compiledir", "cxx", "blas__ldflags")}
    return {"cache_version": CACHE_VERSION, "python": [sys.version, sys.executable],
            "platform": [sys.platform, platform.machine()], "numpy": np.__version__,
            "theano": theano.__version__, "lasagne": getattr(lasagne, "__version__", None),
            "theano_config_hash": cfg.get_config_hash(), "flags": flags,
            "sources": _sources_digest()}


def load_or_build(kind, params, build):
    """``build()``'s result, unpickled from the cache when an entry for exactly this key exists.

    Parameters
    ----------
    kind : str
        What is cached (``'predict'``), the file name's first part.
    params : dict
        JSON-able parameters of the graph (architecture, padding, ...).
    build : callable
        Makes the object (e.g. ``(model, compiled function)``) when the cache
        has none; its result is pickled for the next process.
    """
    global last_source
    if not _enabled():
        last_source = "built"
        return build()
    prefix = f"{kind}-{_sha256(params)[:16]}-"
    path = os.path.join(functions_dir(), prefix + _sha256([params, environment_key()]) + ".pkl")
    data = _read_private(path)
    if data is not None:
        try:
            obj = pickle.loads(data)
        except Exception:  # noqa: BLE001 - any failure means: rebuild and rewrite
            obj = None
        if obj is not None:
            last_source = "disk"
            return obj
    obj = build()
    last_source = "built"
    try:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - not picklable here: just don't cache
        return obj
    _write_private(path, data, stale_prefix=prefix)
    return obj


# --------------------------------------------------------------------------
# The compiler's -march probe
# --------------------------------------------------------------------------

def _cpu_identity():
    model, flags = None, None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key == "flags" and flags is None:
                    flags = hashlib.sha256(value.strip().encode()).hexdigest()
                if model is not None and flags is not None:
                    break
    except OSError:
        pass
    return [platform.machine(), model, flags]


def _march_key():
    import shutil

    cxx = theano.config.cxx
    exe = shutil.which(cxx) if cxx else None
    st = os.stat(exe) if exe else None
    return {"cache_version": CACHE_VERSION, "theano": theano.__version__, "cxx": cxx,
            "compiler": [os.path.realpath(exe), st.st_size, st.st_mtime_ns] if st else None,
            "cxxflags": theano.config.gcc__cxxflags, "cpu": _cpu_identity()}


def cached_march_flags():
    """Give Theano its ``-march=native`` equivalent flags from the cache (probe once per machine).

    Returns the flags, or None when there is no compiler or Theano probed already.
    """
    from theano.link.c.cmodule import GCC_compiler

    if not theano.config.cxx or GCC_compiler.march_flags is not None:
        return None
    key = _march_key()
    path = os.path.join(functions_dir(), "march_flags.json")
    data = _read_private(path)
    if data is not None:
        try:
            entry = json.loads(data)
        except ValueError:
            entry = None
        if isinstance(entry, dict) and entry.get("key") == json.loads(json.dumps(key)):
            flags = entry.get("march_flags")
            if isinstance(flags, list) and all(isinstance(f, str) for f in flags):
                GCC_compiler.march_flags = list(flags)
                return flags
    GCC_compiler.compile_args()  # Theano's own probe; sets GCC_compiler.march_flags
    flags = list(GCC_compiler.march_flags or [])
    _write_private(path, json.dumps({"key": key, "march_flags": flags}, indent=1).encode())
    return flags


fix_cache_keys()
if not on_gpu():
    try:
        cached_march_flags()
    except Exception:  # noqa: BLE001 - then Theano runs its own probe when it compiles
        pass
