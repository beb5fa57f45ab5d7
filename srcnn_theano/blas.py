"""Which BLAS Theano links: found once per machine by compiling and timing test programs,
then cached.

:mod:`srcnn_theano.backend` passes :func:`blas_ldflags` to Theano as
``blas__ldflags``. Theano-PyMC 1.1.2 crashes at import while probing
``numpy.distutils`` for BLAS unless this flag is set. The candidates, each
kept only when a test program links *and* runs with it:

1. the ``scipy-openblas32`` wheel (a pip requirement of the project): a
   current OpenBLAS (0.3.34, SkylakeX kernels on AVX-512 machines) that
   runs SRCNN's thin products up to twice as fast as the 0.3.2x builds
   below; its symbols are ``scipy_``-prefixed, so the flags also carry
   ``-Dsgemm_=scipy_sgemm_`` (and the like) for Theano's compiler;
2. else the OpenBLAS that scipy's wheel bundles (``scipy.libs/libopenblas*.so``,
   32-bit integers and plain ``sgemm_`` symbols, as Theano's BLAS
   headers expect), linked by file name with an rpath;
3. Intel MKL's ``libmkl_rt`` from the ``mkl`` wheel (a pip requirement
   too), linked by file name with an rpath (it loads its CPU kernels from
   its own folder).

When both an OpenBLAS and MKL work, :func:`thin_sgemm_gflops` times each
on the single-threaded products SRCNN's banded correlation makes (thin:
32-64 output channels, K = 81 to 1600) and the faster one is linked; MKL
must be at least :data:`MKL_MARGIN` times faster to win, so OpenBLAS stays
where the two are alike (MKL is slower on some AMD parts). On the 2-core
Sapphire Rapids development VM, MKL runs these products 1.4-1.9x faster
and is chosen. With none of the three: ``-lopenblas`` (Debian's
``libopenblas-dev``), else the empty string, which makes Theano call
numpy's BLAS through its C API (``PyArray_MatrixProduct2``, one extra pass
over each result): correct, and slower.

numpy's own wheel bundles OpenBLAS too, but with 64-bit integers and
``sgemm_64_`` symbols, which Theano's headers cannot call.

The choice is made once per machine, not once per process: compiling, running and
timing the test programs (:func:`_links_with`, :func:`thin_sgemm_gflops`) is cached in
``blas_ldflags.json`` in the project's cache folder
(:func:`srcnn_theano.files.cache_dir`), written atomically
(:func:`srcnn_theano.files.atomic_write_bytes`). The cached
answer is used only while its key (:func:`_probe_key`) still holds: the
version of the probe (:data:`PROBE_VERSION`), the compiler (``$CC``, its
resolved path, size and modification time), each candidate library above
(path, size, modification time; for ``-lopenblas`` the ``libopenblas.so``
files in ``$LIBRARY_PATH`` and the system's library folders), and the
Python (executable, version, platform). Any change probes again and
rewrites the file; an unreadable or corrupt file is ignored and
rewritten, and one that cannot be written is no error. A
``blas__ldflags`` (or ``blas.ldflags``) in the user's ``THEANO_FLAGS``
skips the probe and the cache altogether.

This module imports neither Theano nor numpy (it runs before Theano is imported).
"""
import ctypes.util
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile

from srcnn_theano.errors import SRCNNError
from srcnn_theano.files import atomic_write_bytes, cache_dir

#: Bumped whenever what :func:`blas_ldflags` probes, or how, changes: a cached
#: answer of another version is probed again.
PROBE_VERSION = 2

#: How much faster than OpenBLAS MKL must run the thin products to be linked instead.
MKL_MARGIN = 1.1


def _compiler():
    """The C compiler the probe runs: ``$CC`` (default ``cc``), else ``gcc``; or None."""
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


def _links_with(flags, run=False):
    """True when ``cc t.c FLAGS`` links a program using sgemm_ (and, if ``run``, it runs)."""
    cc = _compiler()
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


def file_ldflags(path):
    """``blas__ldflags`` linking the library at ``path`` by file name, with an rpath
    (scipy's bundled OpenBLAS, MKL's ``libmkl_rt.so.N``).

    ``-Xlinker --disable-new-dtags`` makes the rpath an ``RPATH`` (not a
    ``RUNPATH``), which the loader also uses for the library's own bundled
    dependencies (scipy's ``libgfortran-*.so``, MKL's kernels). Theano splits this string
    on blanks and ``THEANO_FLAGS`` on commas, so neither may appear in the path.
    """
    d, name = os.path.split(path)
    if any(ch in path for ch in " ,'\""):
        raise ValueError(f"cannot pass this path to Theano: {path!r}")
    return f"-L{d} -l:{name} -Xlinker --disable-new-dtags"


def mkl_rt():
    """Path of ``libmkl_rt.so.N`` installed by the ``mkl`` wheel, or None.

    Found from the wheel's file list (it lands in ``<prefix>/lib``, with no
    ``libmkl_rt.so`` link), without loading it.
    """
    try:
        dist = importlib.metadata.distribution("mkl")
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if f.name.startswith("libmkl_rt.so"):
            path = os.path.realpath(str(dist.locate_file(f)))
            if os.path.isfile(path):
                return path
    return None


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


#: Times single-threaded sgemm_ on SRCNN's thin products (column-major m, n, k: the
#: 9x9 and 5x5 forward products of 64- and 32-channel layers, a 3x3 one, and a weight
#: gradient) and prints the rate in GFLOP/s.
_TIMING_PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
void sgemm_(const char *, const char *, const int *, const int *, const int *, const float *,
            const float *, const int *, const float *, const int *, const float *, float *,
            const int *);
static double now(void) {
  struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec;
}
int main(void) {
  static const int shapes[][3] = {{64, 4096, 81}, {32, 2048, 1600}, {32, 4096, 576},
                                  {1600, 32, 2048}};
  float one = 1, zero = 0;
  double flop = 0, secs = 0;
  for (int s = 0; s < 4; s++) {
    int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
    float *a = malloc(sizeof(float) * m * k), *b = malloc(sizeof(float) * k * n),
          *c = malloc(sizeof(float) * m * n);
    for (int i = 0; i < m * k; i++) a[i] = (float)(i % 7) * 0.1f;
    for (int i = 0; i < k * n; i++) b[i] = (float)(i % 5) * 0.1f;
    sgemm_("N", "N", &m, &n, &k, &one, a, &m, b, &k, &zero, c, &m);
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
      double t0 = now();
      for (int i = 0; i < 4; i++) sgemm_("N", "N", &m, &n, &k, &one, a, &m, b, &k, &zero, c, &m);
      double t = (now() - t0) / 4;
      if (t < best) best = t;
    }
    flop += 2.0 * m * n * k; secs += best;
    free(a); free(b); free(c);
  }
  printf("%.3f\n", flop / secs * 1e-9);
  return 0;
}
"""


def thin_sgemm_gflops(flags):
    """GFLOP/s of one thread running SRCNN's thin products (:data:`_TIMING_PROGRAM`)
    through the BLAS that ``flags`` link; 0.0 when it cannot be built or run."""
    cc = _compiler()
    if cc is None:
        return 0.0
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        path, exe = os.path.join(tmp, "t.c"), os.path.join(tmp, "t")
        with open(path, "w") as f:
            f.write(_TIMING_PROGRAM)
        try:
            subprocess.run([cc, "-O2", path, "-o", exe] + list(flags), check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
            out = subprocess.run([exe], env=env, capture_output=True, text=True, timeout=120,
                                 check=True)
            return float(out.stdout.split()[0])
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return 0.0


def _working(find, ldflags):
    """``(ldflags, flags to build a test program)`` for the library ``find()`` returns,
    when a test program links and runs with it; else None."""
    path = find()
    if path is None:
        return None
    try:
        flags = ldflags(path)
    except ValueError:
        return None
    build = flags.split() + [f"-Wl,-rpath,{os.path.dirname(path)}"]
    return (flags, build) if _links_with(build, run=True) else None


def _probe_blas_ldflags():
    """Find the ``blas__ldflags`` by compiling and timing test programs (uncached)."""
    openblas = (_working(pypi_openblas, pypi_openblas_ldflags)
                or _working(bundled_openblas, file_ldflags))
    mkl = _working(mkl_rt, file_ldflags)
    if openblas and mkl:
        faster = thin_sgemm_gflops(mkl[1]) > MKL_MARGIN * thin_sgemm_gflops(openblas[1])
        return (mkl if faster else openblas)[0]
    if openblas or mkl:
        return (openblas or mkl)[0]
    return "-lopenblas" if _openblas_links() else ""


def _cache_path():
    """Where :func:`blas_ldflags` keeps its answer (see the module docstring)."""
    return cache_dir("blas_ldflags.json")


def _file_key(path):
    """``[resolved path, size, mtime in ns]`` of a file, or ``[path, None, None]``."""
    if path is None:
        return None
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return [real, None, None]
    return [real, st.st_size, st.st_mtime_ns]


def _system_openblas_files():
    """The ``libopenblas.so`` files ``-lopenblas`` may link: ``$LIBRARY_PATH``, then
    the usual system folders."""
    import sysconfig

    arch = sysconfig.get_config_var("MULTIARCH") or ""
    dirs = [d for d in os.environ.get("LIBRARY_PATH", "").split(os.pathsep) if d]
    for prefix in ("/usr/local/lib", "/usr/lib", "/lib"):
        dirs += [os.path.join(prefix, arch)] if arch else []
        dirs.append(prefix)
    dirs += ["/usr/lib64", "/lib64"]
    return [os.path.join(d, "libopenblas.so") for d in dirs
            if os.path.exists(os.path.join(d, "libopenblas.so"))]


def _probe_key():
    """Everything the probe's answer depends on, as a JSON-able dict."""
    cc = _compiler()
    return {
        "probe_version": PROBE_VERSION,
        "cc_env": os.environ.get("CC"),
        "compiler": _file_key(cc),
        "library_path": os.environ.get("LIBRARY_PATH"),
        "scipy_openblas32": _file_key(pypi_openblas()),
        "scipy_bundled_openblas": _file_key(bundled_openblas()),
        "mkl": _file_key(mkl_rt()),
        "system_openblas": [_file_key(p) for p in _system_openblas_files()],
        "python": [sys.executable, sys.version, sys.implementation.cache_tag],
        "platform": [sys.platform, platform.machine()],
    }


def _read_cache(path, key):
    """The cached ``blas__ldflags`` for ``key``, or None (missing, corrupt or stale)."""
    try:
        with open(path) as f:
            entry = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("key") != key:
        return None
    flags = entry.get("ldflags")
    return flags if isinstance(flags, str) else None


def _write_cache(path, key, flags):
    """Store the answer atomically (:func:`srcnn_theano.files.atomic_write_bytes`);
    an unwritable cache is silently skipped."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write_bytes(path, json.dumps({"key": key, "ldflags": flags}, indent=1).encode())
    except (OSError, SRCNNError):
        pass


def blas_ldflags():
    """The ``blas__ldflags`` value we give Theano (see the module docstring).

    Served from the on-disk cache when its key still holds; probed (and
    cached) otherwise.
    """
    path, key = _cache_path(), _probe_key()
    flags = _read_cache(path, key)
    if flags is None:
        flags = _probe_blas_ldflags()
        _write_cache(path, key, flags)
    return flags


def describe(ldflags):
    """What BLAS a ``blas__ldflags`` value links, as a short dict (for benchmarks and
    bug reports); :func:`srcnn_theano.backend.blas_info` describes Theano's own.

    ``library``: ``'scipy-openblas32'``, ``'scipy-bundled-openblas'``, ``'mkl'``,
    ``'system-openblas'``, ``'numpy-c-api'`` or ``'custom'``; ``ldflags``;
    ``path`` when known; ``symbol_prefix`` (``'scipy_'`` or ``''``).
    """
    info = {"ldflags": ldflags, "symbol_prefix": ""}
    bundled = bundled_openblas()
    pypi = pypi_openblas()
    mkl = mkl_rt()
    if not ldflags.strip():
        info["library"] = "numpy-c-api"
    elif pypi and ldflags.startswith(f"-L{os.path.dirname(pypi)} "):
        info.update(library="scipy-openblas32", path=pypi, symbol_prefix="scipy_")
    elif bundled and file_ldflags(bundled) == ldflags:
        info.update(library="scipy-bundled-openblas", path=bundled)
    elif mkl and file_ldflags(mkl) == ldflags:
        info.update(library="mkl", path=mkl)
    elif ldflags.strip() == "-lopenblas":
        info.update(library="system-openblas", path=ctypes.util.find_library("openblas"))
    else:
        info["library"] = "custom"
    return info
