"""Pixel units: uint8/uint16 integers <-> 0-1 floats, with MATLAB's rounding.

The one place where floats become integers. MATLAB casts a double to an
integer class by rounding half away from zero and saturating;
:func:`matlab_round` does that exactly (``floor(x + 0.5)`` is not exact:
``0.49999999999999994 + 0.5`` rounds up to 1 in float64).

==============  =====================  ============================
array           dtype                  range
==============  =====================  ============================
8-bit image     uint8                  0..255
16-bit image    uint16                 0..65535
float image     float64 (or float32)   0..1 (MATLAB ``im2double``)
==============  =====================  ============================
"""
import numpy as np

from srcnn_theano.image import loops

PEAK = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def matlab_round(x):
    """Round half away from zero, exactly, as MATLAB's ``round`` and integer casts do (float64)."""
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    f = np.floor(a)
    return np.copysign(f + (a - f >= 0.5), x)


def matlab_cast(x, dtype):
    """MATLAB's cast of doubles to an integer class: :func:`matlab_round`, then saturate."""
    info = np.iinfo(dtype)
    return np.clip(matlab_round(x), info.min, info.max).astype(dtype)


def to_float(arr):
    """uint8/uint16 -> float64 in [0, 1] (MATLAB ``im2double``)."""
    arr = np.asarray(arr)
    if arr.dtype not in PEAK:
        raise TypeError(f"expected uint8 or uint16, got {arr.dtype}")
    return arr.astype(np.float64) / PEAK[arr.dtype]


def from_float(x, dtype=np.uint8, out=None):
    """Float in [0, 1] -> uint8/uint16 (MATLAB ``im2uint8`` / ``im2uint16``): clipped, rounded.

    The same values as ``matlab_cast(clip(x, 0, 1) * peak, dtype)``, in one
    pass (:func:`srcnn_theano.image.loops.from_float`): once clipped,
    ``v = x * peak`` is in ``[0, peak]``, where rounding half away from zero
    is ``floor(v) + (v - floor(v) >= 0.5)`` (the difference is exact) and
    nothing needs saturating. Scaled in float32 for float32 input (network
    outputs stay float32 until rounded), in float64 otherwise; NaN gives 0.

    Parameters
    ----------
    x : array_like
    dtype : uint8 or uint16
    out : ndarray of ``dtype``, the shape of ``x``, optional
        Written in place (any strides, e.g. a band of interleaved pixels);
        by default a new array in ``x``'s memory layout.
    """
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    if out is None:
        out = np.empty_like(x, dtype=dtype)
    if out.dtype != np.dtype(dtype):
        raise TypeError(f"from_float into {out.dtype}, asked for {np.dtype(dtype)}")
    for lead in np.ndindex(x.shape[:-3]):    # the C loop takes up to 3 dimensions
        loops.from_float(x[lead + (...,)], out[lead + (...,)], PEAK[out.dtype])   # views
    return out


def to_uint8(arr):
    """uint8 as it is; uint16 reduced to 8 bits (``im2uint8``): how 16-bit files are evaluated and trained on."""
    arr = np.asarray(arr)
    return arr if arr.dtype == np.uint8 else from_float(to_float(arr))
