"""Upscaling real images: modes, depths, tiling, and broken inputs."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from srcnn_theano.image.imresize import imresize
from srcnn_theano.image.ycbcr import rgb2ycbcr, ycbcr2rgb
from srcnn_theano.network.inference import Predictor
from srcnn_theano.apps.upscale import upscale_bands, upscale_float, upscale_image
from srcnn_theano.network.weights import Weights, save

from conftest import ARCH_915, REPO, random_arrays


@pytest.fixture(scope="module")
def weights():
    """A small random 9-1-5 (full size n1/n2), scale 2."""
    return Weights(random_arrays(ARCH_915, std=0.05), ARCH_915, scale=2)


@pytest.fixture(scope="module")
def identity():
    """A 9-1-5 whose output equals its (non-negative) input: SRCNN(bicubic) = bicubic."""
    arrays = {k: np.zeros_like(v) for k, v in random_arrays(ARCH_915).items()}
    arrays["conv1.W"][0, 0, 4, 4] = 1.0
    arrays["conv2.W"][0, 0, 0, 0] = 1.0
    arrays["conv3.W"][0, 0, 2, 2] = 1.0
    return Weights(arrays, ARCH_915, scale=2)


@pytest.fixture(scope="module")
def weights_file(weights, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("w") / "x2.npz")
    save(path, weights)
    return path


def photo(shape, dtype=np.uint8, seed=0):
    rng = np.random.RandomState(seed)
    peak = 255 if dtype == np.uint8 else 65535
    base = np.linspace(0, 1, shape[0] * shape[1]).reshape(shape[:2])
    img = np.clip(base[..., None] * peak * 0.8 + rng.rand(*shape[:2], 1) * peak * 0.2, 0, peak) \
        if len(shape) == 3 else base * peak
    return np.broadcast_to(img, shape).astype(dtype).copy()


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "srcnn_theano", *args], cwd=REPO,
                          capture_output=True, text=True)


def test_tiled_equals_untiled(weights):
    planes = np.random.RandomState(1).rand(45, 38, 3)
    pred = Predictor(weights, tile=None)
    whole = upscale_float(planes, 2, pred, tile=None)
    tiled = upscale_float(planes, 2, pred, tile=16)
    assert tiled.shape == (90, 76, 3)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_tiled_image_equals_untiled_image(weights):
    img = photo((45, 38, 4))
    pred = Predictor(weights, tile=None)
    tiled, whole = upscale_image(img, 2, pred, tile=16), upscale_image(img, 2, pred, tile=None)
    assert tiled.shape == (90, 76, 4) and tiled.dtype == np.uint8
    assert np.abs(tiled.astype(int) - whole).max() <= 1 and (tiled != whole).mean() < 1e-3


def test_bands_and_threads_change_nothing(weights):
    """The helper threads and the bands only reorder work: the same bytes for any count."""
    img = photo((45, 38, 3))
    pred = Predictor(weights, tile=None)
    one = upscale_image(img, 2, pred, tile=16, threads=1)
    for tile, threads in ((16, 2), (16, 3), (7, 2)):
        bands = list(upscale_bands(img, 2, pred, tile=tile, threads=threads))
        assert [len(b) for b in bands] == [min(tile, 45 - top) * 2 for top in range(0, 45, tile)]
        if tile == 16:
            np.testing.assert_array_equal(np.concatenate(bands), one)
        assert np.abs(np.concatenate(bands).astype(int) - one).max() <= 1


def test_only_y_goes_through_the_network(weights):
    """Gray in -> SRCNN(bicubic(gray)); colour: SRCNN on Y, the chroma plain bicubic."""
    pred = Predictor(weights, tile=None)
    gray = photo((20, 24))
    out = upscale_image(gray, 2, pred)
    expect = pred(imresize(gray / 255.0, 2))
    assert out.shape == (40, 48) and out.dtype == np.uint8
    assert np.abs(out.astype(float) - np.clip(expect, 0, 1) * 255).max() <= 0.5 + 1e-3

    rgb = np.random.RandomState(3).randint(0, 256, (20, 24, 3)).astype(np.uint8)
    up = imresize(rgb2ycbcr(rgb / 255.0), 2)                 # Y, Cb, Cr all bicubic ...
    up[..., 0] = pred(up[..., 0])                             # ... then SRCNN on Y only
    expect = np.clip(ycbcr2rgb(up), 0, 1) * 255
    out = upscale_image(rgb, 2, pred)
    assert out.shape == (40, 48, 3)
    assert np.abs(out - expect).max() <= 0.5 + 1e-3
    sr_chroma = up.copy()
    sr_chroma[..., 1:] = np.stack([pred(up[..., c]) for c in (1, 2)], axis=2)
    assert np.abs(out - np.clip(ycbcr2rgb(sr_chroma), 0, 1) * 255).max() > 5  # the test can tell


@pytest.mark.parametrize("mode,shape,dtype", [
    ("RGB", (20, 24, 3), np.uint8), ("L", (20, 24), np.uint8), ("RGBA", (20, 24, 4), np.uint8),
    ("I;16", (20, 24), np.uint16)])
def test_cli_keeps_mode_and_size(weights_file, tmp_path, mode, shape, dtype):
    src, dst = tmp_path / "in.png", tmp_path / "out.png"
    arr = photo(shape, dtype)
    if mode == "RGBA":
        arr[..., 3] = np.linspace(0, 255, 24, dtype=np.uint8)[None, :]
    Image.fromarray(arr, mode=mode if mode == "I;16" else None).save(src)
    res = run_cli("upscale", "--weights", weights_file, str(src), "-o", str(dst))
    assert res.returncode == 0, res.stderr
    out = Image.open(dst)
    assert out.size == (48, 40)
    assert out.mode == mode
    if mode == "RGBA":   # alpha is bicubic-upscaled, not dropped or made opaque
        alpha = np.array(out)[..., 3]
        assert alpha[:, 0].max() < 20 and alpha[:, -1].min() > 235


def test_palette_becomes_rgb_and_jpeg_in_any_format_out(weights_file, tmp_path):
    pal = Image.fromarray(photo((20, 24, 3))).convert("P", palette=Image.ADAPTIVE, colors=16)
    pal.save(tmp_path / "pal.png")
    Image.fromarray(photo((20, 24, 3))).save(tmp_path / "photo.jpg", quality=90)
    for src, dst, mode in [("pal.png", "pal_x2.png", "RGB"), ("photo.jpg", "photo_x2.bmp", "RGB"),
                           ("photo.jpg", "photo_x2.jpg", "RGB")]:
        res = run_cli("upscale", "--weights", weights_file, str(tmp_path / src), "-o", str(tmp_path / dst))
        assert res.returncode == 0, res.stderr
        out = Image.open(tmp_path / dst)
        assert out.mode == mode and out.size == (48, 40)


def test_sixteen_bit_keeps_its_precision(identity):
    img = photo((20, 24, 3), np.uint16)
    out = upscale_image(img, 2, Predictor(identity, tile=None))
    assert out.dtype == np.uint16 and out.shape == (40, 48, 3)
    assert len(np.unique(out[..., 1])) > 256   # more levels than 8 bits could hold
    expect = np.clip(imresize(img / 65535.0, 2), 0, 1) * 65535   # identity net: plain bicubic
    assert np.abs(out - expect).max() < 3


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n\x00\x00", b"hello, not an image"])
def test_broken_single_input_writes_nothing(weights_file, tmp_path, content):
    src, dst = tmp_path / "bad.png", tmp_path / "out.png"
    src.write_bytes(content)
    res = run_cli("upscale", "--weights", weights_file, str(src), "-o", str(dst))
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and res.stderr.startswith("error: ")
    assert "bad.png" in res.stderr and not dst.exists()
    assert os.listdir(tmp_path) == ["bad.png"]


def test_missing_input(weights_file, tmp_path):
    res = run_cli("upscale", "--weights", weights_file, str(tmp_path / "nope.png"), "-o", str(tmp_path / "o.png"))
    assert res.returncode == 2 and "no such file" in res.stderr and "Traceback" not in res.stderr


def test_folder_run_writes_good_files_and_names_bad_ones(weights_file, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(photo((20, 24, 3))).save(src / "a.png")
    (src / "b.png").write_bytes(b"truncated")
    Image.fromarray(photo((16, 16))).save(src / "c.png")
    res = run_cli("upscale", "--weights", weights_file, str(src), "-o", str(tmp_path / "out"))
    assert res.returncode == 2
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "c.png"]
    assert res.stderr.strip().splitlines()[-1] == "error: 1 of 3 image(s) failed: b.png"


def test_wrong_scale_for_weights(weights_file, tmp_path):
    Image.fromarray(photo((20, 24))).save(tmp_path / "a.png")
    res = run_cli("upscale", "--weights", weights_file, "--scale", "3", str(tmp_path / "a.png"),
                  "-o", str(tmp_path / "b.png"))
    assert res.returncode == 2 and "x2, not x3" in res.stderr
