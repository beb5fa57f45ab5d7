"""MATLAB-faithful bicubic ``imresize`` and ``modcrop`` (float64).

``imresize`` reproduces MATLAB's ``imresize(img, scale, 'bicubic')``
(Image Processing Toolbox, antialiasing on): Keys cubic kernel with
``a = -0.5``, a widened kernel when shrinking, border padding by index
folding, output size ``ceil(in * scale)``, and the dimension with the
smaller scale resized first, taps summed one by one in order. The
published SRCNN numbers were produced with that function, so results here
must match it to the last bit that float64 allows. Same algorithm as
BasicSR's ``basicsr/utils/matlab_functions.py``.

How it is computed: the weights and folded indices of each dimension
(MATLAB's ``contributions``) in numpy; each pass over contiguous planes
``(C, H, W)`` in C (:func:`srcnn_theano.image.loops.resize_axis`), tap by
tap for each output sample, ``w0 * x0`` then ``+= w_j * x_j``: the order of
MATLAB's ``imresizemex`` and of the plain numpy gather
(``tests/test_imresize_exact.py`` compares the bits).

Images are ``(H, W)`` or ``(H, W, C)``; floats are any range (usually 0..1)
and are never clipped; ``uint8`` is computed in float64 and rounded half away
from zero with saturation to 0..255 after each pass, as MATLAB does.
"""
import functools
import math

import numpy as np

from srcnn_theano.image.loops import resize_axis
from srcnn_theano.image.units import matlab_round


def cubic(x):
    """Keys bicubic kernel with ``a = -0.5`` (MATLAB's ``cubic``).

    Parameters
    ----------
    x : array_like
        Distances in input-pixel units (any shape).

    Returns
    -------
    ndarray, float64, same shape as ``x``
        Kernel value; zero for ``|x| > 2``.
    """
    absx = np.abs(np.asarray(x, dtype=np.float64))
    absx2 = absx ** 2
    absx3 = absx ** 3
    return ((1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1)
            + (-0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2) * ((absx > 1) & (absx <= 2)))


def calculate_weights_indices(in_length, out_length, scale, kernel_width=4.0, antialiasing=True,
                              padding="symmetric"):
    """Weights and source indices for resizing one dimension (MATLAB's ``contributions``).

    Parameters
    ----------
    in_length, out_length : int
        Number of input and output samples along the dimension.
    scale : float
        ``out / in`` as MATLAB uses it (the scale factor given by the caller,
        or ``out_length / in_length`` when an output size was given).
    kernel_width : float
        Support of the kernel in input pixels (4 for bicubic).
    antialiasing : bool
        Widen the kernel by ``1 / scale`` when ``scale < 1``.
    padding : {"symmetric", "replicate"}
        How indices outside ``[1, in_length]`` are folded back, see
        :func:`imresize`.

    Returns
    -------
    weights : ndarray, float64, shape (out_length, P)
        Each row sums to 1. Columns that are zero in every row are removed.
    indices : ndarray, int64, shape (out_length, P)
        0-based input indices, already folded into ``[0, in_length)``.
    """
    if scale < 1 and antialiasing:
        kernel = lambda d: scale * cubic(scale * d)  # noqa: E731
        kernel_width = kernel_width / scale
    else:
        kernel = cubic
    # 1-based output coordinates mapped to 1-based input coordinates.
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    p = int(math.ceil(kernel_width)) + 2
    indices = left[:, None] + np.arange(p)[None, :]          # 1-based, may be out of range
    weights = kernel(u[:, None] - indices)
    total = weights[:, 0].copy()
    for j in range(1, p):                                     # sequential, like MATLAB's sum
        total += weights[:, j]
    weights = weights / total[:, None]
    indices = indices.astype(np.int64) - 1                   # 0-based
    keep = np.any(weights != 0, axis=0)
    return weights[:, keep], fold_indices(indices[:, keep], in_length, padding)


@functools.lru_cache(maxsize=32)
def _contributions(in_length, out_length, scale, antialiasing, padding):
    """:func:`calculate_weights_indices` (read-only arrays), kept for the sizes in use: the
    tiles of one image, the images of one set repeat them."""
    weights, indices = calculate_weights_indices(in_length, out_length, scale, 4.0, antialiasing,
                                                 padding)
    weights.flags.writeable = indices.flags.writeable = False
    return weights, indices


def fold_indices(indices, in_length, padding="symmetric"):
    """0-based indices outside ``[0, in_length)`` folded back as MATLAB's border rule does."""
    if padding == "symmetric":
        # aux = [1:in, in:-1:1]; indices = aux(mod(indices-1, 2*in) + 1)
        aux = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
        return aux[np.mod(indices, aux.size)]
    if padding == "replicate":
        # indices = min(max(1, indices), in_length)
        return np.clip(indices, 0, in_length - 1)
    raise ValueError(f"padding must be 'symmetric' or 'replicate', got {padding!r}")


def imresize(img, scale=None, output_shape=None, antialiasing=True, padding="symmetric"):
    """MATLAB ``imresize(img, scale, 'bicubic')`` (or ``imresize(img, [h w], 'bicubic')``).

    Parameters
    ----------
    img : ndarray, shape (H, W) or (H, W, C)
        ``uint8`` (0..255) or float (any range, usually 0..1).
    scale : float, optional
        Same factor for both dimensions; output size is ``ceil(H * scale)``
        by ``ceil(W * scale)`` and the kernel uses ``scale`` itself.
    output_shape : (int, int), optional
        ``(out_H, out_W)``, used instead of ``scale`` (the kernel then uses
        ``out / in`` per dimension). Give exactly one of the two.
    antialiasing : bool
        Widen the kernel when shrinking (MATLAB's default, ``True``).
    padding : {"symmetric", "replicate"}
        Border handling. ``"symmetric"`` mirrors including the edge pixel
        (``x(0) = x(1)``, ``x(-1) = x(2)``), as MATLAB's ``imresize`` does
        since the resize code was moved into ``images.internal.resize``.
        ``"replicate"`` clamps indices (``x(0) = x(-1) = x(1)``), as the
        older ``imresize.m`` (2007 to at least 2013) did.

    Returns
    -------
    ndarray, shape (out_H, out_W) or (out_H, out_W, C)
        float64 for float input, not clipped; ``uint8`` for ``uint8`` input.
        As in MATLAB, the result of each pass (rows, columns) is stored in
        the input's class: rounded half away from zero and saturated for
        ``uint8``; rounded to float32 for float32 input (MATLAB ``single``),
        so float32 input gives float32 values, returned as float64.
    """
    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise ValueError(f"imresize expects (H, W) or (H, W, C), got shape {img.shape}")
    if (scale is None) == (output_shape is None):
        raise ValueError("give exactly one of scale and output_shape")
    if not (img.dtype == np.uint8 or np.issubdtype(img.dtype, np.floating)):
        raise TypeError(f"imresize supports uint8 and float images, got {img.dtype}")
    in_shape = img.shape[:2]
    if scale is not None:
        scales = (float(scale), float(scale))
        out_shape = scaled_shape(in_shape, scale)
    else:
        out_shape = (int(output_shape[0]), int(output_shape[1]))
        scales = (out_shape[0] / in_shape[0], out_shape[1] / in_shape[1])
    if min(out_shape) < 1:
        raise ValueError(f"output size {out_shape} is empty")
    if padding not in ("symmetric", "replicate"):
        raise ValueError(f"padding must be 'symmetric' or 'replicate', got {padding!r}")
    contributions = [_contributions(in_shape[d], out_shape[d], scales[d], antialiasing, padding)
                     for d in (0, 1)]
    # MATLAB: [~, order] = sort(scale), a stable sort -> rows first on ties.
    order = sorted((0, 1), key=lambda d: scales[d])
    # Channels as contiguous planes (C, H, W): every pass then runs along long rows.
    planes = np.ascontiguousarray(np.moveaxis(img, 2, 0) if img.ndim == 3 else img[None],
                                  dtype=np.float64)
    for axis in order:
        planes = resize_axis(planes, axis + 1, *contributions[axis])
        if img.dtype == np.uint8:
            planes = np.clip(matlab_round(planes), 0, 255)  # MATLAB stores each pass as uint8
        elif img.dtype == np.float32:
            planes = planes.astype(np.float32).astype(np.float64)
    if img.dtype == np.uint8:
        planes = planes.astype(np.uint8)
    # (H, W, C) as a view of the planes: each channel stays contiguous.
    return np.moveaxis(planes, 0, 2) if img.ndim == 3 else planes[0]


def scaled_shape(shape, scale):
    """``(ceil(H * scale), ceil(W * scale))``: the size of :func:`imresize` by ``scale``."""
    return tuple(int(math.ceil(scale * n)) for n in shape[:2])


def modcrop(img, scale):
    """Crop height and width down to multiples of ``scale``, keeping the top-left.

    Parameters
    ----------
    img : ndarray, shape (H, W) or (H, W, C)
        Any dtype; returned as a view with the same dtype.
    scale : int
        Upscaling factor.

    Returns
    -------
    ndarray, shape (H - H % scale, W - W % scale[, C])
    """
    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise ValueError(f"modcrop expects (H, W) or (H, W, C), got shape {img.shape}")
    scale = int(scale)
    h, w = img.shape[:2]
    return img[:h - h % scale, :w - w % scale, ...]


def degrade(label_img, scale):
    """Bicubic down- then up-sampling (MATLAB ``imresize`` twice), the network input.

    Parameters
    ----------
    label_img : ndarray, float64, shape (H, W) or (H, W, C)
        H and W multiples of ``scale`` (see ``modcrop``).
    scale : int

    Returns
    -------
    ndarray, float64, same shape
        Not clipped: bicubic may overshoot [0, 1] slightly, as in MATLAB.
    """
    small = imresize(label_img, scale=1.0 / scale)
    return imresize(small, output_shape=label_img.shape[:2])
