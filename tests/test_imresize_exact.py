"""imresize (its passes in C) computes exactly what the tap-by-tap numpy gather computes.

``reference_imresize`` below is the straightforward form (MATLAB's
``imresizemex`` order: for each output sample, taps summed j = 0, 1, ...;
each tap one fancy-indexed gather of folded indices). Every case must give identical bits
(``array_equal`` and the same signs of zeros), dtype and shape.
"""
import itertools
import math

import numpy as np
import pytest

from srcnn_theano.image import imresize as ir
from srcnn_theano.image.units import matlab_round


def _reference_resize_along(img, axis, weights, indices):
    img = np.moveaxis(img, axis, 0)
    shape = (-1,) + (1,) * (img.ndim - 1)
    out = weights[:, 0].reshape(shape) * img[indices[:, 0]]
    for j in range(1, weights.shape[1]):
        out += weights[:, j].reshape(shape) * img[indices[:, j]]
    return np.moveaxis(out, 0, axis)


def reference_imresize(img, scale=None, output_shape=None, antialiasing=True,
                       padding="symmetric"):
    img = np.asarray(img)
    in_shape = img.shape[:2]
    if scale is not None:
        scales = (float(scale), float(scale))
        out_shape = tuple(int(math.ceil(scale * n)) for n in in_shape)
    else:
        out_shape = tuple(int(v) for v in output_shape)
        scales = (out_shape[0] / in_shape[0], out_shape[1] / in_shape[1])
    contributions = [ir.calculate_weights_indices(in_shape[d], out_shape[d], scales[d], 4.0,
                                                  antialiasing, padding) for d in (0, 1)]
    out = img.astype(np.float64)
    for axis in sorted((0, 1), key=lambda d: scales[d]):
        out = _reference_resize_along(out, axis, *contributions[axis])
        if img.dtype == np.uint8:
            out = np.clip(matlab_round(out), 0, 255)
        elif img.dtype == np.float32:
            out = out.astype(np.float32).astype(np.float64)
    return out.astype(np.uint8) if img.dtype == np.uint8 else out


def _image(shape, dtype, seed):
    x = np.random.default_rng(seed).random(shape)
    if dtype == np.uint8:
        return (x * 255.999).astype(np.uint8)
    return (x * 1.2 - 0.1).astype(dtype)   # beyond [0, 1] and negative, as bicubic makes


SHAPES = [(1, 6), (6, 1), (2, 2), (3, 7), (17, 23), (40, 33, 3), (45, 38, 4), (1, 9, 3),
          (31, 29, 1), (64, 50, 2)]
RESIZES = [dict(scale=2), dict(scale=3), dict(scale=4), dict(scale=1 / 2), dict(scale=1 / 3),
           dict(scale=1 / 4), dict(scale=0.9), dict(scale=0.6), dict(scale=1.7), dict(scale=1.0),
           dict(output_shape=(7, 11)), "x3 by shape", "down by shape"]


def _kwargs(resize, shape):
    if resize == "x3 by shape":
        return dict(output_shape=(shape[0] * 3, shape[1] * 3))
    if resize == "down by shape":
        return dict(output_shape=(max(1, shape[0] // 3), max(1, shape[1] // 2)))
    return resize


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.uint8], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_bit_for_bit_equal_to_the_gather_form(shape, dtype):
    img = _image(shape, dtype, seed=sum(shape))
    for resize, padding, aa in itertools.product(RESIZES, ("symmetric", "replicate"),
                                                 (True, False)):
        kwargs = dict(_kwargs(resize, shape), padding=padding, antialiasing=aa)
        want = reference_imresize(img, **kwargs)
        got = ir.imresize(img, **kwargs)
        assert got.shape == want.shape and got.dtype == want.dtype, kwargs
        assert np.array_equal(got, want), kwargs
        assert np.array_equal(np.signbit(got), np.signbit(want)), kwargs


def test_degrade_of_a_photo_sized_image_is_exact():
    img = _image((120, 96), np.float64, seed=7)
    small = reference_imresize(img, scale=1 / 3)
    want = reference_imresize(small, output_shape=img.shape)
    assert np.array_equal(ir.degrade(img, 3), want)
