"""MATLAB parity of srcnn_theano.image.ycbcr (rgb2ycbcr, ycbcr2rgb, rgb2y)."""
import numpy as np
import pytest

from srcnn_theano.image.ycbcr import rgb2y, rgb2ycbcr, ycbcr2rgb

# BT.601 studio swing, RGB in [0, 1] -> YCbCr in [0, 255] (written out
# independently of the module under test).
M = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]])
OFFSET = np.array([16.0, 128.0, 128.0])


def px(*rgb, dtype=np.uint8):
    return np.array([[rgb]], dtype=dtype)


@pytest.mark.parametrize("rgb, ycbcr", [
    ((255, 255, 255), (235, 128, 128)),
    ((0, 0, 0), (16, 128, 128)),
    ((255, 0, 0), (81, 90, 240)),     # 16 + 65.481, 128 - 37.797, 128 + 112
    ((0, 255, 0), (145, 54, 34)),     # 144.553, 53.797, 34.214
    ((0, 0, 255), (41, 240, 110)),    # 40.966, 240, 109.786
])
def test_pure_colours_uint8(rgb, ycbcr):
    out = rgb2ycbcr(px(*rgb))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], ycbcr)
    assert rgb2y(px(*rgb))[0, 0] == ycbcr[0]


def test_uint8_rounds_half_away_from_zero():
    # Y(6, 34, 182) evaluates to exactly 52.5 in double and Cr(42, 250, 0) to
    # exactly 54.5: MATLAB's cast rounds both up (banker's rounding would not).
    assert rgb2ycbcr(px(6, 34, 182))[0, 0, 0] == 53
    assert rgb2ycbcr(px(42, 250, 0))[0, 0, 2] == 55
    # Y(2, 44, 141) is 52.5 in exact arithmetic too, but MATLAB's double
    # evaluation (T = (1/255)*origT, T1*R + T2*G + T3*B + 16) gives
    # 52.49999999999999, so it rounds down.
    assert rgb2ycbcr(px(2, 44, 141))[0, 0, 0] == 52
    assert rgb2y(px(2, 44, 141))[0, 0] == 52


def test_float_path_is_the_formula_unrounded():
    rgb8 = np.random.default_rng(0).integers(0, 256, (8, 9, 3)).astype(np.uint8)
    exact = (rgb8 / 255.0) @ M.T + OFFSET                         # 0..255, unrounded
    out = rgb2ycbcr(rgb8 / 255.0)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out * 255, exact, rtol=0, atol=1e-10)
    # The uint8 path is that same value rounded.
    assert np.abs(rgb2ycbcr(rgb8).astype(float) - exact).max() <= 0.5 + 1e-9
    np.testing.assert_array_equal(rgb2y(rgb8 / 255.0), out[:, :, 0])
    np.testing.assert_array_equal(rgb2y(rgb8), rgb2ycbcr(rgb8)[:, :, 0])
    np.testing.assert_allclose(rgb2ycbcr(rgb8.astype(np.float32) / 255), out, rtol=0, atol=1e-7)


def test_float_round_trip_is_identity():
    rgb = np.random.default_rng(1).random((16, 16, 3))
    np.testing.assert_allclose(ycbcr2rgb(rgb2ycbcr(rgb)), rgb, rtol=0, atol=1e-10)
    ycc = np.random.default_rng(2).random((16, 16, 3))
    np.testing.assert_allclose(rgb2ycbcr(ycbcr2rgb(ycc, clip=False)), ycc, rtol=0, atol=1e-10)
    np.testing.assert_allclose(ycbcr2rgb(np.array([[[235, 128, 128]]]) / 255), 1, rtol=0, atol=1e-12)


def test_ycbcr2rgb_float_clips_like_matlab():
    ycc = np.array([[[235, 16, 16]]]) / 255.0                     # outside the RGB gamut
    raw = ycbcr2rgb(ycc, clip=False)
    # The plain linear inverse, solved independently of the module.
    np.testing.assert_allclose(raw[0, 0], np.linalg.solve(M, ycc[0, 0] * 255 - OFFSET),
                               rtol=0, atol=1e-12)
    assert raw.max() > 1.5
    # MATLAB's ycbcr2rgb ends with rgb = min(max(rgb, 0), 1) for floats.
    np.testing.assert_array_equal(ycbcr2rgb(ycc), np.clip(raw, 0, 1))
    assert ycbcr2rgb(ycc)[0, 0, 1] == 1.0


def test_ycbcr2rgb_uint8_rounds_and_clips():
    out = ycbcr2rgb(np.array([[[235, 128, 128], [16, 128, 128], [235, 16, 16]]], np.uint8))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(out[0, 1], [0, 0, 0])
    assert out[0, 2, 1] == 255                                    # 1.53 * 255, saturated
    rgb8 = np.random.default_rng(3).integers(0, 256, (20, 20, 3)).astype(np.uint8)
    back = ycbcr2rgb(rgb2ycbcr(rgb8)).astype(int)
    assert np.abs(back - rgb8).max() <= 2                         # only quantisation lost


def test_uint16_scales_offsets_by_257():
    out = rgb2ycbcr(np.array([[[65535] * 3, [0] * 3]], np.uint16))
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out[0], np.array([[235, 128, 128], [16, 128, 128]]) * 257)
    red_y = rgb2y(px(65535, 0, 0, dtype=np.uint16))
    np.testing.assert_array_equal(red_y, [[round((16 + 65.481) * 257)]])      # 20940.6 -> 20941


def test_grayscale_passes_through():
    gray = np.random.default_rng(4).integers(0, 256, (5, 6)).astype(np.uint8)
    assert rgb2y(gray) is gray
    out = rgb2y(gray[:, :, None])
    assert out.shape == (5, 6)
    np.testing.assert_array_equal(out, gray)
    fgray = gray / 255.0
    np.testing.assert_array_equal(rgb2y(fgray), fgray)


def test_rgba_uses_rgb_part():
    rgb = np.random.default_rng(5).integers(0, 256, (4, 4, 3)).astype(np.uint8)
    rgba = np.concatenate([rgb, np.full((4, 4, 1), 17, np.uint8)], axis=2)
    np.testing.assert_array_equal(rgb2y(rgba), rgb2y(rgb))


def test_bad_shapes_and_dtypes_are_rejected():
    with pytest.raises(ValueError):
        rgb2ycbcr(np.zeros((4, 4)))
    with pytest.raises(ValueError):
        ycbcr2rgb(np.zeros((4, 4, 4)))
    with pytest.raises(TypeError):
        rgb2ycbcr(np.zeros((4, 4, 3), np.int32))


def test_one_y_path_treats_8_and_16_bit_alike():
    """Training patches and evaluation take Y from y_channel: a 16-bit copy of an 8-bit image
    (x 257) gives exactly the 8-bit Y, in both."""
    from srcnn_theano.evaluation.protocol import ground_truth_y
    from srcnn_theano.image.ycbcr import y_channel
    from srcnn_theano.patches.extract import image_to_planes

    img8 = np.random.default_rng(4).integers(0, 256, (12, 15, 3), dtype=np.uint8)
    img16 = img8.astype(np.uint16) * 257
    y8 = y_channel(img8)
    np.testing.assert_array_equal(y8 * 255, rgb2y(img8))           # MATLAB's uint8 Y, as 0-1 floats
    np.testing.assert_array_equal(y_channel(img16), y8)
    np.testing.assert_array_equal(image_to_planes(img16), y8)
    np.testing.assert_array_equal(image_to_planes(img16, "rgb"), image_to_planes(img8, "rgb"))
    np.testing.assert_array_equal(ground_truth_y(img16, 3), ground_truth_y(img8, 3))
    np.testing.assert_array_equal(ground_truth_y(img8, 3), y8[:12, :15])


def test_matlab_round_is_exact_half_away_from_zero():
    from srcnn_theano.image.units import from_float, matlab_round

    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 0.49999999999999994, 2.4999999999999996])
    np.testing.assert_array_equal(matlab_round(x), [1, 2, 3, -1, -2, 0, 2])
    assert from_float(np.array([0.5 / 255, 254.5 / 255, 1.2, -0.1])).tolist() == [1, 255, 255, 0]


def test_from_float_is_matlab_cast_of_the_clipped_scaled_value():
    """The fast path (floor + compare on clipped values) gives matlab_cast's values exactly,
    on every rounding edge: exact halves, the doubles next to them, both float types."""
    from srcnn_theano.image.units import from_float, matlab_cast

    for dtype, peak in ((np.uint8, 255.0), (np.uint16, 65535.0)):
        k = np.arange(0, int(peak) + 1, max(1, int(peak) // 1000), dtype=np.float64)
        halves = (k + 0.5) / peak
        edges = np.concatenate([halves, np.nextafter(halves, 0), np.nextafter(halves, 2),
                                k / peak, [-0.3, -0.0, 0.0, 1.0, 1.7, 0.49999999999999994 / peak]])
        rng = np.random.default_rng(0).random(5000) * 1.2 - 0.1
        for x in (edges, rng, edges.astype(np.float32), rng.astype(np.float32)):
            want = matlab_cast(np.clip(x, 0.0, 1.0) * peak, dtype)
            got = from_float(x, dtype)
            assert got.dtype == dtype
            np.testing.assert_array_equal(got, want)


def test_the_in_place_sums_are_the_expression_bit_for_bit():
    """rgb2ycbcr / ycbcr2rgb sum in place on planes: the same doubles as MATLAB's
    left-to-right ``T1*R + T2*G + T3*B + offset``, for every layout of the input."""
    from srcnn_theano.image.ycbcr import ORIG_T_INV

    rgb = np.random.default_rng(3).random((13, 11, 3))
    T, off = (1 / 255) * M, (1 / 255) * OFFSET
    want = np.stack([T[p, 0] * rgb[..., 0] + T[p, 1] * rgb[..., 1] + T[p, 2] * rgb[..., 2] + off[p]
                     for p in range(3)], axis=2)
    for layout in (rgb, np.moveaxis(np.ascontiguousarray(np.moveaxis(rgb, 2, 0)), 0, 2),
                   np.pad(rgb, ((2, 2), (3, 3), (0, 0)))[2:-2, 3:-3]):
        assert np.array_equal(rgb2ycbcr(layout), want)
    Ti = 255.0 * ORIG_T_INV
    oi = -(ORIG_T_INV @ OFFSET)
    back = np.stack([Ti[p, 0] * want[..., 0] + Ti[p, 1] * want[..., 1] + Ti[p, 2] * want[..., 2]
                     + oi[p] for p in range(3)], axis=2)
    assert np.array_equal(ycbcr2rgb(want, clip=False), back)
    assert np.array_equal(ycbcr2rgb(want), np.clip(back, 0, 1))
