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

Start-up: Theano imports ``scipy.stats`` (0.1 s of every command's start)
only for one scalar op's Python fallback (``chi2sf``), which no SRCNN graph
holds. :func:`_import_theano` lets that import find a placeholder and
removes it afterwards, so the first real use of ``scipy.stats`` (scipy's
own lazy submodule loading) imports it then.

Memory allocator (glibc only): :func:`keep_freed_memory` raises malloc's
mmap and trim thresholds, so that the large arrays Theano allocates and
frees at every call (im2col buffers, activations: megabytes each) are
recycled inside the process instead of being returned to the kernel and
page-faulted in again next call (a fifth of a training step otherwise).
Memory the process freed stays counted in its RSS (the peak is unchanged).
``SRCNN_THEANO_MALLOPT=0`` in the environment turns it off.

Nothing inside site-packages is edited.
"""
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



def _import_theano():
    """``import theano`` with ``scipy.stats`` left unimported (see the module docstring)."""
    placeholder = None
    if "scipy.stats" not in sys.modules:
        placeholder = sys.modules["scipy.stats"] = types.ModuleType("scipy.stats")
    try:
        import theano
    finally:
        if placeholder is not None and sys.modules.get("scipy.stats") is placeholder:
            del sys.modules["scipy.stats"]
    return theano


# Theano warns at every import that it uses numpy's BLAS; that choice is ours and documented.
logging.getLogger("theano.tensor.blas").setLevel(logging.ERROR)
theano = _import_theano()
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


import lasagne  # noqa: E402
