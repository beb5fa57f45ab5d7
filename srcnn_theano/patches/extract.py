"""Training patches from images, in numpy: the extraction step of the authors' ``generate_train.m``.

For every training image the authors take the luminance, crop it to a
multiple of the scale, blur it with MATLAB bicubic down- then up-sampling,
and cut aligned sub-images::

    image = rgb2ycbcr(image); image = im2double(image(:, :, 1));
    im_label = modcrop(image, scale);
    im_input = imresize(imresize(im_label, 1/scale, 'bicubic'), [hei, wid], 'bicubic');
    for x = 1 : stride : hei-size_input+1
      for y = 1 : stride : wid-size_input+1
        subim_input = im_input(x : x+size_input-1, y : y+size_input-1);
        subim_label = im_label(x+padding : x+padding+size_label-1, ...);

with ``size_input = 33``, ``size_label = 21``, ``padding = 6``, ``stride = 14``.
:mod:`srcnn_theano.patches.store` shuffles and writes them to HDF5.

Arrays are NCHW ``float32`` with intensities in [0, 1] (MATLAB
``im2double`` units). Bicubic interpolation can overshoot, so ``data`` may
stray slightly outside [0, 1], exactly as in MATLAB; ``label`` never does.
Augmentation (rotations, flips, downscaled copies) is not in the paper and
off by default.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from srcnn_theano.errors import SRCNNError
from srcnn_theano.image.imresize import degrade, imresize, modcrop, scaled_shape
from srcnn_theano.image.units import to_float, to_uint8
from srcnn_theano.image.ycbcr import y_channel

CHANNELS = ("y", "rgb")
DEFAULT_DOWNSCALES = (1.0, 0.9, 0.8, 0.7, 0.6)


def image_to_planes(img, channels="y"):
    """The float planes patches are cut from.

    Parameters
    ----------
    img : ndarray, uint8 or uint16, shape (H, W) or (H, W, 3|4)
        As :func:`srcnn_theano.image.io.read_image` returns it.
    channels : {'y', 'rgb'}
        ``'y'``: :func:`~srcnn_theano.image.ycbcr.y_channel` (the paper).
        ``'rgb'``: RGB as MATLAB's ``im2double`` (alpha dropped, grayscale
        repeated three times); 16-bit reduced to 8 bits as for Y.

    Returns
    -------
    ndarray, float64, shape (H, W) for 'y' or (H, W, 3) for 'rgb', in [0, 1]
    """
    check_channels(channels)
    if channels == "y":
        return y_channel(img)
    img = to_uint8(img)
    if img.ndim == 3 and img.shape[2] in (2, 4):  # alpha dropped
        img = img[:, :, 0] if img.shape[2] == 2 else img[:, :, :3]
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return to_float(img)


def check_channels(channels):
    """Raise :class:`SRCNNError` unless ``channels`` is one of :data:`CHANNELS`."""
    if channels not in CHANNELS:
        raise SRCNNError(f"channels must be one of {', '.join(CHANNELS)}, not {channels!r}")


# --------------------------------------------------------------------------
# Patch extraction
# --------------------------------------------------------------------------

def check_geometry(scale, input_size=33, label_size=21, stride=14):
    """Validate patch geometry and return ``(scale, padding)``.

    Parameters
    ----------
    scale : int
        Upscaling factor, an integer >= 2 (a float such as ``3.0`` is accepted).
    input_size, label_size : int
        Side of the input and label patches in pixels. ``label_size`` equal to
        ``input_size`` is 'same' padding (offset 0); smaller labels are
        centred, which needs an even difference.
    stride : int
        Step between patch origins in pixels.

    Returns
    -------
    scale : int
    padding : int
        Offset of the label patch inside the input patch, ``(input_size - label_size) // 2``.

    Raises
    ------
    SRCNNError
        Any value out of range.
    """
    if float(scale) != int(scale) or int(scale) < 2:
        raise SRCNNError(f"scale must be an integer >= 2, not {scale}")
    for name, value in (("input size", input_size), ("label size", label_size), ("stride", stride)):
        if int(value) != value or value < 1:
            raise SRCNNError(f"{name} must be a positive integer, not {value}")
    if label_size > input_size:
        raise SRCNNError(f"label size {label_size} is larger than input size {input_size}")
    if (input_size - label_size) % 2:
        raise SRCNNError(f"input size {input_size} minus label size {label_size} must be even "
                         "so that the label is centred")
    return int(scale), (int(input_size) - int(label_size)) // 2


def extract_patches(y, scale, input_size=33, label_size=21, stride=14):
    """Aligned input/label patches of one image, in MATLAB ``generate_train.m`` order.

    Parameters
    ----------
    y : ndarray, float, shape (H, W) or (H, W, C)
        Ground-truth image in [0, 1] (:func:`image_to_planes`).
    scale : int
        Upscaling factor.
    input_size, label_size, stride : int
        Patch geometry in pixels; see :func:`check_geometry`.

    Returns
    -------
    data : ndarray, float32, shape (N, C, input_size, input_size)
        Windows of ``degrade(modcrop(y, scale))`` at origins
        ``(x, y)`` for ``x in range(0, H' - input_size + 1, stride)`` (outer)
        and ``y in range(0, W' - input_size + 1, stride)`` (inner), where
        H', W' are the modcropped sizes. ``C`` is 1 for 2-D ``y``.
    label : ndarray, float32, shape (N, C, label_size, label_size)
        Windows of ``modcrop(y, scale)`` at origins shifted by the padding
        ``(input_size - label_size) // 2``. N is 0 when the modcropped image
        is smaller than ``input_size``.
    """
    scale, padding = check_geometry(scale, input_size, label_size, stride)
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.floating) or y.ndim not in (2, 3):
        raise TypeError(f"expected a float (H, W) or (H, W, C) image, got {y.dtype} {y.shape}")
    label_img = modcrop(y if y.ndim == 3 else y[:, :, None], scale).astype(np.float64)
    hei, wid, ch = label_img.shape
    if hei < input_size or wid < input_size:
        return (np.zeros((0, ch, input_size, input_size), np.float32),
                np.zeros((0, ch, label_size, label_size), np.float32))
    input_img = degrade(label_img, scale)
    centre = label_img[padding:hei - padding, padding:wid - padding]
    return _windows(input_img, input_size, stride), _windows(centre, label_size, stride)


def patch_count(shape, scale, input_size=33, label_size=21, stride=14):
    """How many patches :func:`extract_patches` cuts from an image of ``shape`` (H, W[, C])."""
    scale, _ = check_geometry(scale, input_size, label_size, stride)
    hei, wid = shape[0] - shape[0] % scale, shape[1] - shape[1] % scale
    if hei < input_size or wid < input_size:
        return 0
    return ((hei - input_size) // stride + 1) * ((wid - input_size) // stride + 1)


def _windows(img, size, stride):
    """(H, W, C) -> (N, C, size, size) float32 windows every ``stride`` pixels, row-major."""
    views = sliding_window_view(img, (size, size), axis=(0, 1))[::stride, ::stride]
    return views.reshape((-1,) + views.shape[2:]).astype(np.float32)


# --------------------------------------------------------------------------
# Augmentation (not in the paper; off by default)
# --------------------------------------------------------------------------

def dihedral_transforms(img, flips=True, rotations=True):
    """Rotations by 0/90/180/270 degrees and their mirror images.

    Parameters
    ----------
    img : ndarray, shape (H, W) or (H, W, C)
    flips : bool
        Also yield each rotation flipped left-right.
    rotations : bool
        Yield the four rotations (else only the identity).

    Yields
    ------
    ndarray
        Views of ``img``: 8 with both options, 4 or 2 with one, 1 with none.
    """
    for k in (range(4) if rotations else (0,)):
        rotated = np.rot90(img, k, axes=(0, 1))
        yield rotated
        if flips:
            yield rotated[:, ::-1]


def augment_images(y, flips=True, rotations=True, downscales=DEFAULT_DOWNSCALES):
    """Variants of a training image for users who want more than the paper.

    Each bicubic downscaled copy (MATLAB ``imresize``, clipped to [0, 1];
    factor 1.0 is the image itself) goes through :func:`dihedral_transforms`.

    Parameters
    ----------
    y : ndarray, float, shape (H, W) or (H, W, C)
        Image in [0, 1].
    flips, rotations : bool
        See :func:`dihedral_transforms`.
    downscales : sequence of float
        Factors in (0, 1]; output size ``ceil(H * f)`` by ``ceil(W * f)``.

    Yields
    ------
    ndarray, float64
        ``len(downscales) * (1 to 8)`` images, 40 with the defaults.
    """
    for factor in downscales:
        if not 0 < factor <= 1:
            raise SRCNNError(f"downscale factors must be in (0, 1], not {factor}")
        scaled = y if factor == 1 else np.clip(imresize(y, scale=factor), 0.0, 1.0)
        yield from dihedral_transforms(scaled, flips, rotations)


def augmented_shapes(shape, flips=True, rotations=True, downscales=DEFAULT_DOWNSCALES):
    """The (H, W) of each image :func:`augment_images` yields for an image of ``shape``, in order."""
    for factor in downscales:
        h, w = shape[:2] if factor == 1 else scaled_shape(shape[:2], factor)
        for k in (range(4) if rotations else (0,)):
            turned = (h, w) if k % 2 == 0 else (w, h)
            yield turned
            if flips:
                yield turned


