"""Theano and Lasagne, configured and patched in one place.

Every module of the project imports Theano and Lasagne from here::

    from srcnn_theano.backend import theano, T, lasagne

so that the configuration below is in force before Theano reads its flags,
and the compatibility shims are applied before Lasagne is imported.

Configuration (a user's own ``THEANO_FLAGS`` always win, they are appended
after ours and Theano keeps the last value given for a flag):

``floatX=float32``
    SRCNN works in 32-bit floats, as the authors' Caffe code did.
``blas__ldflags``
    Theano-PyMC 1.1.2 crashes at import while probing
    ``numpy.distutils`` for BLAS unless this flag is set. In order of
    preference (the first that a test program links *and* runs with):

    1. the ``scipy-openblas32`` wheel (a pip requirement of the project): a
       current OpenBLAS (0.3.34, SkylakeX kernels on AVX-512 machines) that
       runs SRCNN's thin products up to twice as fast as the 0.3.2x builds
       below (10-15% of a whole prediction on the 2-core development VM); its
       symbols are ``scipy_``-prefixed, so the flags also carry
       ``-Dsgemm_=scipy_sgemm_`` (and the like) for Theano's compiler;
    2. the OpenBLAS that scipy's wheel bundles (``scipy.libs/libopenblas*.so``,
       32-bit integers and plain ``sgemm_`` symbols, as Theano's BLAS
       headers expect), linked by file name with an rpath: a threaded sgemm
       from a pinned pip requirement, no system package needed;
    3. ``-lopenblas`` (Debian's ``libopenblas-dev``);
    4. the empty string, which makes Theano call numpy's BLAS through its C
       API (``PyArray_MatrixProduct2``, one extra pass over each result):
       correct, and about as fast as 2. with numpy's wheel (its bundled
       OpenBLAS 0.3.20).

    numpy's own wheel bundles OpenBLAS too, but with 64-bit integers and
    ``sgemm_64_`` symbols, which Theano's headers cannot call.

Shims, for PyPI's Lasagne 0.1 (2015) on Theano-PyMC 1.1.2:

* ``theano.tensor.signal.downsample`` (removed from Theano) is provided with
  ``max_pool_2d`` mapped onto ``theano.tensor.signal.pool.pool_2d``.
* ``theano.sandbox.rng_mrg.MRG_RandomStreams`` (renamed
  ``MRG_RandomStream``) is aliased.
* Theano 1.1.2's OpenMP elementwise code forgot an ``f`` before a format
  string (``tensor/elemwise.py``), which emits invalid C when
  ``openmp=True``; :func:`_patch_elemwise_openmp` fixes it in memory.

Memory allocator (glibc only): :func:`keep_freed_memory` raises malloc's
mmap and trim thresholds, so that the large arrays Theano allocates and
frees at every call (im2col buffers, activations: megabytes each) are
recycled inside the process instead of being returned to the kernel and
page-faulted in again next call; that was a fifth of a training step.
Memory the process freed stays counted in its RSS (the peak is unchanged).
``SRCNN_THEANO_MALLOPT=0`` in the environment turns it off.

Nothing inside site-packages is edited.
"""
import ctypes.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import types

__all__ = ["theano", "T", "lasagne", "blas_ldflags", "blas_info", "bundled_openblas",
           "pypi_openblas", "theano_flags", "keep_freed_memory"]


def _links_with(flags, run=False):
    """True when ``cc t.c FLAGS`` links a program using sgemm_ (and, if ``run``, it runs)."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        return False
    # Referenced, not called: running it checks that the loader finds the library.
    src = "extern void sgemm_(void);\nint main(void){ return sgemm_ == 0; }\n"
    with tempfile.TemporaryDirectory() as tmp:
        path, exe = os.path.join(tmp, "t.c"), os.path.join(tmp, "t")
        with open(path, "w") as f:
            f.write(src)
        try:
            res = subprocess.run([cc, path, "-o", exe] + list(flags),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 timeout=60)
            if res.returncode == 0 and run:
                res = subprocess.run([exe], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return False
        return res.returncode == 0


def _openblas_links():
    """Return True when ``cc ... -lopenblas`` links a program calling sgemm_."""
    if ctypes.util.find_library("openblas") is None:
        return False
    return _links_with(["-lopenblas"])


def bundled_openblas():
    """Path of the OpenBLAS shared library inside scipy's wheel, or None.

    Found without importing scipy. It exports the LP64 ``sgemm_`` Theano's
    headers declare (numpy's bundled one is ILP64, ``sgemm_64_``).
    """
    import glob
    import importlib.util

    try:
        spec = importlib.util.find_spec("scipy")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    site_dir = os.path.dirname(os.path.abspath(list(spec.submodule_search_locations)[0]))
    found = sorted(glob.glob(os.path.join(site_dir, "scipy.libs", "libopenblas*.so*")))
    return found[0] if found else None


def bundled_openblas_ldflags(path):
    """``blas__ldflags`` linking the library at ``path`` by file name, with an rpath.

    ``-Xlinker --disable-new-dtags`` makes the rpath an ``RPATH`` (not a
    ``RUNPATH``), which the loader also uses for the library's own bundled
    dependencies (scipy's ``libgfortran-*.so``). Theano splits this string
    on blanks and ``THEANO_FLAGS`` on commas, so neither may appear in the path.
    """
    d, name = os.path.split(path)
    if any(ch in path for ch in " ,'\""):
        raise ValueError(f"cannot pass this path to Theano: {path!r}")
    return f"-L{d} -l:{name} -Xlinker --disable-new-dtags"


#: The Fortran BLAS routines Theano's C code calls (``blas.py``, ``blas_c.py``,
#: CorrMM): renamed to the ``scipy_``-prefixed symbols of scipy-openblas32.
_THEANO_BLAS_CALLS = tuple(p + f for f in ("gemm", "gemv", "ger", "dot", "axpy", "scal", "copy",
                                           "swap", "rot", "symv", "syrk", "trsv", "trmv", "trsm")
                           for p in "sd")


_OPENBLAS_THREAD_CALLS = ("openblas_set_num_threads", "openblas_get_num_threads",
                          "goto_set_num_threads")


def _find_package_dir(name):
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.abspath(list(spec.submodule_search_locations)[0])


def pypi_openblas():
    """Path of ``libscipy_openblas.so`` from the ``scipy-openblas32`` wheel, or None.

    Found without importing the package. That wheel ships a current OpenBLAS
    (LP64, no other library needed) whose symbols carry a ``scipy_`` prefix
    (``scipy_sgemm_``); :func:`pypi_openblas_ldflags` renames Theano's calls.
    """
    import glob

    pkg = _find_package_dir("scipy_openblas32")
    if pkg is None:
        return None
    found = sorted(glob.glob(os.path.join(pkg, "lib", "libscipy_openblas*.so")))
    return found[0] if found else None


def pypi_openblas_ldflags(path):
    """``blas__ldflags`` for scipy-openblas32's library at ``path``.

    ``-L`` (Theano adds the rpath), ``-l`` and one ``-Dsgemm_=scipy_sgemm_``
    per routine Theano calls: Theano passes the non ``-L``/``-l`` tokens to
    the compiler of every BLAS-using op, so its own ``sgemm_`` declarations
    and calls become the library's names.
    """
    d, name = os.path.split(path)
    if any(ch in path for ch in " ,'\""):
        raise ValueError(f"cannot pass this path to Theano: {path!r}")
    lib = name[3:].split(".so")[0]
    try:
        handle = ctypes.CDLL(path)
        names = [f for f in _THEANO_BLAS_CALLS if hasattr(handle, f"scipy_{f}_")]
    except OSError:
        names = list(_THEANO_BLAS_CALLS)
    defs = [f"-D{f}_=scipy_{f}_" for f in names]
    # With openmp=True, CorrMM sets OpenBLAS's thread count when "openblas" is in the flags.
    defs += [f"-D{f}=scipy_{f}" for f in _OPENBLAS_THREAD_CALLS]
    return f"-L{d} -l{lib} " + " ".join(defs)


def blas_ldflags():
    """The ``blas__ldflags`` value we give Theano (see the module docstring)."""
    for find, ldflags in ((pypi_openblas, pypi_openblas_ldflags),
                          (bundled_openblas, bundled_openblas_ldflags)):
        path = find()
        if path is None:
            continue
        try:
            flags = ldflags(path)
        except ValueError:
            continue
        if _links_with(flags.split() + [f"-Wl,-rpath,{os.path.dirname(path)}"], run=True):
            return flags
    return "-lopenblas" if _openblas_links() else ""


def blas_info(ldflags=None):
    """What BLAS Theano's ops call, as a short dict (for benchmarks and bug reports).

    ``library``: ``'scipy-openblas32'``, ``'scipy-bundled-openblas'``,
    ``'system-openblas'``, ``'numpy-c-api'`` or ``'custom'``; ``ldflags``;
    ``path`` when known; ``symbol_prefix`` (``'scipy_'`` or ``''``).
    """
    if ldflags is None:
        ldflags = theano.config.blas__ldflags
    info = {"ldflags": ldflags, "symbol_prefix": ""}
    bundled = bundled_openblas()
    pypi = pypi_openblas()
    if not ldflags.strip():
        info["library"] = "numpy-c-api"
    elif pypi and ldflags.startswith(f"-L{os.path.dirname(pypi)} "):
        info.update(library="scipy-openblas32", path=pypi, symbol_prefix="scipy_")
    elif bundled and bundled_openblas_ldflags(bundled) == ldflags:
        info.update(library="scipy-bundled-openblas", path=bundled)
    elif ldflags.strip() == "-lopenblas":
        info.update(library="system-openblas", path=ctypes.util.find_library("openblas"))
    else:
        info["library"] = "custom"
    return info


def theano_flags(user_flags=None):
    """Our defaults followed by the user's flags (which therefore win).

    Parameters
    ----------
    user_flags : str or None
        The user's ``THEANO_FLAGS``; ``None`` reads the environment.
    """
    if user_flags is None:
        user_flags = os.environ.get("THEANO_FLAGS", "")
    ours = ["floatX=float32"]
    if "blas__ldflags" not in user_flags and "blas.ldflags" not in user_flags:
        ours.append("blas__ldflags=" + blas_ldflags())
    return ",".join(ours + ([user_flags] if user_flags else []))


def keep_freed_memory(threshold=1 << 30):
    """Have glibc malloc serve and keep large blocks on its heap (see the module
    docstring). Returns True when applied; False elsewhere (not glibc, or
    ``SRCNN_THEANO_MALLOPT=0``)."""
    if os.environ.get("SRCNN_THEANO_MALLOPT", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    # Older glibc caps the mmap threshold at 32 MiB (64-bit): fall back to it.
    ok = any(mallopt(m_mmap_threshold, int(t)) == 1 for t in (threshold, 32 << 20))
    return bool(mallopt(m_trim_threshold, int(threshold) * 2) == 1 and ok)


def _install_lasagne_shims(theano_mod):
    """Make PyPI's Lasagne 0.1 importable on Theano-PyMC 1.1.2."""
    import theano.sandbox.rng_mrg as rng_mrg
    import theano.tensor.signal as signal
    import theano.tensor.signal.pool as pool

    if not hasattr(rng_mrg, "MRG_RandomStreams"):
        rng_mrg.MRG_RandomStreams = rng_mrg.MRG_RandomStream

    if "theano.tensor.signal.downsample" not in sys.modules:
        downsample = types.ModuleType("theano.tensor.signal.downsample")

        def max_pool_2d(input, ds, ignore_border=None, st=None, padding=(0, 0),
                        mode="max"):
            return pool.pool_2d(input, ws=ds, ignore_border=ignore_border,
                                stride=st, pad=padding, mode=mode)

        downsample.max_pool_2d = max_pool_2d
        sys.modules[downsample.__name__] = downsample
        signal.downsample = downsample


def _patch_elemwise_openmp():
    """Fix the missing ``f`` of the OpenMP pragma in Theano 1.1.2's Elemwise.

    The generated C reads ``if(n>={int(config.openmp_elemwise_minsize)})``
    literally. We recompile ``Elemwise.c_code`` (and the helper it uses) from
    its own source with the prefix added; nothing is written to disk.
    """
    import inspect
    import textwrap

    from theano.tensor import elemwise

    bad = '"""#pragma omp parallel for if(n>={int(config.openmp_elemwise_minsize)})'
    for name in ("_c_all",):
        func = getattr(elemwise.Elemwise, name, None)
        if func is None or getattr(func, "_srcnn_patched", False):
            continue
        src = textwrap.dedent(inspect.getsource(func))
        if bad not in src:
            continue
        src = src.replace(bad, "f" + bad)
        namespace = {}
        exec(compile(src, elemwise.__file__, "exec"), vars(elemwise), namespace)
        fixed = namespace[name]
        fixed._srcnn_patched = True
        setattr(elemwise.Elemwise, name, fixed)


if "theano" in sys.modules and not getattr(sys.modules["theano"], "_srcnn_configured", False):
    # Too late to set flags; still usable, but say why results may differ.
    import warnings
    warnings.warn("theano was imported before srcnn_theano.backend; its flags were not set "
                  "by srcnn_theano (floatX/blas__ldflags)", RuntimeWarning, stacklevel=2)
else:
    #: The THEANO_FLAGS the process started with (ours are prepended to them).
    user_theano_flags = os.environ.get("THEANO_FLAGS", "")
    os.environ["THEANO_FLAGS"] = theano_flags()
    from srcnn_theano import gpu as _gpu  # imports neither Theano nor numpy

    _gpu.prepare_environment()

# Theano warns at every import that it uses numpy's BLAS; that choice is ours and documented.
logging.getLogger("theano.tensor.blas").setLevel(logging.ERROR)
import theano  # noqa: E402
import theano.tensor as T  # noqa: E402

theano._srcnn_configured = True
malloc_tuned = keep_freed_memory()
_install_lasagne_shims(theano)
_patch_elemwise_openmp()
from srcnn_theano import gpu as _gpu  # noqa: E402

#: What :func:`srcnn_theano.gpu.configure` found (cuDNN patched, fallback, or CPU).
gpu_status = _gpu.configure(theano)


def on_gpu():
    """True when Theano's device is a GPU (``device=cuda*``)."""
    return str(theano.config.device).startswith(("cuda", "gpu"))


import lasagne  # noqa: E402
