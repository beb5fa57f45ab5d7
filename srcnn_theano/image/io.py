"""Reading and writing image files, and the 0-1 float <-> integer boundary.

Arrays returned here are ``(H, W)`` for grayscale and ``(H, W, C)`` with
channels in RGB(A) order, dtype ``uint8`` or ``uint16`` exactly as stored.
Palette images come back as RGB(A). Writing is atomic (:mod:`srcnn_theano.files`):
the file appears complete under its name or not at all. Conversions to and
from 0-1 floats are in :mod:`srcnn_theano.image.units`.
"""
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from srcnn_theano.errors import SRCNNError
from srcnn_theano.files import atomic_output, atomic_write_bytes

IMAGE_EXTENSIONS = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".webp", ".ppm", ".pgm")


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
    """Read an image file.

    Returns
    -------
    ndarray, uint8 or uint16, shape (H, W) or (H, W, 3|4)
        Grayscale stays 2-D; palette images are converted to RGB (RGBA when
        they carry transparency); 16-bit PNG/TIFF keep 16 bits.

    Raises
    ------
    SRCNNError
        Missing, empty, truncated or non-image files.
    """
    if not os.path.exists(path):
        raise SRCNNError(f"no such file: {path}")
    if os.path.isdir(path):
        raise SRCNNError(f"is a folder, not an image: {path}")
    if os.path.getsize(path) == 0:
        raise SRCNNError(f"empty file: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif im.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGB" if im.mode != "1" else "L")
            elif im.mode == "LA":
                im = im.convert("RGBA")
            elif im.mode.startswith("I;16"):
                arr = np.array(im, dtype=np.uint16)
                return arr
            elif im.mode == "I":
                arr = np.array(im)
                if arr.min() < 0 or arr.max() > 65535:
                    raise SRCNNError(f"unsupported 32-bit integer image: {path}")
                return arr.astype(np.uint16)
            elif im.mode == "F":
                raise SRCNNError(f"unsupported floating-point image: {path}")
            arr = np.array(im)
    except SRCNNError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise SRCNNError(f"cannot read image {path}: {e}") from None
    if arr.dtype not in (np.uint8, np.uint16):
        raise SRCNNError(f"unsupported pixel type {arr.dtype} in {path}")
    return arr


def write_image(path, arr):
    """Write ``arr`` (uint8 or uint16; (H, W) or (H, W, 3|4)) atomically (:mod:`srcnn_theano.files`).

    The format follows the file extension. JPEG cannot hold alpha or 16 bits:
    such images are rejected with :class:`SRCNNError` rather than silently changed.
    """
    ext = os.path.splitext(path)[1].lower()
    if not ext:
        raise SRCNNError(f"output needs an image extension (.png, .jpg, ...): {path}")
    fmt = Image.registered_extensions().get(ext)
    if fmt is None:
        raise SRCNNError(f"unknown image extension {ext}: {path}")
    if arr.dtype == np.uint16:
        if ext not in (".png", ".tif", ".tiff"):
            raise SRCNNError(f"16-bit images can only be written as PNG or TIFF, not {ext}: {path}")
        if arr.ndim == 3:
            atomic_write_bytes(path, _encode_cv2_16bit(path, arr))
            return
        im = Image.fromarray(arr, mode="I;16")
    else:
        if ext in (".jpg", ".jpeg") and arr.ndim == 3 and arr.shape[2] == 4:
            raise SRCNNError(f"JPEG cannot store an alpha channel: {path}")
        im = Image.fromarray(arr)
    with atomic_output(path, suffix=ext) as tmp:
        im.save(tmp, format=fmt)


def _encode_cv2_16bit(path, arr):
    """16-bit colour encoded by OpenCV (Pillow cannot write 16-bit RGB)."""
    import cv2

    bgr = arr[..., [2, 1, 0, 3][: arr.shape[2]]]
    ok, buf = cv2.imencode(os.path.splitext(path)[1].lower(), np.ascontiguousarray(bgr))
    if not ok:
        raise SRCNNError(f"cannot encode {path}")
    return buf.tobytes()
