"""The image stages' inner loops (``loops.c``), compiled once per machine, called with ctypes.

:mod:`~srcnn_theano.image.imresize`, :mod:`~srcnn_theano.image.ycbcr` and
:mod:`~srcnn_theano.image.units` state their arithmetic in numpy terms and run
it here: the same float64 products and sums in the same order, so the same
bits (``tests/test_image_loops.py`` and the imresize/ycbcr tests compare them
with plain numpy), in one pass over the pixels where they lie instead of a
numpy pass per operation: the upscale pipeline's work beside the network
takes a quarter of the core time it took in numpy. ctypes releases the GIL
around each call, so the pipeline's threads run these beside the network.

The library is built by ``$CC`` (else ``cc``) with :data:`FLAGS`: no
contraction into fused multiply-adds and no ``-ffast-math``, so every
operation rounds as written; no ``-march=native``: ``loops.c`` asks for AVX2
and baseline copies of each loop and the loader picks one for the CPU, so
one binary serves every x86-64 machine sharing the cache folder. It is kept
in :func:`srcnn_theano.files.cache_dir` under the hash of its flags and
source, published atomically in a private folder (a build for older source
is removed); a process that finds it loads it in about a millisecond. Where
that folder cannot be written or is not private, each process builds its
own copy in a temporary folder (0.8 s).

Arrays cross as pointers with byte strides; the wrappers here check dtypes
and shapes, so a C loop never sees an array it cannot address.
"""
import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading

import numpy as np

from srcnn_theano.errors import SRCNNError
from srcnn_theano.files import atomic_output, cache_dir, is_private, private_folder, remove_stale

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "loops.c")
#: -fno-trapping-math lets the compiler vectorize the clipping (it changes no value).
FLAGS = ["-O3", "-std=c99", "-fPIC", "-shared", "-ffp-contract=off", "-fno-trapping-math"]

_lock = threading.Lock()
_libraries = {}   # tuple of compiler flags -> the loaded library

_long, _ptr = ctypes.c_long, ctypes.c_void_p
#: (input, output) dtype names of the C from_float loops -> their ``peak`` argument's type
_FROM_FLOAT = {(f, u): ctypes.c_double if f == "float64" else ctypes.c_float
               for f in ("float64", "float32") for u in ("uint8", "uint16")}


def _compiler():
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or "cc"


def _build(path, source, flags):
    """Compile ``source`` into ``path``, published atomically (its folder must exist)."""
    with atomic_output(path, suffix=".so") as tmp:
        src = tmp + ".c"
        with open(src, "wb") as f:
            f.write(source)
        try:
            run = subprocess.run([_compiler(), *flags, "-o", tmp, src], capture_output=True,
                                 text=True)
        except OSError as e:
            raise SRCNNError(f"cannot compile {SOURCE}: {_compiler()}: {e.strerror or e}") from None
        finally:
            os.unlink(src)
        if run.returncode:
            first = (run.stderr.strip() or f"{_compiler()} exited with {run.returncode}")
            raise SRCNNError(f"cannot compile {SOURCE}: {first.splitlines()[0][:300]}")


def _load(folder, name, stale_prefix, source, flags):
    """The library ``name`` of ``folder``, built there first if missing (older builds with
    ``stale_prefix`` removed). A library runs code when loaded: it is loaded only from a
    private folder and file (:func:`srcnn_theano.files.is_private`, as the pickled
    functions are); elsewhere, or where the folder cannot be written, it is built in a
    temporary folder for this process alone."""
    path = os.path.join(folder, name)
    if private_folder(folder):
        if not os.path.exists(path) and os.access(folder, os.W_OK):
            _build(path, source, flags)
            remove_stale(folder, stale_prefix, name)
        try:
            if is_private(os.lstat(path)):
                return ctypes.CDLL(path)
        except OSError:
            pass
    with tempfile.TemporaryDirectory() as private:   # the loaded library stays mapped
        path = os.path.join(private, name)
        _build(path, source, flags)
        return ctypes.CDLL(path)


def library(flags=None):
    """The compiled ``loops.c`` (built on first use), its functions typed.

    ``flags`` (default :data:`FLAGS`) are the compiler's; the library is
    kept per source and flags.
    """
    flags = tuple(FLAGS if flags is None else flags)
    with _lock:
        if flags not in _libraries:
            with open(SOURCE, "rb") as f:
                source = f.read()
            prefix = f"loops-{hashlib.sha256(' '.join(flags).encode()).hexdigest()[:8]}-"
            name = f"{prefix}{hashlib.sha256(source).hexdigest()[:16]}.so"
            lib = _load(cache_dir("loops"), name, prefix, source, flags)
            lib.resize_rows.argtypes = [_ptr, _ptr] + [_long] * 3 + [_ptr, _ptr] + [_long] * 2
            lib.resize_cols.argtypes = [_ptr, _ptr] + [_long] * 2 + [_ptr, _ptr] + [_long] * 2
            strided = [_long] * 2 + ([_ptr] + [_long] * 3) * 2 + [_ptr, _ptr]
            lib.lincomb3.argtypes = strided
            lib.resize_rows.restype = lib.resize_cols.restype = lib.lincomb3.restype = None
            for name in ("lincomb3_to_uint8", "lincomb3_to_uint16"):
                getattr(lib, name).argtypes = strided + [ctypes.c_double]
                getattr(lib, name).restype = None
            for (src, dst), peak in _FROM_FLOAT.items():
                f = getattr(lib, f"{src}_to_{dst}")
                f.argtypes = [_long] * 3 + ([_ptr] + [_long] * 3) * 2 + [peak]
                f.restype = None
            _libraries[flags] = lib
        return _libraries[flags]


def _weights(weights, indices):
    w = np.ascontiguousarray(weights, dtype=np.float64)
    i = np.ascontiguousarray(indices, dtype=np.int64)
    assert w.ndim == 2 and w.shape == i.shape
    return w, i


def resize_axis(planes, axis, weights, indices):
    """``out[..., i, ...] = sum_j weights[i, j] * planes[..., indices[i, j], ...]`` along ``axis``.

    Parameters
    ----------
    planes : ndarray, float64, C-contiguous, shape (C, H, W)
    axis : {1, 2}
        1 resamples the rows (H), 2 the columns (W).
    weights : ndarray, float64, shape (n_out, taps)
    indices : ndarray, int, shape (n_out, taps)
        In range along ``axis`` (already folded at the borders).

    Returns
    -------
    ndarray, float64, C-contiguous, (C, n_out, W) or (C, H, n_out)
        Taps summed in order: ``w0 * x0``, then ``+= w_j * x_j``, each product
        and sum rounded once.
    """
    assert planes.dtype == np.float64 and planes.ndim == 3 and planes.flags.c_contiguous
    w, i = _weights(weights, indices)
    c, h, width = planes.shape
    n_out, taps = w.shape
    assert i.size == 0 or (i.min() >= 0 and i.max() < planes.shape[axis])
    lib = library()
    if axis == 1:
        out = np.empty((c, n_out, width))
        lib.resize_rows(planes.ctypes.data, out.ctypes.data, c, h, width,
                        w.ctypes.data, i.ctypes.data, n_out, taps)
    else:
        out = np.empty((c, h, n_out))
        lib.resize_cols(planes.ctypes.data, out.ctypes.data, c * h, width,
                        w.ctypes.data, i.ctypes.data, n_out, taps)
    return out


def _coefficients(T, offset):
    t = np.ascontiguousarray(T, dtype=np.float64).reshape(9)
    return t, np.ascontiguousarray(offset, dtype=np.float64).reshape(3)


def lincomb3(img, T, offset, out=None, peak=None):
    """``out[..., p] = T[p, 0] * c0 + T[p, 1] * c1 + T[p, 2] * c2 + offset[p]``, left to right.

    Parameters
    ----------
    img : ndarray, float64, shape (H, W, 3), any strides
    T : array_like, (3, 3); offset : array_like, (3,)
    out : ndarray, uint8 or uint16, (H, W, 3), any strides, optional
        With ``peak``: the sums rounded to levels as :func:`from_float` rounds,
        written here in the same pass.
    peak : float, optional
        255 or 65535, with ``out``.

    Returns
    -------
    ndarray (H, W, 3): float64, a view of three contiguous planes (3, H, W); or ``out``.
    """
    assert img.dtype == np.float64 and img.ndim == 3 and img.shape[2] == 3
    h, w = img.shape[:2]
    t, off = _coefficients(T, offset)
    rs, xs, cs = img.strides
    if out is None:
        planes = np.empty((3, h, w))
        library().lincomb3(h, w, img.ctypes.data, cs, rs, xs, planes.ctypes.data,
                           *planes.strides, t.ctypes.data, off.ctypes.data)
        return np.moveaxis(planes, 0, -1)
    assert out.shape == img.shape and peak is not None
    ors, oxs, ocs = out.strides
    getattr(library(), f"lincomb3_to_{out.dtype}")(
        h, w, img.ctypes.data, cs, rs, xs, out.ctypes.data, ocs, ors, oxs,
        t.ctypes.data, off.ctypes.data, peak)
    return out


def from_float(x, out, peak):
    """``out[...] = floor(v) + (v - floor(v) >= 0.5)`` with ``v = clip(x, 0, 1) * peak``.

    Parameters
    ----------
    x : ndarray, float64 or float32, at most 3 dimensions, any strides
        Computed in its own float type; NaN gives 0.
    out : ndarray, uint8 or uint16, the shape of ``x``, any strides (written in place)
    peak : float
        255 or 65535.
    """
    assert x.shape == out.shape and x.ndim <= 3
    if x.size == 0:
        return out
    lead = (None,) * (3 - x.ndim)
    a, b = x[lead], out[lead]   # views with 3 dimensions
    # The input's smallest stride innermost: reads run along contiguous memory.
    order = sorted(range(3), key=lambda d: -abs(a.strides[d]))
    a, b = a.transpose(order), b.transpose(order)
    getattr(library(), f"{x.dtype}_to_{out.dtype}")(
        *a.shape, a.ctypes.data, *a.strides, b.ctypes.data, *b.strides, peak)
    return out
