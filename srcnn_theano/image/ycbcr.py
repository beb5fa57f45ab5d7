"""MATLAB-faithful RGB <-> YCbCr (ITU-R BT.601, studio swing), in numpy float64.

Reproduces MATLAB's ``rgb2ycbcr`` / ``ycbcr2rgb`` (Image Processing Toolbox)
bit for bit as far as float64 allows: the same coefficients, pre-scaled the
same way (``T = (1/255) * origT``, not ``origT / 255``), summed left to
right in double (``T1*R + T2*G + T3*B + offset``, our reading of
``imlincomb``, which works element by element in double), and converted
back to integers the way MATLAB casts (round half away from zero,
saturate). The order matters: for 194 of the 2**24 uint8 colours Y is
exactly ``k + 0.5`` in real arithmetic and the double rounding decides.
The published SRCNN numbers are computed on the Y channel produced this way.

Units, by input dtype (as in MATLAB):

* ``uint8``: RGB 0..255 in, YCbCr 0..255 out (Y in 16..235, Cb/Cr in
  16..240), ``uint8``.
* ``uint16``: 0..65535 in and out (offsets times 257), ``uint16``.
* float: RGB in 0..1, YCbCr in 0..1 (``Y = 16/255 .. 235/255``), float64,
  not rounded; ``rgb2ycbcr`` does not clip, ``ycbcr2rgb`` clips to 0..1
  like MATLAB (``clip=False`` turns that off).
"""
import numpy as np

from srcnn_theano.image.loops import lincomb3
from srcnn_theano.image.units import PEAK, matlab_cast, to_float, to_uint8

# ycbcr = ORIG_T @ rgb + ORIG_OFFSET for rgb in [0, 1] and ycbcr in [0, 255].
ORIG_T = np.array([[65.481, 128.553, 24.966],
                   [-37.797, -74.203, 112.0],
                   [112.0, -93.786, -18.214]])
ORIG_OFFSET = np.array([16.0, 128.0, 128.0])
ORIG_T_INV = np.linalg.inv(ORIG_T)

# (scale of T, scale of offset) per class, as in rgb2ycbcr.m / ycbcr2rgb.m.
_FWD_SCALE = {"float": (1 / 255, 1 / 255), "uint8": (1 / 255, 1.0), "uint16": (257 / 65535, 257.0)}
_INV_SCALE = {"float": (255.0, 1.0), "uint8": (255.0, 255.0), "uint16": (65535 / 257, 65535.0)}


def _class(img):
    if img.dtype == np.uint8:
        return "uint8"
    if img.dtype == np.uint16:
        return "uint16"
    if np.issubdtype(img.dtype, np.floating):
        return "float"
    raise TypeError(f"expected uint8, uint16 or float image, got {img.dtype}")


def _to_class(x, cls):
    """MATLAB's cast of double to ``cls`` (:func:`~srcnn_theano.image.units.matlab_cast`)."""
    return x if cls == "float" else matlab_cast(x, cls)


def _lincomb(img, T, offset, cls):
    """``out[..., p] = T[p,0]*c0 + T[p,1]*c1 + T[p,2]*c2 + offset[p]`` in float64 (imlincomb order).

    Summed left to right, each product and sum rounded once (the same
    roundings as the numpy expression), by
    :func:`srcnn_theano.image.loops.lincomb3`, which reads the pixels where
    they are; the result is an (H, W, 3) view of three contiguous planes.
    """
    return _to_class(lincomb3(np.asarray(img, dtype=np.float64), T, offset), cls)


def _inverse(cls):
    """``(T, offset)`` of ``ycbcr2rgb`` for a class: ``rgb = T @ ycbcr + offset``."""
    t_scale, off_scale = _INV_SCALE[cls]
    return t_scale * ORIG_T_INV, -((off_scale * ORIG_T_INV) @ ORIG_OFFSET)


def _check_rgb(img):
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {img.shape}")
    return img


def rgb2ycbcr(img):
    """MATLAB ``rgb2ycbcr``.

    Parameters
    ----------
    img : ndarray, shape (H, W, 3)
        RGB; ``uint8`` (0..255), ``uint16`` (0..65535) or float (0..1).

    Returns
    -------
    ndarray, shape (H, W, 3)
        YCbCr. ``uint8``/``uint16`` for those inputs (rounded half away from
        zero, clipped); float64 in 0..1 scale (Y in 16/255..235/255) for
        float input, not rounded or clipped.
    """
    img = _check_rgb(img)
    cls = _class(img)
    t_scale, off_scale = _FWD_SCALE[cls]
    return _lincomb(img, t_scale * ORIG_T, off_scale * ORIG_OFFSET, cls)


def ycbcr2rgb(img, clip=True):
    """MATLAB ``ycbcr2rgb``, the exact inverse matrix of :func:`rgb2ycbcr`.

    Parameters
    ----------
    img : ndarray, shape (H, W, 3)
        YCbCr; ``uint8`` (0..255), ``uint16`` (0..65535) or float (0..1).
    clip : bool
        Float input only: clip the result to [0, 1] as MATLAB's
        ``ycbcr2rgb`` does (``min(max(rgb, 0), 1)``). ``False`` returns the
        plain linear inverse, with out-of-gamut colours below 0 or above 1.

    Returns
    -------
    ndarray, shape (H, W, 3)
        RGB. ``uint8``/``uint16`` for those inputs (rounded half away from
        zero, saturated); float64 in 0..1 for float input.
    """
    img = _check_rgb(img)
    cls = _class(img)
    out = _lincomb(img, *_inverse(cls), cls)
    if cls == "float" and clip:
        np.clip(out, 0.0, 1.0, out=out)
    return out


def ycbcr2rgb_levels(img, out):
    """``from_float(ycbcr2rgb(img), out.dtype)`` written into ``out``, in one pass.

    Parameters
    ----------
    img : ndarray, float, shape (H, W, 3)
        YCbCr in 0..1, any strides (e.g. a view of planes).
    out : ndarray, uint8 or uint16, shape (H, W, 3)
        Any strides (e.g. a tile's part of an interleaved band); gets the
        RGB levels: clipped to 0..1, scaled, rounded half away from zero
        (:func:`~srcnn_theano.image.units.from_float`), the same values as the
        two steps, without the float RGB in between.

    Returns
    -------
    ``out``
    """
    img = _check_rgb(img)
    if _class(img) != "float" or out.dtype not in PEAK or out.shape != img.shape:
        raise TypeError(f"expected float YCbCr and a uint8/uint16 output of its shape, got "
                        f"{img.dtype} {img.shape} -> {out.dtype} {out.shape}")
    return lincomb3(np.asarray(img, dtype=np.float64), *_inverse("float"), out=out,
                    peak=PEAK[out.dtype])


def rgb2y(img):
    """The Y (luma) channel of :func:`rgb2ycbcr`; grayscale passes through.

    Parameters
    ----------
    img : ndarray, shape (H, W), (H, W, 1|2), (H, W, 3) or (H, W, 4)
        ``uint8``, ``uint16`` or float (0..1). Grayscale ``(H, W)``,
        ``(H, W, 1)`` and gray + alpha ``(H, W, 2)`` give the gray plane as it
        is (2-D), since the SRCNN code uses grayscale images directly; RGBA
        uses the RGB part.

    Returns
    -------
    ndarray, shape (H, W)
        Y in the units of the input: ``uint8`` 16..235, ``uint16`` (times
        257), or float64 16/255..235/255 (not rounded).
    """
    img = np.asarray(img)
    if img.ndim == 2:
        return img
    if img.ndim == 3 and img.shape[2] in (1, 2):  # gray, gray + alpha
        return img[:, :, 0]
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    img = _check_rgb(img)
    cls = _class(img)
    t_scale, off_scale = _FWD_SCALE[cls]
    T = t_scale * ORIG_T
    c = img.astype(np.float64)
    y = T[0, 0] * c[..., 0] + T[0, 1] * c[..., 1] + T[0, 2] * c[..., 2] + off_scale * ORIG_OFFSET[0]
    return _to_class(y, cls)


def y_channel(img):
    """The Y plane SRCNN is trained and evaluated on: the one Y path of the pipeline.

    MATLAB's ``im2double(rgb2ycbcr(img)(:, :, 1))`` on 8-bit images, as the
    authors' ``generate_train.m`` and test code compute it. Patch extraction
    (:mod:`srcnn_theano.patches.extract`) and evaluation
    (:mod:`srcnn_theano.evaluation.protocol`) both call this, so an image
    gives the same Y in training and in evaluation.

    Parameters
    ----------
    img : ndarray, uint8 or uint16, shape (H, W) or (H, W, 1|3|4)
        Grayscale is used as it is; RGBA uses the RGB part. 16-bit images
        are treated like 8-bit ones: Y is computed in 16 bits (MATLAB's
        uint16 ``rgb2ycbcr``) and reduced to 8-bit levels (``im2uint8``), as
        the papers evaluate at 8 bits.

    Returns
    -------
    ndarray, float64, shape (H, W)
        Y in [0, 1] on the 256 levels of uint8 (16/255 .. 235/255 for colour).
    """
    img = np.asarray(img)
    if img.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"expected a uint8 or uint16 image, got {img.dtype}")
    return to_float(to_uint8(rgb2y(img)))
