"""The authors' evaluation protocol (SRCNN_v1 ``demo_SR.m``), step by step.

For each ground-truth image:

1. Y channel of MATLAB's ``rgb2ycbcr`` (uint8); grayscale images as they are
   (:func:`srcnn_theano.image.ycbcr.y_channel`, which training uses too;
   16-bit images are evaluated at 8 bits).
2. ``modcrop`` to a multiple of the scale, then ``im2double`` (float in [0, 1]).
3. MATLAB bicubic down by ``1/scale``, then up by ``scale`` (antialiased).
4. SRCNN on the bicubic image (replicate padding, as ``imfilter``).
5. Ground truth, bicubic and SRCNN quantized to uint8 (``uint8(x * 255)``),
   ``scale`` pixels shaved at each border.
6. PSNR = 20 log10(255 / RMSE) and SSIM (Gaussian 11x11, sigma 1.5) on those
   pixels; means over images are means of the per-image values.
"""
import os
import sys

import numpy as np

from srcnn_theano.errors import SRCNNError
from srcnn_theano.evaluation.metrics import psnr, shave, ssim
from srcnn_theano.image.imresize import degrade, modcrop
from srcnn_theano.image.io import read_image
from srcnn_theano.image.units import from_float
from srcnn_theano.image.ycbcr import y_channel
from srcnn_theano.network.inference import Predictor

METRICS = ("bicubic_psnr", "srcnn_psnr", "bicubic_ssim", "srcnn_ssim")


def ground_truth_y(image, scale):
    """Steps 1-2: uint8/uint16 image -> modcropped Y, float64 (H, W) in [0, 1]."""
    return modcrop(y_channel(image), scale)


def check_size(image, scale, name="image"):
    """Raise :class:`SRCNNError` unless something is left after modcrop and shaving."""
    h, w = image.shape[:2]
    if min(h // scale * scale, w // scale * scale) <= 2 * scale:
        raise SRCNNError(f"{name}: image {h}x{w} is too small for x{scale} "
                         f"(the {scale}-pixel border is shaved)")


def evaluate_image(image, scale, predictor, name="image"):
    """Evaluate one ground-truth image (uint8/uint16, (H, W) or (H, W, 3)).

    Returns
    -------
    dict with ``name``, ``bicubic_psnr``, ``srcnn_psnr``, ``bicubic_ssim``,
    ``srcnn_ssim`` and, under ``"images"`` (not serialised), the uint8
    ground truth, bicubic and SRCNN Y images before shaving.
    """
    check_size(image, scale, name)
    y = ground_truth_y(image, scale)
    bic = degrade(y, scale)
    sr = predictor(bic)
    gt8, bic8, sr8 = from_float(y), from_float(bic), from_float(sr)
    g, b, s = (shave(a, scale) for a in (gt8, bic8, sr8))
    return {"name": name, "bicubic_psnr": psnr(g, b), "srcnn_psnr": psnr(g, s),
            "bicubic_ssim": ssim(g, b), "srcnn_ssim": ssim(g, s),
            "images": {"gt": gt8, "bicubic": bic8, "srcnn": sr8}}


def evaluate_images(images, scale, weights, progress=False):
    """Evaluate ``(name, image)`` pairs with ``weights``; returns the JSON-ready report.

    Parameters
    ----------
    images : list of (str, ndarray)
        Ground-truth images as :func:`srcnn_theano.image.io.read_image` gives them.
    scale : int
    weights : srcnn_theano.network.weights.Weights
    progress : bool
        A tqdm bar on stderr.

    Returns
    -------
    dict ``{"scale", "images": [{name, bicubic_psnr, srcnn_psnr, bicubic_ssim,
    srcnn_ssim}, ...], "mean": {...}}``, PSNR in dB.
    """
    from tqdm import tqdm

    weights.check_scale(scale)
    for name, img in images:  # fail before compiling anything
        check_size(img, scale, name)
    predictor = Predictor(weights)
    rows = []
    for name, img in tqdm(images, desc=f"evaluate x{scale}", unit="img", leave=False,
                          disable=not progress or None, file=sys.stderr):
        row = evaluate_image(img, scale, predictor, name=name)
        row.pop("images")
        rows.append(row)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in METRICS}
    return {"scale": int(scale), "images": rows, "mean": mean}


def evaluate_paths(paths, scale, weights, progress=False):
    """:func:`evaluate_images` on image files, each named by its file name."""
    weights.check_scale(scale)
    return evaluate_images([(os.path.basename(p), read_image(p)) for p in paths], scale, weights,
                           progress)


def format_table(report):
    """A readable text table of an :func:`evaluate_images` report."""
    lines = [f"x{report['scale']}  {'image':<16} {'bicubic PSNR':>12} {'SRCNN PSNR':>11} "
             f"{'bicubic SSIM':>12} {'SRCNN SSIM':>11}"]
    for r in report["images"] + [dict(report["mean"], name="mean")]:
        lines.append(f"     {r['name']:<16} {r['bicubic_psnr']:12.2f} {r['srcnn_psnr']:11.2f} "
                     f"{r['bicubic_ssim']:12.4f} {r['srcnn_ssim']:11.4f}")
    return "\n".join(lines)
