"""Training patches (MATLAB generate_train.m: ``patches.extract``) and the HDF5 store (``patches.store``)."""
import glob
import hashlib
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from PIL import Image

from srcnn_theano.evaluation.datasets import load_ground_truth
from srcnn_theano.patches import extract as E
from srcnn_theano.patches import cutting
from srcnn_theano.patches import store as P
from srcnn_theano.patches import writer as W
from srcnn_theano.errors import SRCNNError
from srcnn_theano.image.io import list_images, read_image
from srcnn_theano.image.imresize import imresize

from conftest import REPO, require, require_data

CLI = os.path.join(REPO, "data_prep", "generate_h5.py")


def _rng_image(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _save(folder, name, arr):
    path = os.path.join(folder, name)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture
def image_folder(tmp_path):
    """Three 150x150 images (two RGB, one gray): 81 patches each at x3 -> 243 in all."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    _save(folder, "a.png", _rng_image((150, 150, 3), 1))
    _save(folder, "b.png", _rng_image((150, 150), 2))
    _save(folder, "c.png", _rng_image((150, 152, 3), 3))
    return str(folder)


def _leftovers(folder):
    return sorted(n for n in os.listdir(folder) if n.startswith(".tmp-") or n.endswith(".h5"))


# --------------------------------------------------------------------------
# Y conversion and patch extraction
# --------------------------------------------------------------------------

def test_image_to_y_matlab_values():
    img = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0]]], np.uint8)
    # MATLAB: round(16 + (65.481 R + 128.553 G + 24.966 B) / 255)
    np.testing.assert_array_equal(E.image_to_planes(img), np.array([[16, 235, 81]]) / 255.0)
    gray = _rng_image((5, 6))
    np.testing.assert_array_equal(E.image_to_planes(gray), gray / 255.0)


def test_extract_patches_count_order_and_values():
    img = _rng_image((64, 75))
    y = img / 255.0
    data, label = E.extract_patches(y, 3)
    label_img = y[:63, :75]                                   # modcrop(., 3)
    input_img = imresize(imresize(label_img, scale=1 / 3), output_shape=(63, 75))
    rows, cols = range(0, 63 - 33 + 1, 14), range(0, 75 - 33 + 1, 14)
    assert data.shape == (len(rows) * len(cols), 1, 33, 33) == (12, 1, 33, 33)
    assert label.shape == (12, 1, 21, 21)
    assert data.dtype == label.dtype == np.float32
    k = 0
    for x in rows:                                            # x outer, y inner as in MATLAB
        for yy in cols:
            np.testing.assert_array_equal(label[k, 0], label_img[x + 6:x + 27, yy + 6:yy + 27].astype(np.float32))
            np.testing.assert_array_equal(data[k, 0], input_img[x:x + 33, yy:yy + 33].astype(np.float32))
            k += 1


def test_extract_patches_small_image_count():
    data, label = E.extract_patches(_rng_image((40, 47)) / 255.0, 2)
    assert len(data) == len(range(0, 40 - 33 + 1, 14)) * len(range(0, 46 - 33 + 1, 14)) == 1
    data, label = E.extract_patches(_rng_image((34, 60)) / 255.0, 3)   # modcrop -> 33 x 60
    assert data.shape == (2, 1, 33, 33) and label.shape == (2, 1, 21, 21)


def test_extract_patches_same_padding_and_too_small():
    y = _rng_image((40, 40)) / 255.0
    data, label = E.extract_patches(y, 2, input_size=33, label_size=33, stride=7)
    assert data.shape == label.shape == (4, 1, 33, 33)
    np.testing.assert_array_equal(label[1, 0], y[0:33, 7:40].astype(np.float32))
    data, label = E.extract_patches(_rng_image((35, 80)) / 255.0, 3)  # modcrop -> 33 rows: fits
    assert len(data) == 4
    data, label = E.extract_patches(_rng_image((32, 80)) / 255.0, 3)
    assert data.shape == (0, 1, 33, 33) and label.shape == (0, 1, 21, 21)


@pytest.mark.parametrize("kwargs, match", [
    (dict(scale=3, input_size=21, label_size=33), "larger"),
    (dict(scale=3, input_size=33, label_size=20), "even"),
    (dict(scale=1), "scale"),
    (dict(scale=3, stride=0), "stride"),
])
def test_extract_patches_bad_geometry(kwargs, match):
    with pytest.raises(SRCNNError, match=match):
        E.extract_patches(np.zeros((50, 50)), **kwargs)


def test_rgb_patches():
    img = _rng_image((40, 40, 3))
    rgb = E.image_to_planes(img, "rgb")
    data, label = E.extract_patches(rgb, 3)
    assert data.shape == (1, 3, 33, 33) and label.shape == (1, 3, 21, 21)
    np.testing.assert_array_equal(label[0, 2], (img[6:27, 6:27, 2] / 255.0).astype(np.float32))
    gray = E.image_to_planes(img[:, :, 0], "rgb")
    assert gray.shape == (40, 40, 3) and np.array_equal(gray[..., 0], gray[..., 2])


def test_augment_images():
    y = np.arange(12.0).reshape(3, 4) / 12
    variants = list(E.augment_images(y, downscales=(1.0,)))
    assert len(variants) == 8
    assert len({v.tobytes() + bytes(v.shape) for v in variants}) == 8
    assert len(list(E.augment_images(y, flips=True, rotations=False, downscales=(1.0,)))) == 2
    assert len(list(E.augment_images(y, flips=False, rotations=False, downscales=(1.0,)))) == 1
    big = _rng_image((50, 40)) / 255.0
    shapes = [v.shape for v in E.augment_images(big)]
    assert len(shapes) == 40
    assert shapes[8] == (45, 36) and shapes[-8] == (30, 24)
    assert all(0 <= v.min() and v.max() <= 1 for v in E.augment_images(big))


# --------------------------------------------------------------------------
# HDF5 writer
# --------------------------------------------------------------------------

def _expected_patches(paths, scale=3):
    parts = [E.extract_patches(E.image_to_planes(read_image(p)), scale) for p in paths]
    return np.concatenate([d for d, _ in parts]), np.concatenate([l for _, l in parts])


def test_write_h5_layout_and_attrs(image_folder, tmp_path):
    out = str(tmp_path / "train.h5")
    paths = list_images(image_folder)
    summary = W.write_h5(out, paths, 3, progress=False)
    assert (summary.count, summary.count_extracted, summary.images, summary.skipped) == (243, 243, 3, [])
    with h5py.File(out, "r") as f:
        assert f["data"].shape == (243, 1, 33, 33) and f["label"].shape == (243, 1, 21, 21)
        assert f["data"].dtype == f["label"].dtype == np.float32
        assert f["data"].chunks == (128, 1, 33, 33) and f["label"].chunks == (128, 1, 21, 21)
        a = f.attrs
        assert a["creator"] == "srcnn_theano" and a["format_version"] == P.FORMAT_VERSION
        assert (a["scale"], a["input_size"], a["label_size"], a["stride"]) == (3, 33, 21, 14)
        assert (a["channels"], bool(a["augment"]), a["seed"], bool(a["drop_partial_chunk"])) == ("y", False, 0, False)
        assert a["count"] == 243 and a["count_extracted"] == 243
        assert list(a["source_names"]) == ["a.png", "b.png", "c.png"]
        assert list(a["source_sha256"]) == [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in paths]
        assert list(a["source_patches"]) == [81, 81, 81]
    assert _leftovers(tmp_path) == ["train.h5"]


def test_write_h5_shuffle_is_seeded_permutation(image_folder, tmp_path):
    paths = list_images(image_folder)
    data, label = _expected_patches(paths)
    order = np.random.default_rng(7).permutation(len(data))
    files = []
    for i, budget in enumerate((1 << 30, 50_000)):        # one block, and many small blocks
        out = str(tmp_path / f"s{i}.h5")
        W.write_h5(out, paths, 3, seed=7, progress=False, memory_budget=budget)
        with h5py.File(out, "r") as f:
            files.append((f["data"][...], f["label"][...]))
    for d, l in files:
        np.testing.assert_array_equal(d, data[order])
        np.testing.assert_array_equal(l, label[order])
    W.write_h5(str(tmp_path / "other.h5"), paths, 3, seed=8, progress=False)
    with h5py.File(tmp_path / "other.h5", "r") as f:
        assert not np.array_equal(f["data"][...], files[0][0])


def test_write_h5_drop_partial_chunk(image_folder, tmp_path):
    out = str(tmp_path / "d.h5")
    summary = W.write_h5(out, list_images(image_folder), 3, drop_partial_chunk=True, progress=False)
    assert (summary.count, summary.count_extracted) == (128, 243)
    with h5py.File(out, "r") as f:
        assert len(f["data"]) == len(f["label"]) == f.attrs["count"] == 128
        assert f.attrs["drop_partial_chunk"]


def test_write_h5_rgb_and_augment(tmp_path):
    _save(tmp_path, "a.png", _rng_image((48, 48, 3)))
    out = str(tmp_path / "rgb.h5")
    s = W.write_h5(out, [str(tmp_path / "a.png")], 3, channels="rgb", augment=True, progress=False)
    with h5py.File(out, "r") as f:
        assert f["data"].shape[1:] == (3, 33, 33) and f["label"].shape[1:] == (3, 21, 21)
        assert f.attrs["channels"] == "rgb" and f.attrs["augment"]
    # 8 transforms x (4 patches at 48x48 + 1 each at 0.9 -> 44, 0.8 -> 39, 0.7 -> 34; none at 0.6 -> 29)
    assert s.count == 8 * (4 + 1 + 1 + 1)


def test_write_h5_skips_bad_and_small_images(image_folder, tmp_path, capsys):
    bad = os.path.join(image_folder, "bad.png")
    with open(bad, "wb") as f:
        f.write(b"not an image")
    small = _save(image_folder, "small.png", _rng_image((20, 20)))
    out = str(tmp_path / "t.h5")
    s = W.write_h5(out, list_images(image_folder), 3, progress=False)
    assert s.count == 243 and [name for name, _ in s.skipped] == ["bad.png", "small.png"]
    err = capsys.readouterr().err
    assert "warning: skipping bad.png" in err and "warning: skipping small.png" in err
    with h5py.File(out, "r") as f:
        assert "bad.png" not in list(f.attrs["source_names"])
    with pytest.raises(SRCNNError, match="no usable training image"):
        W.write_h5(str(tmp_path / "none.h5"), [bad, small], 3, progress=False)
    assert not os.path.exists(tmp_path / "none.h5")


def test_write_h5_existing_output(image_folder, tmp_path):
    out = tmp_path / "t.h5"
    out.write_bytes(b"old")
    with pytest.raises(SRCNNError, match="already exists"):
        W.write_h5(str(out), list_images(image_folder), 3, progress=False)
    assert out.read_bytes() == b"old"
    W.write_h5(str(out), list_images(image_folder), 3, force=True, progress=False)
    assert h5py.is_hdf5(out)


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_write_h5_leaves_nothing_on_error(image_folder, tmp_path, monkeypatch, exc):
    out = tmp_path / "t.h5"
    out.write_bytes(b"old")
    real, calls = cutting.extract_patches, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise exc("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(cutting, "extract_patches", failing)
    with pytest.raises(exc):
        W.write_h5(str(out), list_images(image_folder), 3, force=True, progress=False)
    assert out.read_bytes() == b"old"
    assert _leftovers(tmp_path) == ["t.h5"]


def test_write_h5_bad_output_folder(image_folder, tmp_path):
    with pytest.raises(SRCNNError, match="folder does not exist"):
        W.write_h5(str(tmp_path / "no" / "t.h5"), list_images(image_folder), 3, progress=False)
    with pytest.raises(SRCNNError, match="is a folder"):
        W.write_h5(str(tmp_path), list_images(image_folder), 3, progress=False)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------

def _cli(*args):
    return subprocess.run([sys.executable, CLI, *args], capture_output=True, text=True, cwd=REPO)


def _assert_one_line_error(r, match):
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], r.stderr


def test_cli_writes_and_refuses_to_overwrite(image_folder, tmp_path):
    out = str(tmp_path / "t.h5")
    r = _cli("--images", image_folder, "--scale", "3", "--output", out, "--drop-partial-chunk", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "wrote 128 patches" in r.stdout
    _assert_one_line_error(_cli("--images", image_folder, "--scale", "3", "--output", out), "--force")
    r = _cli("--images", image_folder, "--scale", "3", "--output", out, "--force", "--quiet", "--seed", "1")
    assert r.returncode == 0 and h5py.File(out, "r").attrs["seed"] == 1


def test_cli_errors(image_folder, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = str(tmp_path / "t.h5")
    _assert_one_line_error(_cli("--images", str(empty), "--scale", "3", "--output", out), "no images")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    for bad_out in (tmp_path / "missing" / "t.h5", a_file / "t.h5"):
        _assert_one_line_error(_cli("--images", image_folder, "--scale", "3", "--output", str(bad_out)),
                               "folder")
    _assert_one_line_error(_cli("--images", image_folder, "--scale", "3", "--output", out,
                                "--label-size", "40"), "larger")
    _assert_one_line_error(_cli("--images", image_folder, "--output", out), "--scale")
    assert _leftovers(tmp_path) == []


# --------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------

@pytest.fixture
def train_file(image_folder, tmp_path):
    out = str(tmp_path / "train.h5")
    W.write_h5(out, list_images(image_folder), 3, progress=False)
    return out


@pytest.mark.parametrize("budget", [1 << 30, 100_000])
def test_iterate_minibatches_covers_every_patch(train_file, budget):
    with P.open_h5(train_file, scale=3, label_size=21) as pf:
        assert len(pf) == 243 and pf.attrs["scale"] == 3
        batches = list(P.iterate_minibatches(pf, 32, np.random.default_rng(0), memory_budget=budget))
        again = list(P.iterate_minibatches(pf, 32, np.random.default_rng(0), memory_budget=budget))
        full = pf.data[...]
    assert all(x.dtype == np.float32 and x.shape[1:] == (1, 33, 33) and y.shape[1:] == (1, 21, 21)
               and len(x) == len(y) <= 32 for x, y in batches)
    got = np.concatenate([x for x, _ in batches])
    assert len(got) == 243
    key = lambda a: sorted(a.reshape(len(a), -1).sum(axis=1).tolist())  # noqa: E731
    assert key(got) == key(full)
    assert not np.array_equal(got, full)                   # shuffled
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(batches, again))


def _write_raw(path, data, label, **attrs):
    with h5py.File(path, "w") as f:
        if data is not None:
            f["data"] = data
        if label is not None:
            f["label"] = label
        f.attrs.update(attrs)
    return str(path)


GOOD_D, GOOD_L = np.zeros((4, 1, 33, 33), np.float32), np.zeros((4, 1, 21, 21), np.float32)
NAN_L = GOOD_L.copy()
NAN_L[3, 0, 5, 5] = np.nan


@pytest.mark.parametrize("data, label, attrs, kwargs, match", [
    (GOOD_D, None, {}, {}, "no 'label' dataset"),
    (None, GOOD_L, {}, {}, "no 'data' dataset"),
    (GOOD_D[:, 0], GOOD_L, {}, {}, "4-D float"),
    (GOOD_D.astype(np.int32), GOOD_L, {}, {}, "4-D float"),
    (GOOD_D[:3], GOOD_L, {}, {}, "differ"),
    (GOOD_D, np.zeros((4, 1, 22, 22), np.float32), {}, {}, "centred"),
    (GOOD_D, NAN_L, {}, {}, "NaN"),
    (GOOD_D, GOOD_L, {"scale": 2}, {"scale": 3}, "scale 2, not 3"),
    (GOOD_D, GOOD_L, {}, {"label_size": 33}, "model outputs 33x33"),
])
def test_open_h5_validation(tmp_path, data, label, attrs, kwargs, match):
    path = _write_raw(tmp_path / "x.h5", data, label, **attrs)
    with pytest.raises(SRCNNError, match=match):
        P.open_h5(path, **kwargs)


def test_open_h5_missing_and_not_hdf5(tmp_path):
    with pytest.raises(SRCNNError, match="no such"):
        P.open_h5(str(tmp_path / "nope.h5"))
    (tmp_path / "t.h5").write_text("hello")
    with pytest.raises(SRCNNError, match="not an HDF5"):
        P.open_h5(str(tmp_path / "t.h5"))
    with P.open_h5(_write_raw(tmp_path / "ok.h5", GOOD_D, GOOD_L), scale=3, label_size=21) as pf:
        assert pf.count == 4 and pf.attrs == {}          # no attrs (e.g. MATLAB files): accepted


def test_load_ground_truth(tmp_path):
    _save(tmp_path, "b_GT.png", _rng_image((10, 12, 3)))
    _save(tmp_path, "a.png", _rng_image((8, 9)))
    images = load_ground_truth(str(tmp_path))
    assert [n for n, _ in images] == ["a", "b_GT"]
    assert images[1][1].shape == (10, 12, 3) and images[1][1].dtype == np.uint8
    (tmp_path / "e").mkdir()
    with pytest.raises(SRCNNError, match="no images"):
        load_ground_truth(str(tmp_path / "e"))


# --------------------------------------------------------------------------
# The paper's training set
# --------------------------------------------------------------------------

def test_t91_x3_patch_count():
    folder = require_data("T91")
    require(glob.glob(os.path.join(folder, "*.bmp")), f"T91 images not found in {folder}")
    count = sum(len(E.extract_patches(E.image_to_planes(read_image(p)), 3)[0]) for p in list_images(folder))
    assert count == 21884
    assert count // 128 * 128 == 21760          # what the authors' writer keeps
