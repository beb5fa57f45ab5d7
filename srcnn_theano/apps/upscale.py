"""Upscaling real images: SRCNN on Y, bicubic on Cb/Cr and alpha.

Unlike :mod:`srcnn_theano.evaluation.protocol`, the input here *is* the low-resolution
image: it is enlarged by ``scale``, nothing is downscaled first.

* Colour (H, W, 3): MATLAB ``rgb2ycbcr`` in floating point, Y enlarged with
  MATLAB bicubic then refined by SRCNN, Cb/Cr enlarged bicubically, back to
  RGB with ``ycbcr2rgb``.
* Grayscale (H, W): the image is the Y channel.
* Alpha (H, W, 4): the colour part as above, alpha bicubic.
* uint16 images stay uint16 (the network sees [0, 1] floats either way).

Memory stays bounded: the whole pipeline runs on tiles of the low-resolution
image with enough margin for the bicubic kernel (2 pixels) and the network's
receptive field, and keeps only each tile's centre, so the result equals the
untiled one. Peak memory is the input, the output and a few tiles.
"""
import math
import os

import numpy as np

from srcnn_theano.errors import SRCNNError
from srcnn_theano.files import check_outputs, same_file
from srcnn_theano.image.io import DEFAULT_JPEG_QUALITY, expand_inputs, read_photo, write_image
from srcnn_theano.image.units import from_float, to_float
from srcnn_theano.image.imresize import imresize
from srcnn_theano.network.inference import Predictor
from srcnn_theano.image.ycbcr import rgb2ycbcr, ycbcr2rgb

LR_TILE = 256  #: low-resolution pixels per tile side (x2: the network's 512-pixel tile)


def _to_planes(f):
    """Float (h, w[, 2|3|4]) in [0, 1] -> (h, w, C) planes: Y (or gray), then Cb, Cr, alpha."""
    if f.ndim == 2:
        return f[..., None]
    if f.shape[2] == 2:
        return f  # gray + alpha
    planes = rgb2ycbcr(f[..., :3])
    return np.concatenate([planes, f[..., 3:]], axis=2) if f.shape[2] == 4 else planes


def _from_planes(up, ndim):
    """Inverse of :func:`_to_planes` for an image of ``ndim`` dimensions (float, not clipped)."""
    if ndim == 2:
        return up[..., 0]
    if up.shape[2] == 2:
        return up
    rgb = ycbcr2rgb(up[..., :3])
    return np.concatenate([rgb, up[..., 3:]], axis=2) if up.shape[2] == 4 else rgb


def _enlarge_planes(lr, scale, predictor, window=None):
    """Float (h, w, C) low-res planes in [0, 1] -> enlarged float planes, SRCNN on plane 0.

    Plane 0 is Y (or gray); the others (Cb, Cr, alpha) are bicubic only.
    ``window = (y0, y1, x0, x1)`` in the (h*s, w*s) enlargement: only that
    part is returned, and the network runs on it plus ``border`` pixels of
    context on each side (as far as the tile reaches), which is all it reads.
    """
    up = imresize(lr, scale)
    up = up.reshape(up.shape[0], up.shape[1], -1)
    hh, ww = up.shape[:2]
    y0, y1, x0, x1 = window or (0, hh, 0, ww)
    b = predictor.model.border
    cy0, cy1, cx0, cx1 = max(y0 - b, 0), min(y1 + b, hh), max(x0 - b, 0), min(x1 + b, ww)
    y = predictor(up[cy0:cy1, cx0:cx1, 0])
    keep = up[y0:y1, x0:x1]
    keep[..., 0] = y[y0 - cy0:y1 - cy0, x0 - cx0:x1 - cx0]
    return keep


def tiles(h, w, tile, margin):
    """Low-res tiles covering (h, w): ``(y0, y1, x0, x1, top, left, bh, bw)``.

    ``[y0:y1, x0:x1]`` is the tile with its margin (clipped to the image);
    ``[top:top + bh, left:left + bw]`` is the part it is responsible for.
    """
    tile = tile or max(h, w)
    for top in range(0, h, tile):
        for left in range(0, w, tile):
            yield (max(top - margin, 0), min(top + tile + margin, h),
                   max(left - margin, 0), min(left + tile + margin, w),
                   top, left, min(tile, h - top), min(tile, w - left))


def _upscale_tiles(src, scale, predictor, tile, prepare, finish, out):
    """The pipeline, tile by tile, into ``out`` (h*scale, w*scale[, C]).

    ``prepare(src_tile)`` gives float planes (Y/gray first); ``finish(up)``
    maps the enlarged planes to ``out``'s dtype and channels.
    """
    h, w = src.shape[:2]
    # LR margin: the bicubic kernel's reach (2 pixels, 3 to be safe) beyond the
    # network's context of `border` HR pixels around the part that is kept.
    margin = 3 + math.ceil(predictor.model.border / scale)
    for y0, y1, x0, x1, top, left, bh, bw in tiles(h, w, tile, margin):
        oy, ox = (top - y0) * scale, (left - x0) * scale
        up = _enlarge_planes(prepare(src[y0:y1, x0:x1]), scale, predictor,
                             (oy, oy + bh * scale, ox, ox + bw * scale))
        out[top * scale:(top + bh) * scale, left * scale:(left + bw) * scale] = finish(up)
    return out


def upscale_float(planes, scale, predictor, tile=LR_TILE):
    """The tiled pipeline on float planes (h, w, C) in [0, 1] (Y/gray first).

    Returns (h*scale, w*scale, C) float64, not clipped; with ``tile=None``
    in one piece. Used to check that tiling changes nothing.
    """
    h, w, c = planes.shape
    out = np.empty((h * scale, w * scale, c))
    same = lambda a: a  # noqa: E731
    return _upscale_tiles(planes, scale, predictor, tile, same, same, out)


def upscale_image(image, scale, predictor, tile=LR_TILE):
    """Enlarge an image by an integer ``scale``.

    Parameters
    ----------
    image : ndarray uint8 or uint16, (h, w), (h, w, 3) or (h, w, 4)
    scale : int
    predictor : srcnn_theano.network.inference.Predictor
    tile : int or None
        Low-resolution tile side; ``None`` processes the image at once.
        Only the output image and one tile's float buffers are in memory.

    Returns
    -------
    ndarray, same dtype and channel count, (h * scale, w * scale[, C])
    """
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 3 and image.shape[2] not in (2, 3, 4):
        raise SRCNNError(f"unsupported channel count {image.shape[2]}")
    if min(image.shape[:2]) < 2:
        raise SRCNNError(f"image {image.shape[1]}x{image.shape[0]} is too small to upscale")
    h, w = image.shape[:2]
    out = np.empty((h * scale, w * scale) + image.shape[2:], dtype=image.dtype)
    return _upscale_tiles(image, scale, predictor, tile,
                          lambda t: _to_planes(to_float(t)),
                          lambda up: from_float(_from_planes(up, image.ndim), image.dtype), out)


def output_paths(inputs, output, force=False):
    """Pair input files with output files, checked before any work (:func:`~srcnn_theano.files.check_outputs`).

    A single input file and an ``output`` that is not an existing folder
    means ``output`` is the file name; otherwise ``output`` is a folder
    (created if missing) and each output keeps its input's name.

    Raises
    ------
    SRCNNError
        An output that is an input (also: the output folder is the input
        folder), an existing output without ``force``, a missing or
        unwritable output folder.
    """
    files = expand_inputs(inputs)
    single = len(inputs) == 1 and not os.path.isdir(inputs[0])
    if single and not os.path.isdir(output):
        pairs = [(files[0], output)]
    else:
        for folder in inputs:
            if os.path.isdir(folder) and same_file(folder, output):
                raise SRCNNError(f"output folder {output} is the input folder: refusing to "
                                 "overwrite the originals (choose another output folder)")
        try:
            os.makedirs(output, exist_ok=True)
        except OSError as e:
            raise SRCNNError(f"cannot create output folder {output}: {e.strerror or e}") from None
        pairs = [(p, os.path.join(output, os.path.basename(p))) for p in files]
    check_outputs([o for _, o in pairs], [i for i, _ in pairs], force)
    return pairs


def upscale_files(pairs, scale, weights, tile=LR_TILE, progress=True, quality=DEFAULT_JPEG_QUALITY):
    """Upscale (input, output) file pairs; bad inputs are collected, not fatal.

    Each output carries its input's ICC profile and EXIF where its format
    holds them (:func:`srcnn_theano.image.io.write_image`); JPEG outputs are
    written at ``quality``.

    Returns
    -------
    list of (input path, error message) for the files that failed.
    """
    weights.check_scale(scale)
    predictor = Predictor(weights, tile=None)
    failed = []
    it = pairs
    if progress and len(pairs) > 1:
        from tqdm import tqdm
        it = tqdm(pairs, desc=f"upscale x{scale}", unit="img", disable=None)
    for src, dst in it:
        try:
            image, metadata = read_photo(src)
            write_image(dst, upscale_image(image, scale, predictor, tile), metadata, quality)
        except SRCNNError as e:
            failed.append((src, str(e)))
    return failed
