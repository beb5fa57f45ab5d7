"""``score``: the three protocols on hand-computed values, pairing by name and its errors, the command.

Expected values are worked out by hand in the comments (BT.601 coefficients
65.481, 128.553, 24.966 on [0, 1] inputs plus 16).
"""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from srcnn_theano.errors import SRCNNError
from srcnn_theano.evaluation import metrics
from srcnn_theano.evaluation.pairing import match, pair
from srcnn_theano.evaluation.score import basicsr_y, matlab_y, score_folder, score_images

from conftest import REPO


def uniform(shape, value):
    return np.full(shape, value, np.uint8) if np.isscalar(value) else \
        np.broadcast_to(np.array(value, np.uint8), shape).copy()


def db(mse):
    return 10 * math.log10(255 ** 2 / mse)


# --------------------------------------------------------------------------
# The protocols
# --------------------------------------------------------------------------

def test_one_pair_three_protocols_three_answers():
    """RGB (200, 100, 50) against (200, 100, 56), 20x20, x2.

    * matlab: Y = 16 + (65.481*200 + 128.553*100 + 24.966*50) / 255 = 122.666 -> 123, and
      16 + (27199.8 + 24.966*56 - 24.966*50 ... ) = 123.253 -> 123: the same uint8 Y, PSNR inf.
    * basicsr: float Y differs by 24.966 * 6 / 255 = 0.587435: PSNR 20 log10(255 / 0.587435).
    * rgb: only B differs, by 6: MSE = 36 / 3 = 12.
    """
    hr, sr = uniform((20, 20, 3), (200, 100, 50)), uniform((20, 20, 3), (200, 100, 56))
    m = score_images(hr, sr, 2, "matlab")
    assert m["psnr"] == float("inf") and m["ssim"] == pytest.approx(1.0)
    b = score_images(hr, sr, 2, "basicsr")
    assert b["psnr"] == pytest.approx(20 * math.log10(255 / (24.966 * 6 / 255)), abs=1e-4)
    y1, y2 = 16 + 27199.8 / 255, 16 + (27199.8 + 24.966 * 6) / 255
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2   # constant images: the SSIM map is the mean term
    assert b["ssim"] == pytest.approx((2 * y1 * y2 + c1) / (y1 ** 2 + y2 ** 2 + c1), abs=1e-7)
    r = score_images(hr, sr, 2, "rgb")
    assert r["psnr"] == pytest.approx(db(12.0), abs=1e-9)
    blue = (2 * 50 * 56 + c1) / (50 ** 2 + 56 ** 2 + c1)
    assert r["ssim"] == pytest.approx((1 + 1 + blue) / 3, abs=1e-7)


def test_gray_images_under_each_protocol():
    """Gray 100 against gray 110: matlab and rgb see a difference of 10 levels; basicsr reads the
    files in colour (three equal channels), so its Y differs by 219 * 10 / 255 = 8.588."""
    hr, sr = uniform((24, 24), 100), uniform((24, 24), 110)
    assert score_images(hr, sr, 3, "matlab")["psnr"] == pytest.approx(db(100.0), abs=1e-9)
    assert score_images(hr, sr, 3, "rgb")["psnr"] == pytest.approx(db(100.0), abs=1e-9)
    assert score_images(hr, sr, 3, "basicsr")["psnr"] == pytest.approx(
        20 * math.log10(255 / (219 * 10 / 255)), abs=1e-4)


def test_basicsr_y_is_float_and_not_rounded_matlab_y_is():
    px = np.array([[[0, 0, 0], [255, 255, 255], [128, 128, 128], [200, 100, 50]]], np.uint8)
    y = basicsr_y(px)[0]
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, [16, 235, 16 + 219 * 128 / 255, 16 + 27199.8 / 255], atol=2e-5)
    assert y[2] != round(y[2])
    assert np.array_equal(y.astype(np.float32), y)       # stored in float32, as BasicSR does
    assert matlab_y(px)[0].tolist() == [16, 235, 126, 123] and matlab_y(px).dtype == np.uint8


def test_shave_is_scale_by_default_and_shave_option_overrides():
    """Differences only in the outer 3 pixels: invisible at x3, counted with shave 0."""
    rng = np.random.RandomState(0)
    hr = rng.randint(0, 256, (30, 30)).astype(np.uint8)
    sr = hr.copy()
    sr[:3, :] = np.clip(sr[:3, :].astype(int) + 10, 0, 255)
    diff = sr.astype(float) - hr
    for protocol in ("matlab", "rgb"):
        assert score_images(hr, sr, 3, protocol)["psnr"] == float("inf")
        assert score_images(hr, sr, 3, protocol, shave=0)["psnr"] == pytest.approx(
            db(np.mean(diff ** 2)), abs=1e-9)
    assert score_images(hr, sr, 3, "matlab", shave=2)["psnr"] < float("inf")


def test_matlab_modcrops_the_ground_truth_and_accepts_either_sr_size():
    """HR 31x32 at x3 -> 30x30; one pixel off by 20 in the 24x24 left after shaving 3."""
    rng = np.random.RandomState(1)
    hr = rng.randint(0, 256, (31, 32)).astype(np.uint8)
    hr[10, 10] = 100
    sr = hr[:30, :30].copy()
    sr[10, 10] = 120
    want = db(400 / 576)
    assert score_images(hr, sr, 3, "matlab")["psnr"] == pytest.approx(want, abs=1e-9)
    full = hr.copy()
    full[10, 10] = 120
    assert score_images(hr, full, 3, "matlab")["psnr"] == pytest.approx(want, abs=1e-9)
    with pytest.raises(SRCNNError, match=r"x\.png is 30x31.*needs 30x30"):
        score_images(hr, hr[:30, :31], 3, "matlab", sr_name="x.png")


def test_basicsr_takes_the_ground_truth_size_or_its_modcrop_only():
    """HR 31x32 at x3: SR 31x32 or 30x30 (the GT cropped to it); 30x31, 30x32, 29x30 are refused."""
    hr = uniform((31, 32, 3), 90)
    assert score_images(hr, hr, 3, "basicsr")["psnr"] == float("inf")
    assert score_images(hr, hr[:30, :30], 3, "basicsr")["psnr"] == float("inf")
    for h, w in ((30, 31), (30, 32), (29, 30)):
        with pytest.raises(SRCNNError, match=rf"x\.png is {h}x{w}.*needs 31x32 \(basicsr: or 30x30"):
            score_images(hr, hr[:h, :w], 3, "basicsr", sr_name="x.png")


def test_colour_results_for_a_gray_ground_truth():
    hr = uniform((24, 24), 100)
    three = uniform((24, 24, 3), 100)
    assert score_images(hr, three, 2, "matlab")["psnr"] == float("inf")  # equal channels are gray
    tinted = three.copy()
    tinted[..., 2] = 101
    with pytest.raises(SRCNNError, match="colour"):
        score_images(hr, tinted, 2, "matlab", sr_name="t.png")


def test_too_small_and_unknown_protocol():
    with pytest.raises(SRCNNError, match="too small"):
        score_images(uniform((16, 16), 1), uniform((16, 16), 1), 3, "matlab")
    with pytest.raises(SRCNNError, match="unknown protocol"):
        score_images(uniform((30, 30), 1), uniform((30, 30), 1), 3, "ycbcr")


def _naive_ssim(a, b):
    """SSIM by its definition: every 11x11 window entirely inside the image, Gaussian sigma 1.5."""
    x = np.arange(11) - 5
    g = np.exp(-x ** 2 / (2 * 1.5 ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            p, q = a[i:i + 11, j:j + 11], b[i:i + 11, j:j + 11]
            mp, mq = (w * p).sum(), (w * q).sum()
            vp, vq, cov = (w * p * p).sum() - mp ** 2, (w * q * q).sum() - mq ** 2, (w * p * q).sum() - mp * mq
            vals.append((2 * mp * mq + c1) * (2 * cov + c2) / ((mp ** 2 + mq ** 2 + c1) * (vp + vq + c2)))
    return np.mean(vals)


def test_basicsr_ssim_is_the_valid_gaussian_ssim():
    rng = np.random.RandomState(2)
    a = rng.rand(17, 15) * 255
    b = np.clip(a + rng.randn(17, 15) * 25, 0, 255)
    assert metrics.ssim_basicsr(a, b) == pytest.approx(_naive_ssim(a, b), abs=1e-10)
    with pytest.raises(ValueError):
        metrics.ssim_basicsr(a[:10], b[:10])


# --------------------------------------------------------------------------
# Pairing
# --------------------------------------------------------------------------

def test_pairing_rules():
    sr = ["r/img_001_SRF_3_A+.png", "r/img_002_SRF_3_A+.png", "r/baby.png", "r/baby_GT.png.bak.png"]
    assert match("h/img_001_SRF_3_HR.png", sr) == "r/img_001_SRF_3_A+.png"
    assert match("h/baby_GT.bmp", ["r/baby.png"]) == "r/baby.png"
    assert match("h/baby_GT.bmp", ["r/baby_GT.png", "r/baby.png"]) == "r/baby_GT.png"  # exact first
    assert match("h/0801.png", ["r/0801x3.png", "r/0802x3.png"]) == "r/0801x3.png"
    assert match("h/img_1_HR.png", ["r/img_1_x.png", "r/img_10_x.png"]) == "r/img_1_x.png"
    assert pair(["h/b_GT.bmp", "h/a_GT.bmp"], ["r/a.png", "r/b.png"]) == ["r/b.png", "r/a.png"]


def test_pairing_errors_name_the_files():
    with pytest.raises(SRCNNError, match=r"no SR image for bird_GT\.bmp in R"):
        match("h/bird_GT.bmp", ["R/baby.png"], where="R")
    with pytest.raises(SRCNNError, match=r"ambiguous SR image for baby_GT\.bmp.*baby_a\.png, baby_b\.png"):
        match("h/baby_GT.bmp", ["r/baby_a.png", "r/baby_b.png"])
    with pytest.raises(SRCNNError, match="ambiguous.*baby.bmp, baby.png"):
        match("h/baby.bmp", ["r/baby.png", "r/baby.bmp"])
    with pytest.raises(SRCNNError, match="matches two ground-truth images"):
        pair(["h/a_GT.bmp", "h/a_HR.bmp"], ["r/a.png"])


# --------------------------------------------------------------------------
# Folders and the command line
# --------------------------------------------------------------------------

def _save(folder, name, arr):
    folder.mkdir(exist_ok=True)
    Image.fromarray(arr).save(folder / name)
    return str(folder / name)


@pytest.fixture
def folders(tmp_path):
    rng = np.random.RandomState(3)
    hr, sr = tmp_path / "hr", tmp_path / "sr"
    a = rng.randint(0, 256, (30, 30, 3)).astype(np.uint8)
    b = rng.randint(0, 256, (30, 30, 3)).astype(np.uint8)
    _save(hr, "baby_GT.bmp", a)
    _save(hr, "bird_GT.bmp", b)
    a2 = a.copy()
    a2[10, 10] = 0
    _save(sr, "baby.png", a2)
    _save(sr, "bird_GT.png", b)
    return hr, sr, a, a2


def test_score_folder_report(folders):
    hr, sr, a, a2 = folders
    from srcnn_theano.image.io import list_images

    report = score_folder(list_images(str(hr)), str(sr), 3, "rgb")
    assert report["scale"] == 3 and report["protocol"] == "rgb" and report["shave"] == 3
    assert [r["name"] for r in report["images"]] == ["baby_GT.bmp", "bird_GT.bmp"]
    want = db(np.sum((a2[10, 10].astype(float) - a[10, 10]) ** 2) / (24 * 24 * 3))
    assert report["images"][0]["psnr"] == pytest.approx(want, abs=1e-9)
    assert report["images"][1]["psnr"] == float("inf")


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "srcnn_theano", *args], cwd=REPO,
                          capture_output=True, text=True)


def test_score_command_json_and_table(folders):
    hr, sr, _, _ = folders
    res = run_cli("score", "--hr", str(hr), "--sr", str(sr), "--scale", "3", "--protocol", "basicsr",
                  "--shave", "4", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert set(report) == {"scale", "protocol", "shave", "images", "mean"}
    assert (report["scale"], report["protocol"], report["shave"]) == (3, "basicsr", 4)
    assert set(report["images"][0]) == {"name", "psnr", "ssim"} and set(report["mean"]) == {"psnr", "ssim"}
    table = run_cli("score", "--hr", str(hr), "--sr", str(sr), "--scale", "3")
    assert table.returncode == 0 and "matlab" in table.stdout and "baby_GT.bmp" in table.stdout


def test_score_command_errors_are_one_line(folders, tmp_path):
    hr, sr, a, _ = folders
    os.remove(sr / "bird_GT.png")
    res = run_cli("score", "--hr", str(hr), "--sr", str(sr), "--scale", "3")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "bird_GT.bmp" in res.stderr
    _save(sr, "bird_GT.png", a[:29])
    res = run_cli("score", "--hr", str(hr), "--sr", str(sr), "--scale", "3")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "bird_GT.png is 29x30" in res.stderr


# --------------------------------------------------------------------------
# basicsr on a real image whose size is not a multiple of the scale
# --------------------------------------------------------------------------

def _basicsr_y(bgr):
    """BasicSR's ``to_y_channel`` (``metric_util``) of uint8 BGR, with ``bgr2ycbcr(y_only=True)``."""
    img = bgr.astype(np.float32) / 255.
    y = np.dot(img, [24.966, 128.553, 65.481]) + 16.0    # bgr2ycbcr, float32 in: float64 out
    y = (y / 255.).astype(np.float32)                     # _convert_output_type_range(float32)
    return y[..., None] * 255.


def _basicsr_ssim_plane(a, b):
    """BasicSR's ``_ssim``: 11x11 Gaussian (sigma 1.5) window, 'valid' part, mean of the map."""
    from scipy.signal import correlate2d

    g = np.exp(-(np.arange(11) - 5.0) ** 2 / (2 * 1.5 ** 2))
    g /= g.sum()
    win = np.outer(g, g)
    f = lambda x: correlate2d(x, win, mode="valid")  # noqa: E731
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu1, mu2 = f(a), f(b)
    s1, s2, s12 = f(a * a) - mu1 ** 2, f(b * b) - mu2 ** 2, f(a * b) - mu1 * mu2
    m = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1 ** 2 + mu2 ** 2 + c1) * (s1 + s2 + c2))
    return m.mean()


def basicsr_reference(gt_rgb, sr_rgb, scale):
    """What BasicSR reports for an SR image made from an LR image of ``sr.shape / scale``.

    ``PairedImageDataset`` crops the GT to ``img_gt[0:lq_h * scale, 0:lq_w * scale]``;
    ``calculate_psnr`` / ``calculate_ssim`` (``crop_border=scale``,
    ``test_y_channel=True``) crop the border, take the Y of the BGR images
    and measure in float64.
    """
    lq_h, lq_w = sr_rgb.shape[0] // scale, sr_rgb.shape[1] // scale
    gt = gt_rgb[0:lq_h * scale, 0:lq_w * scale, ::-1]
    sr = sr_rgb[..., ::-1]
    c = scale
    gt, sr = gt[c:-c, c:-c], sr[c:-c, c:-c]
    a, b = _basicsr_y(gt).astype(np.float64), _basicsr_y(sr).astype(np.float64)
    mse = np.mean((a - b) ** 2)
    psnr = 10. * np.log10(255. * 255. / mse)
    return psnr, np.mean([_basicsr_ssim_plane(a[..., i], b[..., i]) for i in range(a.shape[2])])


def _bicubic_sr(hr, scale):
    """A plausible SR image: the modcropped ground truth down by MATLAB bicubic (uint8), then up."""
    from srcnn_theano.image.imresize import imresize, modcrop

    lr = imresize(modcrop(hr, scale), scale=1.0 / scale)
    return imresize(lr, scale=scale)


@pytest.mark.parametrize("name, scale", [("head_GT.bmp", 3), ("woman_GT.bmp", 3), ("baby_GT.bmp", 3)])
def test_basicsr_modcropped_sr_matches_basicsrs_formulas(name, scale):
    from srcnn_theano.image.io import read_image
    from conftest import require_data

    hr = read_image(require_data("Set5", name))
    assert hr.shape[0] % scale or hr.shape[1] % scale          # a size that needs the crop
    sr = _bicubic_sr(hr, scale)
    assert sr.dtype == np.uint8 and sr.shape[:2] == (hr.shape[0] // scale * scale,
                                                     hr.shape[1] // scale * scale)
    got = score_images(hr, sr, scale, "basicsr")
    psnr, ssim = basicsr_reference(hr, sr, scale)
    assert 20 < psnr < 40
    assert got["psnr"] == pytest.approx(psnr, abs=1e-9)
    assert got["ssim"] == pytest.approx(ssim, abs=1e-9)


def test_score_command_basicsr_accepts_modcropped_sr(tmp_path):
    from srcnn_theano.image.io import read_image
    from conftest import require_data

    src = require_data("Set5", "head_GT.bmp")
    hr = read_image(src)                                   # 280x280: 279x279 at x3
    sr = _bicubic_sr(hr, 3)
    hr_dir = tmp_path / "hr"
    hr_dir.mkdir()
    os.symlink(src, hr_dir / "head_GT.bmp")
    _save(tmp_path / "sr", "head.png", sr)
    res = run_cli("score", "--hr", str(hr_dir), "--sr", str(tmp_path / "sr"), "--scale", "3",
                  "--protocol", "basicsr", "--json")
    assert res.returncode == 0, res.stderr
    want, _ = basicsr_reference(hr, sr, 3)
    assert json.loads(res.stdout)["images"][0]["psnr"] == pytest.approx(want, abs=1e-9)
    _save(tmp_path / "sr", "head.png", sr[:, :278])
    res = run_cli("score", "--hr", str(hr_dir), "--sr", str(tmp_path / "sr"), "--scale", "3",
                  "--protocol", "basicsr")
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert "head.png is 279x278" in res.stderr and "head_GT.bmp needs 280x280" in res.stderr
