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
    Theano-PyMC 1.1.2 crashes at import while probing ``numpy.distutils``
    for BLAS unless this flag is set: :func:`srcnn_theano.blas.blas_ldflags`
    picks the fastest BLAS that links and runs (the ``scipy-openblas32``
    wheel first), once per machine (cached on disk).

Shims, for PyPI's Lasagne 0.1 (2015) on Theano-PyMC 1.1.2:

* ``theano.tensor.signal.downsample`` (removed from Theano) is provided with
  ``max_pool_2d`` mapped onto ``theano.tensor.signal.pool.pool_2d``.
* ``theano.sandbox.rng_mrg.MRG_RandomStreams`` (renamed
  ``MRG_RandomStream``) is aliased.
* Theano 1.1.2's OpenMP elementwise code forgot an ``f`` before a format
  string (``tensor/elemwise.py``), which emits invalid C when
  ``openmp=True``; :func:`_patch_elemwise_openmp` fixes it in memory.

Start-up (0.3 s of every command's start): imports that Theano and Lasagne
make and SRCNN never uses are skipped, each only while Theano or Lasagne is
imported (:func:`_placeholders`), so that a later real use imports the real
module:

* ``scipy.stats``, ``scipy.special`` (0.15 s), imported by Theano for the
  Python fallbacks of scalar ops (``chi2sf``, ``erf``...) that no SRCNN
  graph holds: empty placeholders, removed afterwards; scipy's own lazy
  submodule loading imports the real ones on first use.
* ``scipy.signal`` (0.08 s), from which Theano's Python convolutions import
  names that scipy 1.11 does not have in ``scipy.signal.signaltools``: the
  import fails either way (``imported_scipy_signal`` is False); against an
  empty placeholder it fails without loading scipy.signal.
* ``pkg_resources`` (0.06 s), imported by Lasagne 0.1 for
  ``get_distribution("Lasagne").version`` alone: a placeholder that answers
  that from ``importlib.metadata``.
* setuptools (0.05 s), which its ``distutils`` hook imports when Theano
  imports ``distutils``: the hook is lifted while Theano is imported
  (Python 3.11 still ships ``distutils``, which is what Theano was written
  for) and put back afterwards. setuptools imported later in the same
  process takes ``distutils`` over, with its warning that it does.

Memory allocator (glibc only): :func:`keep_freed_memory` raises malloc's
mmap and trim thresholds, so that the large arrays Theano allocates and
frees at every call (im2col buffers, activations: megabytes each) are
recycled inside the process instead of being returned to the kernel and
page-faulted in again next call (a fifth of a training step otherwise).
Memory the process freed stays counted in its RSS (the peak is unchanged).
``SRCNN_THEANO_MALLOPT=0`` in the environment turns it off.

Nothing inside site-packages is edited.
"""
import contextlib
import logging
import os
import sys
import types

from srcnn_theano import blas
from srcnn_theano.allocator import keep_freed_memory

__all__ = ["theano", "T", "lasagne", "theano_flags", "on_gpu", "blas_info"]


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
        ours.append("blas__ldflags=" + blas.blas_ldflags())
    return ",".join(ours + ([user_flags] if user_flags else []))


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


@contextlib.contextmanager
def _placeholders(**modules):
    """Let imports inside the block find ``modules`` (name: module) instead of importing
    them; the placeholders are gone afterwards (see the module docstring)."""
    placed = {name: module for name, module in modules.items() if name not in sys.modules}
    sys.modules.update(placed)
    hook = None
    if sys.version_info < (3, 12) and "distutils" not in sys.modules:
        try:
            import _distutils_hack as hook   # setuptools' distutils hook
            hook.remove_shim()
        except ImportError:
            hook = None
    try:
        yield
    finally:
        if hook is not None:
            hook.add_shim()
        for name, module in placed.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]


def _scipy_placeholders():
    """Empty stand-ins for the scipy modules Theano imports and SRCNN never calls (see the
    module docstring)."""
    names = ("scipy.stats", "scipy.special", "scipy.signal", "scipy.signal.signaltools",
             "scipy.signal.sigtools")
    return {name: types.ModuleType(name) for name in names}


def _pkg_resources_placeholder():
    """``pkg_resources`` as far as Lasagne 0.1 uses it: ``get_distribution(name).version``."""
    from importlib.metadata import version

    module = types.ModuleType("pkg_resources")
    module.get_distribution = lambda name: types.SimpleNamespace(version=version(name))
    return module


# Theano warns at every import that it uses numpy's BLAS; that choice is ours and documented.
logging.getLogger("theano.tensor.blas").setLevel(logging.ERROR)
with _placeholders(**_scipy_placeholders()):
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


def blas_info():
    """What BLAS Theano's ops call (:func:`srcnn_theano.blas.describe` of its
    ``blas__ldflags``), as a short dict for benchmarks and bug reports."""
    return blas.describe(theano.config.blas__ldflags)


with _placeholders(pkg_resources=_pkg_resources_placeholder()):
    import lasagne  # noqa: E402
