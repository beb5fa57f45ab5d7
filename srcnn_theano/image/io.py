"""Reading and writing image files: arrays, orientation, metadata, size limits.

Arrays returned here are ``(H, W)`` for grayscale, ``(H, W, 2)`` for
gray + alpha, and ``(H, W, 3|4)`` for RGB(A), dtype ``uint8`` or ``uint16``
exactly as stored. Palette images come back as RGB(A). Conversions to and
from 0-1 floats are in :mod:`srcnn_theano.image.units`.

Real photographs
----------------
* The EXIF orientation is applied on reading (``ImageOps.exif_transpose``):
  the array is upright, and the EXIF carried to an output says so.
* :func:`read_photo` also returns the file's :class:`Metadata`: the ICC
  colour profile and the EXIF block. :func:`write_image` writes the ICC
  profile into PNG, JPEG, TIFF and WebP outputs, and the EXIF into PNG,
  JPEG and WebP ones, with its pixel-size fields set to the output's size
  and no orientation tag. Other formats, and 16-bit colour TIFF (written
  by OpenCV), get no metadata.
* Animated GIFs, multi-page TIFFs and the like: the first frame is used,
  with a ``note:`` on stderr.
* JPEG is written at quality :data:`DEFAULT_JPEG_QUALITY` (95) with 4:4:4
  chroma (no subsampling) unless told otherwise, not Pillow's 75 / 4:2:0.

Size limit
----------
Images over :data:`DEFAULT_PIXEL_LIMIT` pixels (width x height, 100
million: decoding one takes 0.3 GB for RGB at 8 bits, and upscaling it
many times that) are refused with :class:`SRCNNError` from the file's
header, before anything is decoded; ``--max-pixels`` on every command line
(:func:`set_pixel_limit`) raises or lowers it. Pillow's own
decompression-bomb check is replaced by this one.

Writing is atomic (:mod:`srcnn_theano.files`): the file appears complete
under its name or not at all. PNG files are encoded by
:mod:`srcnn_theano.image.png` (also from bands of rows, :func:`image_writer`),
every other format by Pillow.
"""
import contextlib
import os
import sys
import warnings
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from srcnn_theano.errors import SRCNNError
from srcnn_theano.files import atomic_output
from srcnn_theano.image.png import PNGWriter

IMAGE_EXTENSIONS = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".webp", ".ppm", ".pgm")
DEFAULT_PIXEL_LIMIT = 100_000_000
DEFAULT_JPEG_QUALITY = 95
_ICC_FORMATS = ("PNG", "JPEG", "TIFF", "WEBP")
_EXIF_FORMATS = ("PNG", "JPEG", "WEBP")
_pixel_limit = DEFAULT_PIXEL_LIMIT
# Pillow's decompression-bomb check (a warning, then an exception of its own at 2x) is replaced
# by the limit read_photo applies from the header; for every Pillow user in this process.
Image.MAX_IMAGE_PIXELS = None


def set_pixel_limit(pixels):
    """Set the largest image (width x height) :func:`read_image` accepts; ``None`` for the default."""
    global _pixel_limit
    if pixels is not None and pixels < 1:
        raise SRCNNError(f"--max-pixels must be positive, not {pixels}")
    _pixel_limit = DEFAULT_PIXEL_LIMIT if pixels is None else int(pixels)


class Metadata(NamedTuple):
    """What a photograph carries besides its pixels.

    Attributes
    ----------
    icc_profile : bytes or None
        The embedded ICC colour profile.
    exif : PIL.Image.Exif or None
        The EXIF tags (orientation already applied and removed).
    """

    icc_profile: bytes = None
    exif: object = None


def list_images(folder):
    """Image files directly inside ``folder``, sorted by name (never ``os.listdir`` order)."""
    if not os.path.isdir(folder):
        raise SRCNNError(f"not a folder: {folder}")
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    return [os.path.join(folder, n) for n in names]


def expand_inputs(paths):
    """Files and folders (expanded with :func:`list_images`) as one sorted-per-folder list."""
    out = []
    for p in paths:
        if os.path.isdir(p):
            found = list_images(p)
            if not found:
                raise SRCNNError(f"no images in folder: {p}")
            out.extend(found)
        else:
            out.append(p)
    return out


def read_image(path):
    """Read an image file (see :func:`read_photo`); returns only the array."""
    return read_photo(path)[0]


def read_photo(path):
    """Read an image file, upright, with its metadata.

    Returns
    -------
    image : ndarray, uint8 or uint16, shape (H, W), (H, W, 2) or (H, W, 3|4)
        Grayscale stays 2-D, gray + alpha is (H, W, 2); palette images are
        converted to RGB (RGBA when they carry transparency); 16-bit PNG/TIFF
        keep 16 bits. The EXIF orientation is applied.
    metadata : Metadata

    Raises
    ------
    SRCNNError
        Missing, empty, truncated, too large or non-image files; unsupported
        pixel types. Always one line naming the file.
    """
    if not os.path.exists(path):
        raise SRCNNError(f"no such file: {path}")
    if os.path.isdir(path):
        raise SRCNNError(f"is a folder, not an image: {path}")
    if os.path.getsize(path) == 0:
        raise SRCNNError(f"empty file: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                _check_header(im, path)
                frames = getattr(im, "n_frames", 1)
                if frames > 1:
                    print(f"note: {path} has {frames} frames; using the first", file=sys.stderr)
                im.load()
                icc = im.info.get("icc_profile") or None
                ImageOps.exif_transpose(im, in_place=True)   # no copy of an upright image
                exif = im.getexif()
                exif.pop(0x0112, None)  # orientation: applied
                arr = _to_array(im, path)
    except SRCNNError:
        raise
    except _READ_ERRORS as e:
        raise SRCNNError(f"cannot read image {path}: {e}") from None
    return arr, Metadata(icc, exif if len(exif) else None)


# What Pillow raises for files it cannot decode.
_READ_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, TypeError, KeyError,
                IndexError, EOFError, Image.DecompressionBombError, MemoryError)


def _check_header(im, path):
    """What the header alone rules out: too many pixels, floating-point pixels."""
    w, h = im.size
    if w * h > _pixel_limit:
        raise SRCNNError(f"{path}: {w}x{h} is {w * h / 1e6:.1f} million pixels, over "
                         f"the limit of {_pixel_limit / 1e6:g} million (--max-pixels raises it)")
    if im.mode == "F":
        raise SRCNNError(f"unsupported floating-point image: {path}")


def image_size(path):
    """``(H, W)`` of the array :func:`read_photo` would return (EXIF orientation applied),
    from the file's header alone (no decoding: tens of microseconds).

    Raises
    ------
    SRCNNError
        What :func:`read_photo` can tell from the header: a file Pillow cannot
        open, too many pixels, floating-point pixels. A file whose header opens
        may still fail to decode in :func:`read_photo`.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                _check_header(im, path)
                w, h = im.size
                if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):   # exif_transpose turns it
                    h, w = w, h
    except _READ_ERRORS as e:
        raise SRCNNError(f"cannot read image {path}: {e}") from None
    return h, w


def _to_array(im, path):
    """A decoded Pillow image -> uint8/uint16 array in the layouts of :func:`read_photo`."""
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA" or mode == "RGBa":
        im = im.convert("RGBA")
    elif mode == "La":
        im = im.convert("LA")
    elif mode == "1":
        im = im.convert("L")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        im = im.convert("RGB")
    elif mode.startswith("I;16"):
        return np.array(im, dtype=np.uint16)
    elif mode == "I":
        arr = np.array(im)
        if arr.min() < 0 or arr.max() > 65535:
            raise SRCNNError(f"unsupported 32-bit integer image: {path}")
        return arr.astype(np.uint16)
    arr = np.array(im)
    if arr.dtype not in (np.uint8, np.uint16) or arr.ndim not in (2, 3):
        raise SRCNNError(f"unsupported pixel type {arr.dtype} {arr.shape} in {path}")
    return arr


def write_image(path, arr, metadata=None, quality=DEFAULT_JPEG_QUALITY, replace=True):
    """Write ``arr`` atomically (:mod:`srcnn_theano.files`); the format follows the extension.

    Parameters
    ----------
    path : str
    arr : ndarray, uint8 or uint16, (H, W), (H, W, 2) or (H, W, 3|4)
    metadata, quality, replace
        As for :func:`image_writer`.

    Raises
    ------
    SRCNNError
        As :func:`image_writer`.
    """
    with image_writer(path, arr.shape, arr.dtype, metadata, quality, replace) as write:
        write(arr)


@contextlib.contextmanager
def image_writer(path, shape, dtype, metadata=None, quality=DEFAULT_JPEG_QUALITY, replace=True):
    """Write an image given as bands of rows, top to bottom; yields ``write(rows)``.

    PNG is encoded while the bands come (:class:`srcnn_theano.image.png.PNGWriter`,
    compressed by a thread), so a caller that computes the image band by
    band never holds all of it; other formats are collected into one array
    and saved by Pillow when the block ends. Everything that can be checked
    is checked here, before the first band. The file appears (atomically)
    only if the block ends normally with every row written.

    Parameters
    ----------
    path : str
    shape : tuple
        The whole image's shape: (H, W), (H, W, 2) or (H, W, 3|4).
    dtype : numpy dtype
        ``uint8`` or ``uint16``.
    metadata : Metadata or None
        ICC profile and EXIF to carry (see the module docstring for which
        formats hold them); EXIF size fields are set to the image's size.
    quality : int
        JPEG / WebP quality, 1..100; JPEG is written with 4:4:4 chroma.
    replace : bool
        False: the file is published exclusively, never over an existing
        one (:func:`srcnn_theano.files.publish`); True: over it.

    Yields
    ------
    write : callable
        ``write(rows)``: the next rows, ``(n, W[, C])`` of ``dtype``.

    Raises
    ------
    SRCNNError
        Unknown extension; a format that cannot hold the image (JPEG with
        alpha, 16 bits other than PNG/TIFF) rather than silently changing it;
        writing failed. :class:`~srcnn_theano.errors.OutputExistsError` when
        ``path`` appeared meanwhile and ``replace`` is False.
    """
    ext = os.path.splitext(path)[1].lower()
    if not ext:
        raise SRCNNError(f"output needs an image extension (.png, .jpg, ...): {path}")
    fmt = Image.registered_extensions().get(ext)
    if fmt is None:
        raise SRCNNError(f"unknown image extension {ext}: {path}")
    if not 1 <= int(quality) <= 100:
        raise SRCNNError(f"--quality must be in 1..100, not {quality}")
    shape, dtype = tuple(int(n) for n in shape), np.dtype(dtype)
    alpha = len(shape) == 3 and shape[2] in (2, 4)
    if fmt == "JPEG" and alpha:
        raise SRCNNError(f"JPEG cannot store an alpha channel: {path}")
    if dtype == np.uint16 and fmt not in ("PNG", "TIFF"):
        raise SRCNNError(f"16-bit images can only be written as PNG or TIFF, not {ext}: {path}")
    icc = exif = None
    if metadata is not None:
        if metadata.icc_profile and fmt in _ICC_FORMATS:
            icc = metadata.icc_profile
        if metadata.exif is not None and fmt in _EXIF_FORMATS:
            exif = _exif_for(metadata.exif, shape[1], shape[0])
    with atomic_output(path, suffix=ext, replace=replace) as tmp:
        if fmt == "PNG":
            with open(tmp, "wb") as f, PNGWriter(f, shape, dtype, icc, exif) as png:
                yield png.write
            return
        arr = np.empty(shape, dtype)
        filled = 0

        def write(rows):
            nonlocal filled
            arr[filled:filled + len(rows)] = rows
            filled += len(rows)

        yield write
        if filled != shape[0]:
            raise ValueError(f"{filled} of the image's {shape[0]} rows written")
        _save_with_pillow(path, tmp, arr, fmt, quality, icc, exif)


def _save_with_pillow(path, tmp, arr, fmt, quality, icc, exif):
    """Formats other than PNG: Pillow (16-bit colour TIFF: OpenCV, without metadata)."""
    if arr.dtype == np.uint16 and arr.ndim == 3:
        with open(tmp, "wb") as f:
            f.write(_encode_cv2_16bit(path, arr))
        return
    if arr.dtype == np.uint16:
        im = Image.fromarray(arr, mode="I;16")
    else:
        im = Image.fromarray(arr, mode="LA" if arr.ndim == 3 and arr.shape[2] == 2 else None)
    options = {}
    if fmt == "JPEG":
        options.update(quality=int(quality), subsampling=0)
    elif fmt == "WEBP":
        options.update(quality=int(quality))
    if icc:
        options["icc_profile"] = icc
    if exif:
        options["exif"] = exif
    try:
        im.save(tmp, format=fmt, **options)
    except (ValueError, TypeError, KeyError) as e:
        raise SRCNNError(f"cannot write {path} as {fmt}: {e}") from None


def _exif_for(exif, width, height):
    """EXIF bytes for an output of ``width`` x ``height``: size fields set, no orientation."""
    out = Image.Exif()
    out.load(exif.tobytes())
    out.pop(0x0112, None)
    sub = out.get_ifd(0x8769)  # the Exif IFD, where PixelXDimension / PixelYDimension live
    if 0xA002 in sub or 0xA003 in sub:
        sub[0xA002], sub[0xA003] = int(width), int(height)
    for tag in (0x0100, 0x0101):  # ImageWidth / ImageLength of IFD0, when present
        if tag in out:
            out[tag] = int(width) if tag == 0x0100 else int(height)
    return out.tobytes()


def _encode_cv2_16bit(path, arr):
    """16-bit colour TIFF encoded by OpenCV (Pillow cannot write 16-bit RGB)."""
    import cv2

    bgr = arr[..., [2, 1, 0, 3][: arr.shape[2]]]
    ok, buf = cv2.imencode(os.path.splitext(path)[1].lower(), np.ascontiguousarray(bgr))
    if not ok:
        raise SRCNNError(f"cannot encode {path}")
    return buf.tobytes()
