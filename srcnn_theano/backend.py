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
    ``numpy.distutils`` for BLAS unless this flag is set. We use
    ``-lopenblas`` when a test program links against it (Debian's
    ``libopenblas-dev``), and the empty string otherwise, which makes
    Theano call numpy's own BLAS through its C API.

Shims, for PyPI's Lasagne 0.1 (2015) on Theano-PyMC 1.1.2:

* ``theano.tensor.signal.downsample`` (removed from Theano) is provided with
  ``max_pool_2d`` mapped onto ``theano.tensor.signal.pool.pool_2d``.
* ``theano.sandbox.rng_mrg.MRG_RandomStreams`` (renamed
  ``MRG_RandomStream``) is aliased.
* Theano 1.1.2's OpenMP elementwise code forgot an ``f`` before a format
  string (``tensor/elemwise.py``), which emits invalid C when
  ``openmp=True``; :func:`_patch_elemwise_openmp` fixes it in memory.

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

__all__ = ["theano", "T", "lasagne", "blas_ldflags", "theano_flags"]


def _openblas_links():
    """Return True when ``cc ... -lopenblas`` links a program calling sgemm_."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None or ctypes.util.find_library("openblas") is None:
        return False
    src = "extern void sgemm_(void); int main(void){ sgemm_(); return 0; }\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.c")
        with open(path, "w") as f:
            f.write(src)
        try:
            res = subprocess.run([cc, path, "-o", os.path.join(tmp, "t"), "-lopenblas"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 timeout=60)
        except (OSError, subprocess.SubprocessError):
            return False
        return res.returncode == 0


def blas_ldflags():
    """The ``blas__ldflags`` value we give Theano: ``-lopenblas`` or ``''``."""
    return "-lopenblas" if _openblas_links() else ""


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
    os.environ["THEANO_FLAGS"] = theano_flags()

# Theano warns at every import that it uses numpy's BLAS; that choice is ours and documented.
logging.getLogger("theano.tensor.blas").setLevel(logging.ERROR)
import theano  # noqa: E402
import theano.tensor as T  # noqa: E402

theano._srcnn_configured = True
_install_lasagne_shims(theano)
_patch_elemwise_openmp()

import lasagne  # noqa: E402
