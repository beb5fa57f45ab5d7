"""Property-based fuzzing of every loader of user files (hypothesis).

Each test mutates a valid file (truncates it, overwrites bytes, inserts
bytes) or makes one of random bytes, and requires that it either loads as a
well-formed result or raises :class:`SRCNNError`, the project's one error
type: never another exception, never a traceback for the user.

The fast loop runs the ``default`` profile (a few dozen examples each); a
longer run: ``HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest tests/test_fuzz.py``
(profiles in tests/conftest.py).
"""
import io
import os
import tempfile

import h5py
import numpy as np
import pytest
import scipy.io
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from srcnn_theano.errors import SRCNNError
from srcnn_theano.image import io as image_io
from srcnn_theano.network.weights import Weights, load, save
from srcnn_theano.patches.store import open_h5

from conftest import random_arrays

SMALL = dict(f1=3, f2=1, f3=3, n1=4, n2=2, channels=1)


def _image_bytes():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    out = []
    for fmt, im in (("PNG", Image.fromarray(rgb)), ("PNG", Image.fromarray(rgb[..., :2], "LA")),
                    ("PNG", Image.fromarray((rgb[..., 0].astype(np.uint16) * 257), "I;16")),
                    ("PNG", Image.fromarray(rgb).convert("P")), ("JPEG", Image.fromarray(rgb)),
                    ("BMP", Image.fromarray(rgb)), ("GIF", Image.fromarray(rgb)),
                    ("TIFF", Image.fromarray(rgb)), ("WEBP", Image.fromarray(rgb))):
        buf = io.BytesIO()
        im.save(buf, format=fmt)
        out.append((fmt.lower(), buf.getvalue()))
    return out


def _weights_bytes():
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "w.npz")
        save(path, Weights(random_arrays(SMALL), SMALL, scale=3))
        npz = open(path, "rb").read()
        arrays = random_arrays(SMALL)
        mat = io.BytesIO()
        scipy.io.savemat(mat, {"weights_conv1": arrays["conv1.W"].reshape(4, 9).T,
                               "biases_conv1": arrays["conv1.b"][:, None],
                               "weights_conv2": arrays["conv2.W"].reshape(2, 4).T,
                               "biases_conv2": arrays["conv2.b"][:, None],
                               "weights_conv3": arrays["conv3.W"].reshape(2, 9),
                               "biases_conv3": arrays["conv3.b"][:, None]})
        return [("npz", npz), ("mat", mat.getvalue())]


def _h5_bytes():
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "p.h5")
        with h5py.File(path, "w") as f:
            f["data"] = np.random.default_rng(1).random((4, 1, 9, 9), dtype=np.float32)
            f["label"] = np.random.default_rng(2).random((4, 1, 5, 5), dtype=np.float32)
            f.attrs["scale"] = 3
        return [("h5", open(path, "rb").read())]


def mutated(seeds):
    """A strategy of (extension, bytes): a seed file damaged in one of several ways, or noise."""
    def damage(seed, how, where, data):
        ext, blob = seed
        if how == "noise":
            return ext, data
        pos = int(where * len(blob))
        if how == "truncate":
            return ext, blob[:pos]
        if how == "overwrite":
            return ext, blob[:pos] + data + blob[pos + len(data):]
        return ext, blob[:pos] + data + blob[pos:]          # insert

    return st.builds(damage, st.sampled_from(seeds),
                     st.sampled_from(["truncate", "overwrite", "insert", "noise"]),
                     st.floats(0, 1), st.binary(min_size=1, max_size=64))


FUZZ = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)


def _write(ext, blob):
    fd, path = tempfile.mkstemp(suffix=f".{ext}")
    with os.fdopen(fd, "wb") as f:
        f.write(blob)
    return path


@pytest.fixture(autouse=True)
def small_pixel_limit():
    image_io.set_pixel_limit(4_000_000)   # damaged headers may claim huge sizes
    yield
    image_io.set_pixel_limit(None)


@FUZZ
@given(mutated(_image_bytes()))
def test_image_reader_loads_or_raises_srcnn_error(case):
    path = _write(*case)
    try:
        arr, meta = image_io.read_photo(path)
    except SRCNNError:
        return
    finally:
        os.remove(path)
    assert arr.dtype in (np.uint8, np.uint16) and arr.ndim in (2, 3) and arr.size > 0
    assert arr.ndim == 2 or arr.shape[2] in (2, 3, 4)
    assert meta.icc_profile is None or isinstance(meta.icc_profile, bytes)


@FUZZ
@given(mutated(_weights_bytes()))
def test_weights_loaders_load_or_raise_srcnn_error(case):
    path = _write(*case)
    try:
        w = load(path)
    except SRCNNError:
        return
    finally:
        os.remove(path)
    assert set(w.arrays) == {"conv1.W", "conv1.b", "conv2.W", "conv2.b", "conv3.W", "conv3.b"}
    assert all(np.isfinite(a).all() and a.dtype == np.float32 for a in w.arrays.values())
    assert w.architecture["f1"] % 2 == 1 and w.architecture["n1"] >= 1


@FUZZ
@given(mutated(_h5_bytes()))
def test_patch_file_reader_loads_or_raises_srcnn_error(case):
    path = _write(*case)
    try:
        with open_h5(path, scale=3) as patches:
            data, label = patches.load()
    except SRCNNError:
        return
    finally:
        os.remove(path)
    assert data.ndim == label.ndim == 4 and data.shape[:2] == label.shape[:2]
    assert np.isfinite(data).all() and np.isfinite(label).all()


def test_the_seeds_themselves_load():
    """The unmutated seeds are valid: the properties above are not vacuous."""
    for ext, blob in _image_bytes():
        path = _write(ext, blob)
        try:
            assert image_io.read_image(path).shape[:2] == (9, 11), ext
        finally:
            os.remove(path)
    for ext, blob in _weights_bytes():
        path = _write(ext, blob)
        try:
            assert load(path).architecture == SMALL, ext
        finally:
            os.remove(path)
    path = _write(*_h5_bytes()[0])
    try:
        with open_h5(path, scale=3) as patches:
            assert patches.count == 4
    finally:
        os.remove(path)
