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

MATLAB's ``imresize`` extends the image at its borders by mirroring
(``imresize_border='symmetric'``, current MATLAB, the default); the
``imresize.m`` of 2007-2013 replicated the edge pixel (``'replicate'``).
The TPAMI paper's tables were made with the latter: with it, all twelve of
its Set5/Set14 numbers for bicubic and 9-5-5 come out exactly (with the
former, Set5 x4 reads 30.48 instead of 30.49 and Set14 x3 29.29 instead of
29.30).

With LR files (``evaluate --lr``), step 3 is replaced: the LR image's Y
(MATLAB ``rgb2ycbcr``, uint8) is enlarged by MATLAB bicubic to the size of
the modcropped ground truth. Benchmark sets ship such files, and they are
not always MATLAB's ``imresize`` of the HR image.

The SR images themselves (``evaluate --save-dir``, :func:`sr_images`): for a
colour ground truth, SRCNN's Y (or the bicubic Y) with Cb/Cr enlarged
bicubically from the same LR image (float ``rgb2ycbcr``, as ``upscale``
does), back to RGB with ``ycbcr2rgb``, uint8; for a gray one, the Y plane.
Each has the size of the modcropped ground truth.
"""
import os
import sys

import numpy as np

from srcnn_theano.errors import SRCNNError
from srcnn_theano.files import check_outputs
from srcnn_theano.evaluation.metrics import psnr, shave, ssim
from srcnn_theano.evaluation.score import drop_alpha
from srcnn_theano.image.imresize import degrade, imresize, modcrop
from srcnn_theano.image.io import read_image, write_image
from srcnn_theano.image.units import from_float, to_float, to_uint8
from srcnn_theano.image.ycbcr import rgb2ycbcr, y_channel, ycbcr2rgb
from srcnn_theano.network.inference import Predictor

METRICS = ("bicubic_psnr", "srcnn_psnr", "bicubic_ssim", "srcnn_ssim")
IMRESIZE_BORDERS = ("symmetric", "replicate")


def ground_truth_y(image, scale):
    """Steps 1-2: uint8/uint16 image -> modcropped Y, float64 (H, W) in [0, 1]."""
    return modcrop(y_channel(image), scale)


def check_size(image, scale, name="image"):
    """Raise :class:`SRCNNError` unless something is left after modcrop and shaving."""
    h, w = image.shape[:2]
    if min(h // scale * scale, w // scale * scale) <= 2 * scale:
        raise SRCNNError(f"{name}: image {h}x{w} is too small for x{scale} "
                         f"(the {scale}-pixel border is shaved)")


def check_lr(lr, image, scale, lr_name="LR image", name="image"):
    """Raise :class:`SRCNNError` unless ``lr`` is the LR image of ``image`` at ``scale``.

    Its size must be the modcropped ground truth's divided by ``scale``, and
    both must be colour or both gray.
    """
    h, w = (n - n % scale for n in image.shape[:2])
    lh, lw = lr.shape[:2]
    if (lh * scale, lw * scale) != (h, w):
        raise SRCNNError(f"LR image {lr_name} is {lh}x{lw}; x{scale} of the ground truth {name} "
                         f"({h}x{w} after modcrop) needs {h // scale}x{w // scale}")
    kind = lambda a: "gray" if drop_alpha(a).ndim == 2 else "colour"  # noqa: E731
    if kind(lr) != kind(image):
        raise SRCNNError(f"LR image {lr_name} is {kind(lr)}, its ground truth {name} is {kind(image)}")


def resize(img, scale=None, output_shape=None, border="symmetric"):
    """MATLAB bicubic :func:`~srcnn_theano.image.imresize.imresize` with the chosen border rule."""
    if border not in IMRESIZE_BORDERS:
        raise SRCNNError(f"imresize border must be one of {', '.join(IMRESIZE_BORDERS)}, not {border!r}")
    return imresize(img, scale=scale, output_shape=output_shape, padding=border)


def _degrade(img, scale, border):
    if border == "symmetric":
        return degrade(img, scale)
    return resize(resize(img, scale=1.0 / scale, border=border), output_shape=img.shape[:2], border=border)


def bicubic_y(y, scale, lr=None, border="symmetric"):
    """Step 3: the network input, float64 (H, W), from the ground truth's Y or from an LR file.

    Parameters
    ----------
    y : ndarray float64 (H, W), the modcropped ground-truth Y in [0, 1]
    scale : int
    lr : ndarray uint8/uint16 (h, w[, C]) or None
        The LR image (h = H / scale); ``None`` degrades ``y`` (MATLAB bicubic down, up).
    border : {'symmetric', 'replicate'}
        ``imresize``'s border rule (see the module docstring).

    Returns
    -------
    ndarray float64 (H, W), not clipped.
    """
    if lr is None:
        return _degrade(y, scale, border)
    return resize(y_channel(drop_alpha(lr)), output_shape=y.shape, border=border)


def evaluate_image(image, scale, predictor, name="image", lr=None, lr_name="LR image",
                   outputs=False, imresize_border="symmetric"):
    """Evaluate one ground-truth image (uint8/uint16, (H, W) or (H, W, 3)).

    Parameters
    ----------
    image : ndarray uint8/uint16, (H, W) or (H, W, 2|3|4)
    scale : int
    predictor : srcnn_theano.network.inference.Predictor
    name : str
    lr, lr_name : ndarray uint8/uint16 (H / scale, W / scale[, C]) or None, str
        The LR image from a file instead of the degraded ground truth (:func:`bicubic_y`).
    outputs : bool
        Also return the SR images (:func:`sr_images`) under ``"outputs"``.
    imresize_border : {'symmetric', 'replicate'}
        MATLAB ``imresize``'s border rule (see the module docstring).

    Returns
    -------
    dict with ``name``, ``bicubic_psnr``, ``srcnn_psnr``, ``bicubic_ssim``,
    ``srcnn_ssim`` and, under ``"images"`` (not serialised), the uint8
    ground truth, bicubic and SRCNN Y images (H, W) before shaving.
    """
    y, bic = network_input(image, scale, name, lr, lr_name, imresize_border)
    sr = predictor(bic)
    gt8, bic8, sr8 = from_float(y), from_float(bic), from_float(sr)
    g, b = shave(gt8, scale), shave(bic8, scale)
    row = {"name": name, "bicubic_psnr": psnr(g, b), "bicubic_ssim": ssim(g, b),
           **srcnn_scores(gt8, sr8, scale), "images": {"gt": gt8, "bicubic": bic8, "srcnn": sr8}}
    if outputs:
        row["outputs"] = sr_images(image, scale, bic, sr, lr, imresize_border)
    return row


def network_input(image, scale, name="image", lr=None, lr_name="LR image",
                  imresize_border="symmetric"):
    """The checked ground truth's Y and the bicubic Y the network enlarges (what
    :func:`evaluate_image` starts from; the same for every model at one scale).

    Returns
    -------
    y, bic : ndarray float64 (H, W) in [0, 1] (``bic`` not clipped), H and W modcropped.
    """
    check_size(image, scale, name)
    if lr is not None:
        check_lr(lr, image, scale, lr_name, name)
    y = ground_truth_y(image, scale)
    return y, bicubic_y(y, scale, lr, imresize_border)


def srcnn_scores(gt8, sr8, scale):
    """``{"srcnn_psnr", "srcnn_ssim"}`` of the uint8 Y images (H, W), ``scale`` pixels shaved."""
    g, s = shave(gt8, scale), shave(sr8, scale)
    return {"srcnn_psnr": psnr(g, s), "srcnn_ssim": ssim(g, s)}


def sr_images(image, scale, bic, sr, lr=None, border="symmetric"):
    """The bicubic and SRCNN images of a ground truth, as files hold them.

    Parameters
    ----------
    image : ndarray uint8/uint16, (H, W[, C]), the ground truth
    scale : int
    bic, sr : ndarray float (H', W'), bicubic and SRCNN Y in [0, 1] (H', W' modcropped)
    lr : ndarray uint8/uint16 or None
        The LR image the Y planes came from (its Cb/Cr are used), or ``None``
        (the ground truth's Cb/Cr degraded like its Y).
    border : {'symmetric', 'replicate'}
        ``imresize``'s border rule for Cb/Cr, as for Y.

    Returns
    -------
    dict ``{"srcnn", "bicubic"}`` of uint8 arrays (H', W', 3) for a colour
    ground truth, (H', W') for a gray one.
    """
    image = drop_alpha(image)
    if image.ndim == 2:
        return {"srcnn": from_float(sr), "bicubic": from_float(bic)}
    hr = modcrop(to_float(to_uint8(image)), scale)
    if lr is None:
        cbcr = _degrade(rgb2ycbcr(hr)[:, :, 1:], scale, border)
    else:
        cbcr = resize(rgb2ycbcr(to_float(to_uint8(drop_alpha(lr))))[:, :, 1:], output_shape=hr.shape[:2],
                      border=border)

    def colour(y):
        return from_float(ycbcr2rgb(np.dstack([np.asarray(y, dtype=np.float64), cbcr])))

    return {"srcnn": colour(sr), "bicubic": colour(bic)}


def save_paths(save_dir, names):
    """``{name: (SRCNN path, bicubic path)}``: ``save_dir/SRCNN/<stem>.png``, ``save_dir/bicubic/<stem>.png``.

    Raises :class:`SRCNNError` when two images would be saved under one name.
    """
    out, seen = {}, {}
    for name in names:
        stem = os.path.splitext(os.path.basename(name))[0]
        if stem in seen:
            raise SRCNNError(f"{seen[stem]} and {name} would both be saved as {stem}.png in {save_dir}")
        seen[stem] = name
        out[name] = tuple(os.path.join(save_dir, sub, f"{stem}.png") for sub in ("SRCNN", "bicubic"))
    return out


def evaluate_images(images, scale, weights, progress=False, lr_images=None, save_dir=None,
                    imresize_border="symmetric", force=False):
    """Evaluate ``(name, image)`` pairs with ``weights``; returns the JSON-ready report.

    Parameters
    ----------
    images : list of (str, ndarray)
        Ground-truth images as :func:`srcnn_theano.image.io.read_image` gives them.
    scale : int
    weights : srcnn_theano.network.weights.Weights
    progress : bool
        A tqdm bar on stderr.
    lr_images : list of (str, ndarray) or None
        The LR image of each ground truth, in the same order (``evaluate --lr``).
    save_dir : str or None
        Also write the SR images: ``save_dir/SRCNN/<stem>.png`` and
        ``save_dir/bicubic/<stem>.png`` (:func:`sr_images`).
    force : bool
        Replace existing files in ``save_dir`` (:func:`srcnn_theano.files.check_outputs`);
        without it each image is published exclusively (:func:`srcnn_theano.files.publish`).
    imresize_border : {'symmetric', 'replicate'}
        MATLAB ``imresize``'s border rule (see the module docstring).

    Returns
    -------
    dict ``{"scale", "images": [{name, bicubic_psnr, srcnn_psnr, bicubic_ssim,
    srcnn_ssim}, ...], "mean": {...}}``, PSNR in dB.
    """
    from tqdm import tqdm

    weights.check_scale(scale)
    resize(np.zeros((4, 4)), scale=0.5, border=imresize_border)   # a bad border fails here
    if lr_images is not None and len(lr_images) != len(images):
        raise SRCNNError(f"{len(lr_images)} LR images for {len(images)} ground-truth images")
    lrs = lr_images or [(None, None)] * len(images)
    for (name, img), (lr_name, lr) in zip(images, lrs):  # fail before compiling anything
        check_size(img, scale, name)
        if lr is not None:
            check_lr(lr, img, scale, lr_name, name)
    targets = save_paths(save_dir, [n for n, _ in images]) if save_dir else {}
    for sub in ("SRCNN", "bicubic") if save_dir else ():
        try:
            os.makedirs(os.path.join(save_dir, sub), exist_ok=True)
        except OSError as e:
            raise SRCNNError(f"cannot create {os.path.join(save_dir, sub)}: {e.strerror or e}") from None
    check_outputs([p for pair in targets.values() for p in pair], force=force)
    predictor = Predictor(weights)
    rows = []
    for (name, img), (lr_name, lr) in tqdm(list(zip(images, lrs)), desc=f"evaluate x{scale}",
                                           unit="img", leave=False, disable=not progress or None,
                                           file=sys.stderr):
        row = evaluate_image(img, scale, predictor, name=name, lr=lr, lr_name=lr_name,
                             outputs=bool(save_dir), imresize_border=imresize_border)
        row.pop("images")
        if save_dir:
            out = row.pop("outputs")
            write_image(targets[name][0], out["srcnn"], replace=force)
            write_image(targets[name][1], out["bicubic"], replace=force)
        rows.append(row)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in METRICS}
    return {"scale": int(scale), "images": rows, "mean": mean}


def evaluate_paths(paths, scale, weights, progress=False, lr_paths=None, save_dir=None,
                   imresize_border="symmetric", force=False):
    """:func:`evaluate_images` on image files, each named by its file name.

    ``lr_paths``: the LR file of each ground truth (same order), or ``None``.
    Saved images never replace an input, even with ``force``.
    """
    weights.check_scale(scale)
    if save_dir:  # never an input, even with force (the folders may not exist yet)
        outputs = [p for pair in save_paths(save_dir, paths).values() for p in pair]
        check_outputs([o for o in outputs if os.path.lexists(o)], list(paths) + list(lr_paths or []),
                      force=True)
    lr_images = None if lr_paths is None else [(p, read_image(p)) for p in lr_paths]
    return evaluate_images([(os.path.basename(p), read_image(p)) for p in paths], scale, weights,
                           progress, lr_images=lr_images, save_dir=save_dir,
                           imresize_border=imresize_border, force=force)


def format_table(report):
    """A readable text table of an :func:`evaluate_images` report."""
    lines = [f"x{report['scale']}  {'image':<16} {'bicubic PSNR':>12} {'SRCNN PSNR':>11} "
             f"{'bicubic SSIM':>12} {'SRCNN SSIM':>11}"]
    for r in report["images"] + [dict(report["mean"], name="mean")]:
        lines.append(f"     {r['name']:<16} {r['bicubic_psnr']:12.2f} {r['srcnn_psnr']:11.2f} "
                     f"{r['bicubic_ssim']:12.4f} {r['srcnn_ssim']:11.4f}")
    return "\n".join(lines)
