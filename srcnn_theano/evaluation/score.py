"""Scoring any method's SR images against the ground truth, under three protocols.

Why three: the SRCNN numbers that super-resolution papers print differ by a
tenth of a dB and more because they are computed differently. Each protocol
here follows one source exactly.

``matlab`` (default): the authors' test code (SRCNN_v1 ``demo_SR.m``)
    The HR image is modcropped to a multiple of the scale; both images go to
    Y with MATLAB ``rgb2ycbcr``, rounded to uint8
    (:func:`srcnn_theano.image.ycbcr.y_channel`; grayscale used as it is);
    ``scale`` pixels are shaved; PSNR = 20 log10(255 / RMSE) and SSIM as
    ``evaluate`` computes them (:mod:`srcnn_theano.evaluation.metrics`).
    The SR image must have the size of the modcropped HR image (or of the
    HR image itself, then cropped the same way). An SR image in gray for a
    colour ground truth is taken as its Y; a colour one for a gray ground
    truth must have three equal channels.
``basicsr``: BasicSR's ``calculate_psnr`` / ``calculate_ssim`` with ``crop_border=scale, test_y_channel=True``
    (``basicsr/metrics/psnr_ssim.py``, ``metric_util.to_y_channel``,
    ``utils/color_util.bgr2ycbcr``). Files are read as BasicSR's loaders read
    them (``cv2.IMREAD_COLOR``: a gray file becomes three equal channels).
    Y = 16 + 65.481 R + 128.553 G + 24.966 B on inputs in [0, 1], computed as
    BasicSR does (float32 inputs, float64 products, result stored as float32,
    times 255): in [16, 235], not rounded. The SR image has the ground
    truth's size, or that size rounded down to a multiple of the scale (an
    LR image's size times the scale); then the ground truth is cropped to it,
    keeping the top-left, as BasicSR's ``PairedImageDataset`` crops the GT to
    the LR size times the scale before it measures (``benchmark`` does the
    same). Any other size is an error. PSNR = 10 log10(255^2 / MSE)
    in float64; SSIM is BasicSR's own (OpenCV 11x11 Gaussian window, sigma
    1.5, 'valid' crop), not scikit-image's.
``rgb``: PSNR over the three RGB channels
    uint8 values, the HR image modcropped as in ``matlab``, ``scale`` pixels
    shaved, PSNR = 20 log10(255 / RMSE) over all three channels together
    (gray images count as three equal channels, as EDSR's loaders make
    them); SSIM is ``evaluate``'s, averaged over the three channels.

16-bit images are scored at 8 bits (``im2uint8``) and alpha channels are
dropped, under every protocol.
"""
import os

import numpy as np

from srcnn_theano.errors import SRCNNError
from srcnn_theano.evaluation import metrics
from srcnn_theano.evaluation.metrics import shave as shave_border
from srcnn_theano.evaluation.pairing import pair
from srcnn_theano.image.imresize import modcrop
from srcnn_theano.image.io import list_images, read_image
from srcnn_theano.image.units import from_float, to_uint8
from srcnn_theano.image.ycbcr import y_channel

PROTOCOLS = ("matlab", "basicsr", "rgb")
PROTOCOL_CAPTIONS = {
    "matlab": "Y channel (MATLAB rgb2ycbcr, uint8), HR modcropped, `scale` pixels shaved, "
              "PSNR 20 log10(255/RMSE), SSIM Gaussian 11x11 (the authors' test code)",
    "basicsr": "Y channel in float (16 + 65.481 R + 128.553 G + 24.966 B on [0, 1], not rounded), "
               "`scale` pixels cropped, BasicSR's calculate_psnr / calculate_ssim",
    "rgb": "RGB channels (uint8), HR modcropped, `scale` pixels shaved, PSNR over all three "
           "channels, SSIM averaged over them",
}


def drop_alpha(img):
    """(H, W, 2) gray + alpha -> (H, W); (H, W, 4) RGBA -> (H, W, 3); others unchanged."""
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] in (2, 4):
        return img[:, :, 0] if img.shape[2] == 2 else img[:, :, :3]
    if img.ndim == 3 and img.shape[2] == 1:
        return img[:, :, 0]
    return img


def as_rgb(img):
    """uint8 (H, W, 3) of a uint8/uint16 image: 8 bits, no alpha, gray as three equal channels."""
    img = to_uint8(drop_alpha(img))
    return np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img


def basicsr_y(img):
    """BasicSR's ``to_y_channel`` of an image file's pixels: float64 (H, W) in [16, 235].

    Parameters
    ----------
    img : ndarray, uint8 or uint16, (H, W[, C])
        As :func:`srcnn_theano.image.io.read_image` gives it (RGB order).

    Returns
    -------
    ndarray, float64, (H, W)
        ``(img / 255)`` in float32, ``bgr2ycbcr(y_only=True)`` (dot product
        of the float32 BGR values with [24.966, 128.553, 65.481] in float64,
        + 16, / 255, stored as float32), times 255 in float32.
    """
    bgr = as_rgb(img)[:, :, ::-1]
    x = bgr.astype(np.float32) / np.float32(255.0)      # to_y_channel: img.astype(float32) / 255.
    x = x.astype(np.float32)                             # _convert_input_type_range (float32 in)
    y = np.dot(x, [24.966, 128.553, 65.481]) + 16.0      # float64
    y = (y / 255.0).astype(np.float32)                   # _convert_output_type_range (float32 out)
    return (y * np.float32(255.0)).astype(np.float64)    # to_y_channel: * 255.


def matlab_y(img):
    """The authors' Y: uint8 (H, W), MATLAB ``rgb2ycbcr`` rounded; gray as it is."""
    return from_float(y_channel(drop_alpha(img)))


def _size_error(sr_name, sr, hr_name, want, why):
    return SRCNNError(f"SR image {sr_name} is {sr.shape[0]}x{sr.shape[1]}; the ground truth "
                      f"{hr_name} needs {want[0]}x{want[1]} ({why})")


def _aligned(hr, sr, scale, protocol, hr_name, sr_name):
    """HR and SR cropped to the protocol's size (uint8/uint16 arrays, alpha dropped)."""
    hr, sr = drop_alpha(hr), drop_alpha(sr)
    cropped = modcrop(hr, scale)
    if protocol == "basicsr":
        if sr.shape[:2] == hr.shape[:2]:
            return hr, sr
        if sr.shape[:2] != cropped.shape[:2]:
            raise _size_error(sr_name, sr, hr_name, hr.shape,
                              f"basicsr: or {cropped.shape[0]}x{cropped.shape[1]}, its size rounded "
                              f"down to a multiple of {scale}")
        return cropped, sr
    if sr.shape[:2] == hr.shape[:2]:
        sr = modcrop(sr, scale)
    elif sr.shape[:2] != cropped.shape[:2]:
        raise _size_error(sr_name, sr, hr_name, cropped.shape,
                          f"{protocol}: the HR image modcropped to a multiple of {scale}")
    return cropped, sr


def score_images(hr, sr, scale, protocol="matlab", shave=None, hr_name="HR", sr_name="SR"):
    """PSNR and SSIM of one SR image against its ground truth.

    Parameters
    ----------
    hr, sr : ndarray, uint8 or uint16, (H, W), (H, W, 2|3|4)
        As :func:`srcnn_theano.image.io.read_image` gives them.
    scale : int
        Upscaling factor (modcrop, and the default shave).
    protocol : {'matlab', 'basicsr', 'rgb'}
        See the module docstring.
    shave : int or None
        Pixels dropped at each border; ``None`` is ``scale``.
    hr_name, sr_name : str
        For messages.

    Returns
    -------
    dict ``{"psnr": float (dB), "ssim": float}``

    Raises
    ------
    SRCNNError
        Wrong size, mismatched channels, nothing left after shaving.
    """
    if protocol not in PROTOCOLS:
        raise SRCNNError(f"unknown protocol {protocol!r}; protocols: {', '.join(PROTOCOLS)}")
    scale = int(scale)
    border = scale if shave is None else int(shave)
    if border < 0:
        raise SRCNNError(f"shave must be >= 0, not {border}")
    hr, sr = _aligned(hr, sr, scale, protocol, hr_name, sr_name)
    h, w = hr.shape[:2]
    least = 2 * border + metrics.BASICSR_WINDOW  # both SSIMs use an 11x11 window
    if min(h, w) < least:
        raise SRCNNError(f"{hr_name}: image {h}x{w} is too small for x{scale} under {protocol} "
                         f"({border} pixels shaved at each border)")
    if protocol == "matlab":
        if hr.ndim == 2 and sr.ndim == 3:
            if not (np.all(sr[:, :, 0] == sr[:, :, 1]) and np.all(sr[:, :, 0] == sr[:, :, 2])):
                raise SRCNNError(f"SR image {sr_name} is in colour; its ground truth {hr_name} is gray")
            sr = sr[:, :, 0]
        a, b = (shave_border(matlab_y(x), border) for x in (hr, sr))
        return {"psnr": metrics.psnr(a, b), "ssim": metrics.ssim(a, b)}
    if protocol == "basicsr":
        a, b = (shave_border(basicsr_y(x), border) for x in (hr, sr))
        return {"psnr": metrics.psnr_basicsr(a, b), "ssim": metrics.ssim_basicsr(a, b)}
    a, b = (shave_border(as_rgb(x), border) for x in (hr, sr))
    return {"psnr": metrics.psnr(a, b),
            "ssim": float(np.mean([metrics.ssim(a[:, :, c], b[:, :, c]) for c in range(3)]))}


def score_paths(hr_paths, sr_paths, scale, protocol="matlab", shave=None):
    """:func:`score_images` on paired files; returns the report (see :func:`score_folder`)."""
    rows = []
    for hr_path, sr_path in zip(hr_paths, sr_paths):
        s = score_images(read_image(hr_path), read_image(sr_path), scale, protocol, shave,
                         hr_name=os.path.basename(hr_path), sr_name=sr_path)
        rows.append({"name": os.path.basename(hr_path), **s})
    if not rows:
        raise SRCNNError("no images to score")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("psnr", "ssim")}
    return {"scale": int(scale), "protocol": protocol, "shave": int(scale if shave is None else shave),
            "images": rows, "mean": mean}


def score_folder(hr_paths, sr_dir, scale, protocol="matlab", shave=None):
    """Score the SR images of a folder, each paired by name with its HR image.

    Parameters
    ----------
    hr_paths : list of str
        Ground-truth files (:func:`srcnn_theano.evaluation.datasets.hr_inputs`).
    sr_dir : str
        Folder of SR images, paired by :mod:`srcnn_theano.evaluation.pairing`.
    scale, protocol, shave : see :func:`score_images`

    Returns
    -------
    dict ``{"scale", "protocol", "shave", "images": [{"name", "psnr", "ssim"}],
    "mean": {"psnr", "ssim"}}``; ``name`` is the HR file's name, PSNR in dB.
    """
    if protocol not in PROTOCOLS:
        raise SRCNNError(f"unknown protocol {protocol!r}; protocols: {', '.join(PROTOCOLS)}")
    candidates = list_images(sr_dir)
    if not candidates:
        raise SRCNNError(f"no images in folder: {sr_dir}")
    return score_paths(hr_paths, pair(hr_paths, candidates, "SR", sr_dir), scale, protocol, shave)


def format_score_table(report):
    """A readable text table of a :func:`score_folder` report."""
    lines = [f"x{report['scale']}, protocol {report['protocol']}, {report['shave']} px shaved",
             f"  {'image':<28} {'PSNR':>8} {'SSIM':>8}"]
    for r in report["images"] + [dict(report["mean"], name="mean")]:
        lines.append(f"  {r['name']:<28} {r['psnr']:8.2f} {r['ssim']:8.4f}")
    return "\n".join(lines)
