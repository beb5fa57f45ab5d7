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
untiled one. The output comes out one row of tiles at a time
(:func:`upscale_bands`): a PNG is encoded by a thread while the next row is
computed (:func:`srcnn_theano.image.io.image_writer`), so peak memory is the
input, one band and a few tiles; :func:`upscale_image` assembles the array.

Speed on a few cores: the network runs on one tile after another while
threads prepare the next tiles (colour conversion, bicubic) and finish the
last ones (back to RGB, rounding): these stages' C loops
(:mod:`srcnn_theano.image.loops`), the network's band loops and the PNG
encoder all release the GIL, and the network's band threads take fewer
bands while a core is busy with this work.
"""
import collections
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from srcnn_theano.cores import short_idle_spin, usable_cores
from srcnn_theano.errors import OutputExistsError, SRCNNError
from srcnn_theano.files import check_outputs, same_file
from srcnn_theano.image.io import DEFAULT_JPEG_QUALITY, expand_inputs, image_writer, read_photo
from srcnn_theano.image.units import from_float, to_float
from srcnn_theano.image.imresize import imresize
from srcnn_theano.image.ycbcr import rgb2ycbcr, ycbcr2rgb_levels

LR_TILE = 256  #: low-resolution pixels per tile side (x2: the network's 512-pixel tile)
short_idle_spin()  # idle BLAS/OpenMP threads would hold the cores the helper and PNG threads need


def _to_planes(f):
    """Float (h, w[, 2|3|4]) in [0, 1] -> (h, w, C) planes: Y (or gray), then Cb, Cr, alpha."""
    if f.ndim == 2:
        return f[..., None]
    if f.shape[2] == 2:
        return f  # gray + alpha
    planes = rgb2ycbcr(f[..., :3])
    return np.concatenate([planes, f[..., 3:]], axis=2) if f.shape[2] == 4 else planes


def _finish(up, out):
    """Inverse of :func:`_to_planes` into ``out``, the output's pixels (uint8/uint16,
    (h, w[, C])): float planes (h, w, C) back to the image's channels and levels."""
    if out.ndim == 2:
        from_float(up[..., 0], out.dtype, out=out)
    elif up.shape[2] == 2:
        from_float(up, out.dtype, out=out)
    else:
        ycbcr2rgb_levels(up[..., :3], out[..., :3])   # RGB, clipped, rounded: one pass
        if up.shape[2] == 4:
            from_float(up[..., 3], out.dtype, out=out[..., 3])


def _enlarge(lr, scale, window, border):
    """Bicubic stage of one tile: float (h, w, C) low-res planes in [0, 1] -> what the
    network needs and what it completes.

    ``window = (y0, y1, x0, x1)`` is the part of the (h*s, w*s) enlargement
    that is kept; the network reads it plus ``border`` pixels of context on
    each side (as far as the tile reaches).

    Returns
    -------
    keep : float64 (y1-y0, x1-x0, C), the bicubic planes of the window
    context : float32 (H', W'), C-contiguous: plane 0 (Y or gray) of the window and its context
    offset : (int, int), where the window starts in ``context``
    """
    up = imresize(lr, scale)
    up = up.reshape(up.shape[0], up.shape[1], -1)
    hh, ww = up.shape[:2]
    y0, y1, x0, x1 = window
    cy0, cy1 = max(y0 - border, 0), min(y1 + border, hh)
    cx0, cx1 = max(x0 - border, 0), min(x1 + border, ww)
    context = np.ascontiguousarray(up[cy0:cy1, cx0:cx1, 0], dtype=np.float32)
    return up[y0:y1, x0:x1], context, (y0 - cy0, x0 - cx0)


def tiles(h, w, tile, margin):
    """Low-res tiles covering (h, w): ``(y0, y1, x0, x1, top, left, bh, bw)``, row by row.

    ``[y0:y1, x0:x1]`` is the tile with its margin (clipped to the image);
    ``[top:top + bh, left:left + bw]`` is the part it is responsible for.
    """
    tile = tile or max(h, w)
    for top in range(0, h, tile):
        for left in range(0, w, tile):
            yield (max(top - margin, 0), min(top + tile + margin, h),
                   max(left - margin, 0), min(left + tile + margin, w),
                   top, left, min(tile, h - top), min(tile, w - left))


def default_threads():
    """Helper threads for the stages beside the network: one less than the cores this
    process may use, between 1 and 2. On the CPU one keeps up with the network (a tile's
    work beside it is a tenth of the network's single-threaded time); each more holds a
    few tiles' buffers."""
    return max(1, min(2, usable_cores() - 1))


def _upscale_bands(src, scale, predictor, tile, prepare, finish, dtype, threads=None):
    """The pipeline, tile by tile: yields the output's bands of rows (one per row of
    tiles), ``(bh * scale, w * scale[, C])`` of ``dtype``, top to bottom.

    ``prepare(src_tile)`` gives float planes (Y/gray first); ``finish(keep, out)``
    maps the enlarged planes to ``dtype`` and the output's channels, written
    into ``out``, the tile's part of the band. The
    network runs on the tiles in order, in this thread; the other stages
    (prepare and bicubic of the next ``threads`` tiles, finishing the ones
    done) run meanwhile on a thread pool: their C loops and the network's
    band loops (:mod:`srcnn_theano.network.banded_corr`) release the GIL, and
    the band threads share the cores with this work.
    """
    h, w = src.shape[:2]
    border = predictor.model.border
    # LR margin: the bicubic kernel's reach (2 pixels, 3 to be safe) beyond the
    # network's context of `border` HR pixels around the part that is kept.
    margin = 3 + math.ceil(border / scale)
    threads = threads or default_threads()
    grid = list(tiles(h, w, tile, margin))
    channels = () if src.ndim == 2 else src.shape[2:]

    def enlarge(t):
        y0, y1, x0, x1, top, left, bh, bw = t
        oy, ox = (top - y0) * scale, (left - x0) * scale
        return _enlarge(prepare(src[y0:y1, x0:x1]), scale,
                        (oy, oy + bh * scale, ox, ox + bw * scale), border)

    def complete(t, staged, y, band):
        keep, _, (oy, ox) = staged
        _, _, _, _, _, left, bh, bw = t
        keep[..., 0] = y[oy:oy + bh * scale, ox:ox + bw * scale]
        finish(keep, band[:, left * scale:(left + bw) * scale])

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="srcnn-upscale") as pool:
        staged = collections.deque(pool.submit(enlarge, t) for t in grid[:threads])
        band, completing = None, []
        for i, t in enumerate(grid):
            if band is None:
                band = np.empty((t[6] * scale, w * scale) + channels, dtype)
            tile_stages = staged.popleft().result()
            if i + threads < len(grid):
                staged.append(pool.submit(enlarge, grid[i + threads]))
            y = predictor(tile_stages[1])
            completing.append(pool.submit(complete, t, tile_stages, y, band))
            if i + 1 == len(grid) or grid[i + 1][4] != t[4]:   # the row of tiles is done
                for f in completing:
                    f.result()
                yield band
                band, completing = None, []


def upscale_float(planes, scale, predictor, tile=LR_TILE):
    """The tiled pipeline on float planes (h, w, C) in [0, 1] (Y/gray first).

    Returns (h*scale, w*scale, C) float64, not clipped; with ``tile=None``
    in one piece. Used to check that tiling changes nothing.
    """
    def finish(keep, out):
        out[...] = keep

    return np.concatenate(list(_upscale_bands(planes, scale, predictor, tile, lambda a: a,
                                              finish, np.float64)))


def _check_image(image):
    """The array :func:`upscale_bands` accepts, (h, w) for (h, w, 1)."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 3 and image.shape[2] not in (2, 3, 4):
        raise SRCNNError(f"unsupported channel count {image.shape[2]}")
    if min(image.shape[:2]) < 2:
        raise SRCNNError(f"image {image.shape[1]}x{image.shape[0]} is too small to upscale")
    return image


def upscale_bands(image, scale, predictor, tile=LR_TILE, threads=None):
    """Enlarge an image by an integer ``scale``, band by band (see :func:`upscale_image`).

    Yields
    ------
    ndarray, same dtype and channel count as ``image``
        The next ``tile * scale`` rows (fewer at the bottom) of the
        enlargement, ``(rows, w * scale[, C])``, top to bottom; only a band
        or two and a few tiles' float buffers are in memory at a time.
    """
    image = _check_image(image)
    return _upscale_bands(image, scale, predictor, tile,
                          lambda t: _to_planes(to_float(t)),
                          _finish,
                          image.dtype, threads)


def upscale_image(image, scale, predictor, tile=LR_TILE, threads=None):
    """Enlarge an image by an integer ``scale``.

    Parameters
    ----------
    image : ndarray uint8 or uint16, (h, w), (h, w, 3) or (h, w, 4)
    scale : int
    predictor : srcnn_theano.network.inference.Predictor
    tile : int or None
        Low-resolution tile side; ``None`` processes the image at once.
        Only the output image and a few tiles' float buffers are in memory.
    threads : int or None
        Helper threads for the stages beside the network (:func:`default_threads`).

    Returns
    -------
    ndarray, same dtype and channel count, (h * scale, w * scale[, C])
    """
    image = _check_image(image)
    out = np.empty((image.shape[0] * scale, image.shape[1] * scale) + image.shape[2:],
                   dtype=image.dtype)
    top = 0
    for band in upscale_bands(image, scale, predictor, tile, threads):
        out[top:top + len(band)] = band
        top += len(band)
    return out


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


def upscale_files(pairs, scale, weights, tile=LR_TILE, progress=True, quality=DEFAULT_JPEG_QUALITY,
                  force=False):
    """Upscale (input, output) file pairs; bad inputs are collected, not fatal.

    Each output carries its input's ICC profile and EXIF where its format
    holds them (:func:`srcnn_theano.image.io.write_image`); JPEG outputs are
    written at ``quality``. Without ``force`` each output is published
    exclusively (:func:`srcnn_theano.files.publish`): an output another
    process wrote meanwhile stops the run, since that process is writing
    the same files.

    The next photo is read while one is enlarged (two decoded inputs in
    memory at most), and the first while Theano is imported and the
    predictor built: Pillow's decoder releases the GIL.

    Returns
    -------
    list of (input path, error message) for the files that failed.

    Raises
    ------
    OutputExistsError
        An output appeared after :func:`output_paths` checked it; nothing is replaced.
    """
    weights.check_scale(scale)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="srcnn-read") as reader:
        def read(i):   # the next photo is decoded while this one is enlarged
            return reader.submit(read_photo, pairs[i][0]) if i < len(pairs) else None

        ahead = read(0)
        from srcnn_theano.network.inference import Predictor   # imports Theano meanwhile

        predictor = Predictor(weights, tile=None)
        failed = []
        it = enumerate(pairs)
        if progress and len(pairs) > 1:
            from tqdm import tqdm
            it = tqdm(it, total=len(pairs), desc=f"upscale x{scale}", unit="img", disable=None)
        for i, (src, dst) in it:
            photo, ahead = ahead, read(i + 1)
            try:
                image, metadata = photo.result()
                _write_upscaled(image, metadata, dst, scale, predictor, tile,
                                progress and len(pairs) == 1, quality, force)
            except OutputExistsError:
                raise
            except SRCNNError as e:
                failed.append((src, str(e)))
    return failed


def _write_upscaled(image, metadata, dst, scale, predictor, tile, progress, quality, force):
    """One photo enlarged into ``dst``, band by band (see :func:`upscale_files`)."""
    image = _check_image(image)
    shape = (image.shape[0] * scale, image.shape[1] * scale) + image.shape[2:]
    bands = upscale_bands(image, scale, predictor, tile)
    if progress:   # one photo: its rows of tiles
        from tqdm import tqdm
        bands = tqdm(bands, total=-(-image.shape[0] // (tile or image.shape[0])),
                     desc=f"upscale x{scale}", unit="row", disable=None, leave=False)
    with image_writer(dst, shape, image.dtype, metadata, quality, replace=force) as write:
        for band in bands:
            write(band)
