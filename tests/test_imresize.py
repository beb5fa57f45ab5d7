"""MATLAB parity of srcnn_theano.image.imresize (bicubic imresize, modcrop).

Expected values are derived by hand in the comments (1-based MATLAB
coordinates: output sample x sits at input position u = x/s + (1 - 1/s)/2),
or are outputs printed by MATLAB itself.
"""
import numpy as np
import pytest

from srcnn_theano.image.imresize import calculate_weights_indices, cubic, imresize, modcrop

# Keys cubic (a = -0.5) at quarter points, exact in binary: k(0.25) = 111/128,
# k(0.75) = 29/128, k(1.25) = -9/128, k(1.75) = -3/128.
K025, K075, K125, K175 = 111 / 128, 29 / 128, -9 / 128, -3 / 128


def test_cubic_kernel_values():
    x = np.array([0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 2.5, -0.5, -1.5])
    want = [1, K025, 0.5625, K075, 0, K125, -0.0625, K175, 0, 0, 0.5625, -0.0625]
    np.testing.assert_array_equal(cubic(x), want)


def test_upscale_by_2_weights_and_mirrored_indices():
    w, idx = calculate_weights_indices(4, 8, 2.0)
    # First output: u = 1/2 + 1/4 = 0.75; taps at positions -1, 0, 1, 2 are
    # 1.75, 0.75, 0.25, 1.25 away. Symmetric padding: x(0) = x(1), x(-1) = x(2).
    np.testing.assert_array_equal(w[0], [K175, K075, K025, K125])
    np.testing.assert_array_equal(idx[0], [1, 0, 0, 1])          # 0-based
    # Last output: u = 4.25; taps 3, 4, 5, 6 with x(5) = x(4), x(6) = x(3).
    np.testing.assert_array_equal(w[7], [K125, K025, K075, K175])
    np.testing.assert_array_equal(idx[7], [2, 3, 3, 2])
    np.testing.assert_allclose(w.sum(axis=1), 1, rtol=0, atol=1e-15)


def test_upscale_row_vector_by_2():
    x = np.array([[1.0, 2.0, 3.0, 4.0]])
    out = imresize(x, 2)
    assert out.shape == (2, 8)                                    # both dims scale
    np.testing.assert_array_equal(out[0], out[1])                 # single row: copies
    first = K175 * 2 + K075 * 1 + K025 * 1 + K125 * 2             # = 0.90625
    # Interior samples land on u exactly: Keys a = -0.5 reproduces ramps.
    want = [first, 1.1796875, 1.7265625, 2.25, 2.75, 3.2734375, 3.8203125, 5 - first]
    np.testing.assert_allclose(out[0], want, rtol=0, atol=1e-14)
    # With clamped indices, x(-1) = x(0) = x(1) instead.
    first_rep = (K175 + K075 + K025) * 1 + K125 * 2                # = 0.9296875
    out_rep = imresize(x, 2, padding="replicate")
    np.testing.assert_allclose(out_rep[0, [0, 3, 7]], [first_rep, 2.25, 5 - first_rep],
                               rtol=0, atol=1e-14)


def test_matches_matlab_printed_output_with_replicate_padding():
    # MATLAB (2013) printed: imresize([0 0 1 1 0], [1 10]) ->
    # 0 -0.0234 -0.0703 0.2031 0.7969 1.0938 1.0938 0.7969 0.2031 -0.0703
    out = imresize(np.array([[0, 0, 1, 1, 0.0]]), output_shape=(1, 10), padding="replicate")
    want = [0, -0.0234, -0.0703, 0.2031, 0.7969, 1.0938, 1.0938, 0.7969, 0.2031, -0.0703]
    np.testing.assert_array_equal(np.round(out[0], 4), want)
    # Symmetric padding differs only in the last sample: x(6) = x(5) = 0 but
    # x(7) = x(4) = 1, so -9/128 - 3/128.
    sym = imresize(np.array([[0, 0, 1, 1, 0.0]]), output_shape=(1, 10))
    np.testing.assert_array_equal(sym[0, :9], out[0, :9])
    assert sym[0, 9] == K125 + K175


def test_downscale_by_3_antialiased_weights():
    w, idx = calculate_weights_indices(6, 2, 1 / 3)
    # Kernel k(d/3)/3, width 12. Output 1: u = 3 - 1 = 2. k(1) = 0 kills the
    # taps at d = +-3 (and d = +-6) in every row, so 9 of P = 14 remain:
    # d = 5, 4, 2, 1, 0, -1, -2, -4, -5 with k(5/3) = -1/27, k(4/3) = -2/27,
    # k(2/3) = 1/3, k(1/3) = 7/9, k(0) = 1; their sum is 3, so no renormalising.
    row = np.array([-1 / 81, -2 / 81, 1 / 9, 7 / 27, 1 / 3, 7 / 27, 1 / 9, -2 / 81, -1 / 81])
    assert w.shape == idx.shape == (2, 9)
    np.testing.assert_allclose(w, [row, row], rtol=0, atol=1e-15)
    # Positions u - d = -3, -2, 0, 1, 2, 3, 4, 6, 7 folded with aux = [1:6 6:-1:1].
    np.testing.assert_array_equal(idx[0] + 1, [4, 3, 1, 1, 2, 3, 4, 6, 6])
    # Output 2: u = 5, positions 0, 1, 3, 4, 5, 6, 7, 9, 10.
    np.testing.assert_array_equal(idx[1] + 1, [1, 1, 3, 4, 5, 6, 6, 4, 3])
    x = np.arange(1.0, 7.0)
    out = imresize(x[:, None], output_shape=(2, 1))[:, 0]
    np.testing.assert_allclose(out, [row @ x[idx[0]], row @ x[idx[1]]], rtol=0, atol=1e-14)


def test_downscale_without_antialiasing_is_plain_cubic():
    # Width 4, u = 2 and 5 fall on pixels: k(+-1) = 0, only the centre tap stays.
    w, idx = calculate_weights_indices(6, 2, 1 / 3, antialiasing=False)
    np.testing.assert_array_equal(w, [[1.0], [1.0]])
    np.testing.assert_array_equal(idx, [[1], [4]])


@pytest.mark.parametrize("scale, shape", [(1 / 3, (3, 2)), (3, (21, 15)), (0.5, (4, 3)), (2, (14, 10))])
def test_output_size_is_ceil(scale, shape):
    assert imresize(np.zeros((7, 5)), scale).shape == shape
    assert imresize(np.zeros((7, 5, 3)), scale).shape == shape + (3,)


def test_output_shape_argument():
    img = np.random.default_rng(1).random((9, 6))
    assert imresize(img, output_shape=(4, 13)).shape == (4, 13)
    np.testing.assert_array_equal(imresize(img, output_shape=(3, 2)), imresize(img, 1 / 3))
    with pytest.raises(ValueError):
        imresize(img)
    with pytest.raises(ValueError):
        imresize(img, 2, output_shape=(18, 12))
    with pytest.raises(ValueError):
        imresize(img, 2, padding="reflect")


@pytest.mark.parametrize("scale", [1 / 4, 1 / 3, 0.5, 2, 3])
def test_constant_image_stays_constant(scale):
    img = np.full((12, 9, 3), 0.3)
    np.testing.assert_allclose(imresize(img, scale), 0.3, rtol=0, atol=1e-14)
    assert np.all(imresize(np.full((12, 9), 77, np.uint8), scale) == 77)


def test_uint8_rounds_half_away_and_saturates():
    x = np.array([[100, 219, 141, 8]], np.uint8)
    f = imresize(x.astype(np.float64), output_shape=(1, 8))
    # Output 6: u = 3.25, taps x2..x5 (x5 = x4): (-9*219 + 111*141 + 29*8 - 3*8)/128 = 108.5
    assert f[0, 5] == 108.5
    assert f[0, 7] < 0
    out = imresize(x, output_shape=(1, 8))
    assert out.dtype == np.uint8
    assert out[0, 5] == 109                                       # not banker's 108
    assert out[0, 7] == 0                                         # clipped, not wrapped
    np.testing.assert_array_equal(out, np.clip(np.floor(f + 0.5), 0, 255))
    assert imresize(np.array([[0, 0, 255, 255, 0]], np.uint8), output_shape=(1, 10)).max() == 255


def test_uint8_rounds_after_each_pass_smaller_scale_first():
    img = np.random.default_rng(3).integers(0, 256, (6, 4)).astype(np.uint8)
    # Rows scale 1/2 < columns scale 2: MATLAB resizes rows first and stores
    # the intermediate image as uint8.
    rows_first = imresize(imresize(img, output_shape=(3, 4)), output_shape=(3, 8))
    cols_first = imresize(imresize(img, output_shape=(6, 8)), output_shape=(3, 8))
    once = np.clip(np.floor(imresize(img.astype(float), output_shape=(3, 8)) + 0.5), 0, 255)
    out = imresize(img, output_shape=(3, 8))
    np.testing.assert_array_equal(out, rows_first)
    assert np.any(out != cols_first) and np.any(out != once)      # the order does matter here
    # Transposed problem: columns now have the smaller scale and go first.
    np.testing.assert_array_equal(imresize(img.T, output_shape=(8, 3)), rows_first.T)


def test_float32_input_is_stored_as_single_between_passes():
    img = np.random.default_rng(4).random((9, 12)).astype(np.float32)
    out = imresize(img, 1 / 3)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out.astype(np.float32), out)
    np.testing.assert_allclose(out, imresize(img.astype(np.float64), 1 / 3), rtol=0, atol=1e-6)


def test_channels_are_resized_independently():
    img = np.random.default_rng(5).random((10, 7, 3))
    out = imresize(img, 1 / 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], imresize(img[:, :, c], 1 / 3))


def _dense(weights, indices, in_length):
    """The resize of one dimension as an (out, in) matrix: row i holds weights[i]
    at columns indices[i] (taps falling on the same pixel add up)."""
    m = np.zeros((weights.shape[0], in_length))
    for i in range(weights.shape[0]):
        for w, j in zip(weights[i], indices[i]):
            m[i, j] += w
    return m


def test_down_then_up_512_equals_the_matrix_form():
    """The vectorized gathers compute rows x image x columns^T, borders included
    (not square, so that mixing up the two dimensions shows)."""
    img = np.random.default_rng(6).random((512, 384))
    small = imresize(img, 1 / 3)
    out = imresize(small, 3)
    assert small.shape == (171, 128) and out.shape == (513, 384)
    rows, cols = (_dense(*calculate_weights_indices(n, m, s), n)
                  for n, m, s in ((512, 171, 1 / 3), (384, 128, 1 / 3)))
    np.testing.assert_allclose(small, rows @ img @ cols.T, rtol=0, atol=1e-12)
    rows, cols = (_dense(*calculate_weights_indices(n, m, s), n)
                  for n, m, s in ((171, 513, 3), (128, 384, 3)))
    np.testing.assert_allclose(out, rows @ small @ cols.T, rtol=0, atol=1e-12)
    assert out.std() > 0.05                                       # not comparing constants


def test_modcrop():
    img = np.arange(7 * 5 * 3).reshape(7, 5, 3)
    out = modcrop(img, 3)
    assert out.shape == (6, 3, 3)
    np.testing.assert_array_equal(out, img[:6, :3])
    assert modcrop(img[:, :, 0], 2).shape == (6, 4)
    assert modcrop(img[:, :, 0], 1).shape == (7, 5)
    assert modcrop(np.zeros((12, 9), np.uint8), 3).shape == (12, 9)
