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


def from_float(x, dtype=np.uint8):
    """Float in [0, 1] -> uint8/uint16 (MATLAB ``im2uint8`` / ``im2uint16``): clipped, rounded.

    The same values as ``matlab_cast(clip(x, 0, 1) * peak, dtype)``, in fewer
    passes: once clipped, ``x * peak`` is in ``[0, peak]``, where rounding
    half away from zero is ``floor(v) + (v - floor(v) >= 0.5)`` (the
    difference is exact) and nothing needs saturating. Scaled in the input's
    float type (float32 network outputs stay float32 until rounded); the
    result keeps the input's memory layout.
    """
    peak = PEAK[np.dtype(dtype)]
    v = np.clip(np.asarray(x), 0.0, 1.0)
    if not np.issubdtype(v.dtype, np.floating):
        v = v.astype(np.float64)
    v *= peak
    whole = np.floor(v)
    v -= whole
    whole += v >= 0.5
    return whole.astype(dtype)


def to_uint8(arr):
    """uint8 as it is; uint16 reduced to 8 bits (``im2uint8``): how 16-bit files are evaluated and trained on."""
    arr = np.asarray(arr)
    return arr if arr.dtype == np.uint8 else from_float(to_float(arr))
