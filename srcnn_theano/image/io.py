"""Reading and writing image files, and the 0-1 float <-> integer boundary.

Arrays returned here are ``(H, W)`` for grayscale and ``(H, W, C)`` with
channels in RGB(A) order, dtype ``uint8`` or ``uint16`` exactly as stored.
Palette images come back as RGB(A). Writing is atomic: the file appears
complete under its name or not at all.
"""
import os
import tempfile

import numpy as np
from PIL import Image, UnidentifiedImageError

from srcnn_theano.errors import SRCNNError

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
    """Write ``arr`` (uint8 or uint16; (H, W) or (H, W, 3|4)) atomically.

    The format follows the file extension. JPEG cannot hold alpha or 16 bits:
    such images are rejected with :class:`SRCNNError` rather than silently changed.
    """
    ext = os.path.splitext(path)[1].lower()
    if not ext:
        raise SRCNNError(f"output needs an image extension (.png, .jpg, ...): {path}")
    if arr.dtype == np.uint16:
        if ext not in (".png", ".tif", ".tiff"):
            raise SRCNNError(f"16-bit images can only be written as PNG or TIFF, not {ext}: {path}")
        if arr.ndim == 2:
            im = Image.fromarray(arr.astype(np.uint16), mode="I;16")
        else:
            _write_cv2_16bit(path, arr)
            return
    else:
        if ext in (".jpg", ".jpeg") and arr.ndim == 3 and arr.shape[2] == 4:
            raise SRCNNError(f"JPEG cannot store an alpha channel: {path}")
        im = Image.fromarray(arr)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=ext, dir=folder)
    os.close(fd)
    try:
        fmt = Image.registered_extensions().get(ext)
        if fmt is None:
            raise SRCNNError(f"unknown image extension {ext}: {path}")
        im.save(tmp, format=fmt)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except OSError as e:
        raise SRCNNError(f"cannot write {path}: {e}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_cv2_16bit(path, arr):
    """16-bit colour via OpenCV (Pillow cannot write 16-bit RGB)."""
    import cv2

    ext = os.path.splitext(path)[1].lower()
    bgr = arr[..., [2, 1, 0, 3][: arr.shape[2]]]
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(bgr))
    if not ok:
        raise SRCNNError(f"cannot encode {path}")
    atomic_write_bytes(path, buf.tobytes())


def _umask_mode():
    """The mode a plainly created file gets (0o666 less the umask); mkstemp's is 0o600."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` through a temporary file in the same folder."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    except OSError as e:
        raise SRCNNError(f"cannot write {path}: {e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def to_float(arr):
    """uint8/uint16 -> float64 in [0, 1] (MATLAB ``im2double``)."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float64) / 65535.0
    raise TypeError(f"expected uint8 or uint16, got {arr.dtype}")


def from_float(x, dtype=np.uint8):
    """Float in [0, 1] -> uint8/uint16, clipped and rounded half away from zero as MATLAB."""
    peak = 255.0 if dtype == np.uint8 else 65535.0
    return np.floor(np.clip(x, 0.0, 1.0) * peak + 0.5).astype(dtype)
