"""The C loops of the image stages (srcnn_theano/image/loops.c) give plain numpy's bits.

Each check runs on the library as the project builds it (AVX2 and baseline
copies, the CPU picks) and on a baseline-only build (``-DCLONED=``), so both
code paths are compared with numpy whatever this machine runs.
"""
import numpy as np
import pytest

from srcnn_theano.errors import SRCNNError
from srcnn_theano.image import imresize as ir
from srcnn_theano.image import loops
from srcnn_theano.image.units import from_float, matlab_cast


@pytest.fixture(params=["as built", "baseline only"])
def built(request, monkeypatch):
    if request.param == "baseline only":
        monkeypatch.setattr(loops, "FLAGS", loops.FLAGS + ["-DCLONED="])
    return request.param


def _edges(peak):
    k = np.arange(0, int(peak) + 1, max(1, int(peak) // 1000), dtype=np.float64)
    halves = (k + 0.5) / peak
    rng = np.random.default_rng(1).random(3000) * 1.4 - 0.2
    return np.concatenate([halves, np.nextafter(halves, 0), np.nextafter(halves, 2), k / peak,
                           rng, [-0.3, -0.0, 0.0, 1.0, 1.7, 0.49999999999999994 / peak]])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16], ids=str)
@pytest.mark.parametrize("ftype", [np.float64, np.float32], ids=str)
def test_from_float_matches_matlab_cast_in_every_layout(built, dtype, ftype):
    peak = float(np.iinfo(dtype).max)
    x = _edges(peak).astype(ftype)
    x = x[:len(x) // 3 * 3].reshape(-1, 3)
    want = matlab_cast(np.clip(x, 0.0, 1.0) * ftype(peak), dtype)
    np.testing.assert_array_equal(from_float(x, dtype), want)
    planar = np.moveaxis(np.ascontiguousarray(x.T), 0, 1)          # strided reads
    band = np.zeros((len(x), 7, 3), dtype)                          # strided writes
    out = from_float(planar, dtype, out=band[:, 2])
    assert out.base is not None and np.shares_memory(out, band)
    np.testing.assert_array_equal(band[:, 2], want)
    assert not band[:, [0, 1, 3, 4, 5, 6]].any()                    # nothing else written
    np.testing.assert_array_equal(from_float(x.reshape(-1, 1, 3, 1), dtype),
                                  want.reshape(-1, 1, 3, 1))        # more than 3 dimensions


def test_from_float_maps_nan_to_zero(built):
    x = np.array([np.nan, 0.5, -np.inf, np.inf])
    assert from_float(x).tolist() == [0, 128, 0, 255]
    assert from_float(x.astype(np.float32), np.uint16).tolist() == [0, 32768, 0, 65535]


@pytest.mark.parametrize("axis", [1, 2])
def test_resize_axis_is_the_tap_by_tap_gather(built, axis):
    planes = np.random.default_rng(2).random((2, 37, 41)) * 1.2 - 0.1
    n = planes.shape[axis]
    for n_out, scale in ((2 * n, 2.0), (3 * n, 3.0), (n // 3, 1 / 3), (n - 5, (n - 5) / n)):
        w, idx = ir.calculate_weights_indices(n, n_out, scale)
        x = np.moveaxis(planes, axis, 0)
        want = w[:, 0].reshape(-1, 1, 1) * x[idx[:, 0]]
        for j in range(1, w.shape[1]):
            want += w[:, j].reshape(-1, 1, 1) * x[idx[:, j]]
        got = loops.resize_axis(planes, axis, w, idx)
        assert got.flags.c_contiguous
        assert np.array_equal(got, np.moveaxis(want, 0, axis)), (n_out, w.shape)


def test_lincomb3_is_the_left_to_right_expression(built):
    img = np.random.default_rng(3).random((9, 8, 3))
    T = np.random.default_rng(4).random((3, 3)) - 0.5
    off = np.array([0.1, -0.2, 0.3])
    want = np.stack([T[p, 0] * img[..., 0] + T[p, 1] * img[..., 1] + T[p, 2] * img[..., 2]
                     + off[p] for p in range(3)], axis=2)
    for layout in (img, np.moveaxis(np.ascontiguousarray(np.moveaxis(img, 2, 0)), 0, 2),
                   np.pad(img, ((1, 1), (2, 2), (0, 0)))[1:-1, 2:-2]):
        assert np.array_equal(loops.lincomb3(layout, T, off), want)


def test_a_failed_build_is_one_line_naming_the_source_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("SRCNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", "false")
    monkeypatch.setattr(loops, "_libraries", {})
    with pytest.raises(SRCNNError, match=r"cannot compile .*loops\.c") as err:
        loops.library()
    assert "\n" not in str(err.value)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_the_library_is_built_once_and_found_again(tmp_path, monkeypatch):
    monkeypatch.setenv("SRCNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(loops, "_libraries", {})
    loops.library()
    built = sorted(p.name for p in (tmp_path / "loops").iterdir())
    assert len(built) == 1 and built[0].endswith(".so")
    monkeypatch.setenv("CC", "false")            # a new process finds it: no compiler needed
    monkeypatch.setattr(loops, "_libraries", {})
    assert loops.library().resize_rows is not None
    assert sorted(p.name for p in (tmp_path / "loops").iterdir()) == built


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16], ids=str)
def test_ycbcr2rgb_levels_is_ycbcr2rgb_then_from_float(built, dtype):
    from srcnn_theano.image.ycbcr import ycbcr2rgb, ycbcr2rgb_levels

    ycc = np.random.default_rng(5).random((3, 21, 700)) * 1.3 - 0.15   # out of gamut too
    view = np.moveaxis(ycc, 0, 2)[2:-3, 5:]                           # strided planes
    want = from_float(ycbcr2rgb(view), dtype)
    band = np.zeros((view.shape[0], view.shape[1] + 9, 3), dtype)
    out = ycbcr2rgb_levels(view, band[:, 4:-5])
    assert np.shares_memory(out, band)
    np.testing.assert_array_equal(band[:, 4:-5], want)
    assert not band[:, :4].any() and not band[:, -5:].any()
    with pytest.raises(TypeError):
        ycbcr2rgb_levels(from_float(view), band[:, 4:-5])


def test_an_unwritable_cache_folder_builds_a_private_copy(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("SRCNN_CACHE_DIR", str(tmp_path / "a-file"))   # no folder can go there
    monkeypatch.setattr(loops, "_libraries", {})
    out = loops.from_float(np.array([0.5 / 255, 2.0]), np.empty(2, np.uint8), 255.0)
    assert out.tolist() == [1, 255]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_a_folder_others_can_write_is_not_loaded_from(tmp_path, monkeypatch):
    """A shared library runs code when loaded: one that another user could have put
    there is neither loaded nor written (a private copy is built instead)."""
    shared = tmp_path / "loops"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("SRCNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(loops, "_libraries", {})
    assert loops.from_float(np.array([1.0]), np.empty(1, np.uint8), 255.0).tolist() == [255]
    assert list(shared.iterdir()) == []


def test_a_build_for_older_source_is_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("SRCNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(loops, "_libraries", {})
    loops.library()
    (built,) = (tmp_path / "loops").iterdir()
    prefix = built.name[:built.name.rindex("-") + 1]
    old, other_flags = tmp_path / "loops" / f"{prefix}0123456789abcdef.so", tmp_path / "loops" / "loops-x-1.so"
    old.write_bytes(b"")
    other_flags.write_bytes(b"")
    built.unlink()
    monkeypatch.setattr(loops, "_libraries", {})
    loops.library()
    assert sorted(p.name for p in (tmp_path / "loops").iterdir()) == sorted([built.name, other_flags.name])


def test_from_float_of_a_single_value():
    assert from_float(0.5).tolist() == 128
    assert from_float(np.float32(1.0), np.uint16).tolist() == 65535
