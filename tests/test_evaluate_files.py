"""``evaluate --lr`` (LR images from files) and ``evaluate --save-dir`` (the SR images as files).

The fast tests run the protocol with the identity as the "network" (the
SRCNN output is then the bicubic input), so what is checked is the
protocol's own arithmetic; the slow ones run the shipped and the authors' models.
"""
import math
import os

import numpy as np
import pytest
from PIL import Image

from srcnn_theano.errors import SRCNNError
from srcnn_theano.evaluation.metrics import psnr, shave
from srcnn_theano.evaluation.protocol import (evaluate_image, evaluate_paths, save_paths, sr_images)
from srcnn_theano.image.imresize import degrade, imresize
from srcnn_theano.image.io import list_images, read_image
from srcnn_theano.image.units import from_float, to_float
from srcnn_theano.image.ycbcr import rgb2ycbcr

from conftest import ARCH_915, authors_model, random_arrays, require_data


def identity(y):
    return y


def test_lr_file_replaces_the_degradation():
    """A hand-made LR image (not a resize of the HR): its Y, MATLAB-bicubic enlarged, is the input."""
    rng = np.random.RandomState(0)
    hr = rng.randint(0, 256, (26, 25)).astype(np.uint8)            # modcropped to 24x24 at x3
    lr = rng.randint(0, 256, (8, 8)).astype(np.uint8)
    row = evaluate_image(hr, 3, identity, "hr.png", lr=lr, lr_name="lr.png")
    bic8 = from_float(imresize(to_float(lr), output_shape=(24, 24)))
    assert np.array_equal(row["images"]["bicubic"], bic8)
    assert row["bicubic_psnr"] == pytest.approx(psnr(shave(hr[:24, :24], 3), shave(bic8, 3)))
    assert row["bicubic_psnr"] != evaluate_image(hr, 3, identity, "hr.png")["bicubic_psnr"]


def test_lr_file_y_is_matlab_rgb2ycbcr():
    """Uniform colours: the HR's Y is 123 (RGB 200, 100, 50: 16 + 27199.8 / 255 = 122.67 -> 123),
    the LR's 128 (RGB 210, 106, 50: 16 + (13751.01 + 13626.618 + 1248.3) / 255 = 128.26 -> 128);
    bicubic keeps a constant constant, so the PSNR is 20 log10(255 / 5)."""
    hr = np.broadcast_to(np.array([200, 100, 50], np.uint8), (24, 24, 3)).copy()
    lr = np.broadcast_to(np.array([210, 106, 50], np.uint8), (8, 8, 3)).copy()
    y_lr = math.floor(16 + (65.481 * 210 + 128.553 * 106 + 24.966 * 50) / 255 + 0.5)
    row = evaluate_image(hr, 3, identity, "hr.png", lr=lr)
    assert (row["images"]["bicubic"] == y_lr).all() and (row["images"]["gt"] == 123).all()
    assert y_lr == 128
    assert row["bicubic_psnr"] == pytest.approx(20 * math.log10(255 / 5))


def test_lr_file_errors_name_the_file():
    hr = np.zeros((24, 24, 3), np.uint8)
    with pytest.raises(SRCNNError, match=r"LR image l\.png is 9x8; x3 of the ground truth h\.png "
                                         r"\(24x24 after modcrop\) needs 8x8"):
        evaluate_image(hr, 3, identity, "h.png", lr=np.zeros((9, 8, 3), np.uint8), lr_name="l.png")
    with pytest.raises(SRCNNError, match="l.png is gray, its ground truth h.png is colour"):
        evaluate_image(hr, 3, identity, "h.png", lr=np.zeros((8, 8), np.uint8), lr_name="l.png")


def test_sr_images_sizes_and_channels():
    rng = np.random.RandomState(1)
    colour = rng.randint(0, 256, (26, 31, 3)).astype(np.uint8)
    row = evaluate_image(colour, 3, identity, "c.png", outputs=True)
    out = row["outputs"]
    assert out["srcnn"].shape == out["bicubic"].shape == (24, 30, 3) and out["srcnn"].dtype == np.uint8
    # Cb/Cr: the ground truth's, degraded like its Y (float rgb2ycbcr, as upscale does)
    cbcr = degrade(rgb2ycbcr(to_float(colour[:24, :30]))[:, :, 1:], 3)
    got = rgb2ycbcr(to_float(out["bicubic"]))
    assert np.abs(got[:, :, 1:] - cbcr).max() < 1.5 / 255 + 1e-9        # uint8 RGB round trip
    assert np.abs(got[:, :, 0] * 255 - row["images"]["bicubic"]).max() <= 1.0
    gray = rng.randint(0, 256, (25, 25)).astype(np.uint8)
    g = sr_images(gray, 3, degrade(to_float(gray[:24, :24]), 3), np.zeros((24, 24)))
    assert g["srcnn"].shape == (24, 24) and (g["srcnn"] == 0).all()
    assert np.array_equal(g["bicubic"], from_float(degrade(to_float(gray[:24, :24]), 3)))


def test_save_paths_refuse_two_images_with_one_stem(tmp_path):
    assert save_paths(str(tmp_path), ["baby_GT.bmp"]) == {
        "baby_GT.bmp": (str(tmp_path / "SRCNN" / "baby_GT.png"), str(tmp_path / "bicubic" / "baby_GT.png"))}
    with pytest.raises(SRCNNError, match="both be saved as a.png"):
        save_paths(str(tmp_path), ["a.bmp", "a.png"])


def _write(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path)
    return str(path)


def test_save_dir_files_and_sizes(tmp_path):
    """evaluate_paths(save_dir=...): one colour and one gray PNG per method, each the modcropped size;
    the saved SRCNN gray image is exactly the Y that was scored."""
    from srcnn_theano.network.weights import Weights

    rng = np.random.RandomState(2)
    colour = _write(tmp_path / "gt" / "c_GT.bmp", rng.randint(0, 256, (40, 44, 3)).astype(np.uint8))
    gray = _write(tmp_path / "gt" / "g.png", rng.randint(0, 256, (41, 43)).astype(np.uint8))
    weights = Weights(random_arrays(ARCH_915, std=0.05, fan_in=True), ARCH_915, 3)
    out = tmp_path / "out"
    report = evaluate_paths([colour, gray], 3, weights, save_dir=str(out))
    assert sorted(os.listdir(out)) == ["SRCNN", "bicubic"]
    assert sorted(os.listdir(out / "SRCNN")) == sorted(os.listdir(out / "bicubic")) == ["c_GT.png", "g.png"]
    assert read_image(str(out / "SRCNN" / "c_GT.png")).shape == (39, 42, 3)
    assert read_image(str(out / "bicubic" / "g.png")).shape == (39, 42)
    from srcnn_theano.evaluation.score import score_folder

    scored = score_folder([gray], str(out / "SRCNN"), 3)
    assert scored["images"][0]["psnr"] == pytest.approx(report["images"][1]["srcnn_psnr"], abs=1e-12)


def test_score_of_saved_images_reproduces_evaluate():
    """`score` on DIR/SRCNN reproduces evaluate's SRCNN PSNR within the RGB round trip
    (Set5 x3, authors' 9-1-5: measured within 0.03 dB per image, 0.01 dB on the mean)."""
    import tempfile

    from srcnn_theano.evaluation.score import score_folder
    from srcnn_theano.network.weights import load

    paths = list_images(require_data("Set5"))
    with tempfile.TemporaryDirectory() as out:
        report = evaluate_paths(paths, 3, load(authors_model("9-1-5(91 images)", 3)), save_dir=out)
        scored = score_folder(paths, os.path.join(out, "SRCNN"), 3, "matlab")
        bicubic = score_folder(paths, os.path.join(out, "bicubic"), 3, "matlab")
    for r, s, b in zip(report["images"], scored["images"], bicubic["images"]):
        assert abs(r["srcnn_psnr"] - s["psnr"]) < 0.03, (r, s)
        assert abs(r["bicubic_psnr"] - b["psnr"]) < 0.03, (r, b)
    assert abs(report["mean"]["srcnn_psnr"] - scored["mean"]["psnr"]) < 0.01


def test_imresize_border_rule():
    """'replicate' is MATLAB's older imresize.m: the same resize with clamped instead of mirrored borders."""
    from srcnn_theano.evaluation.protocol import bicubic_y

    y = np.random.RandomState(4).rand(24, 21)
    old = imresize(imresize(y, scale=1 / 3, padding="replicate"), output_shape=y.shape, padding="replicate")
    assert np.array_equal(bicubic_y(y, 3, border="replicate"), old)
    assert np.array_equal(bicubic_y(y, 3), degrade(y, 3))
    assert not np.allclose(old, degrade(y, 3))
    hr = (y * 255).astype(np.uint8)
    a = evaluate_image(hr, 3, identity, imresize_border="replicate")
    b = evaluate_image(hr, 3, identity)
    assert a["bicubic_psnr"] != b["bicubic_psnr"]
    with pytest.raises(SRCNNError, match="imresize border"):
        evaluate_image(hr, 3, identity, imresize_border="reflect")


PAPERS = [  # (arch, scale, set, bicubic, srcnn): ECCV 2014 Table 1 (9-1-5), TPAMI 2015 Table 2 (9-5-5)
    ("9-1-5(91 images)", 2, "Set5", 33.66, 36.34), ("9-1-5(91 images)", 3, "Set5", 30.39, 32.39),
    ("9-1-5(91 images)", 4, "Set5", 28.42, 30.09), ("9-1-5(91 images)", 2, "Set14", 30.23, 32.18),
    ("9-1-5(91 images)", 3, "Set14", 27.54, 29.00), ("9-1-5(91 images)", 4, "Set14", 26.00, 27.20),
    ("9-5-5(ImageNet)", 2, "Set5", 33.66, 36.66), ("9-5-5(ImageNet)", 3, "Set5", 30.39, 32.75),
    ("9-5-5(ImageNet)", 4, "Set5", 28.42, 30.49), ("9-5-5(ImageNet)", 2, "Set14", 30.23, 32.45),
    ("9-5-5(ImageNet)", 3, "Set14", 27.54, 29.30), ("9-5-5(ImageNet)", 4, "Set14", 26.00, 27.50),
]


@pytest.mark.slow
@pytest.mark.parametrize("arch,scale,dataset,bicubic,srcnn", PAPERS,
                         ids=[f"{a}-x{s}-{d}" for a, s, d, _, _ in PAPERS])
def test_old_imresize_reproduces_every_printed_number(arch, scale, dataset, bicubic, srcnn):
    """With the 2007-2013 imresize border rule the papers' two-decimal numbers come out exactly
    (with today's, Set5 x4 reads 30.48 / 30.08 instead of 30.49 / 30.09, Set14 x3 29.29 for 29.30)."""
    from srcnn_theano.network.weights import load

    report = evaluate_paths(list_images(require_data(dataset)), scale, load(authors_model(arch, scale)),
                            imresize_border="replicate")
    assert f"{report['mean']['bicubic_psnr']:.2f}" == f"{bicubic:.2f}"
    assert f"{report['mean']['srcnn_psnr']:.2f}" == f"{srcnn:.2f}"
