"""Users' own files: never overwritten unless asked, real photographs kept whole, one-line errors.

Library calls where they suffice (fast); a few command-line runs for the rules a user meets.
"""
import io
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms, JpegImagePlugin

from srcnn_theano.apps.upscale import output_paths, upscale_files
from srcnn_theano.errors import SRCNNError
from srcnn_theano.files import atomic_output, check_outputs, remove_stale_temps
from srcnn_theano.image import io as image_io
from srcnn_theano.network.weights import Weights, save

from conftest import ARCH_915, REPO, random_arrays


@pytest.fixture(scope="module")
def weights():
    return Weights(random_arrays(ARCH_915, std=0.05), ARCH_915, scale=2)


@pytest.fixture(scope="module")
def weights_file(weights, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("w") / "x2.npz")
    save(path, weights)
    return path


def photo(h=12, w=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def run(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "srcnn_theano", *args], cwd=cwd,
                          capture_output=True, text=True)


def assert_one_line_error(res, *fragments):
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if not ln.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for f in fragments:
        assert f in lines[0], res.stderr


# --------------------------------------------------------------------------
# Outputs never replace inputs; existing outputs need --force
# --------------------------------------------------------------------------

def test_output_that_is_the_input_is_refused_before_any_work(tmp_path):
    src = tmp_path / "photo.png"
    Image.fromarray(photo()).save(src)
    os.link(src, tmp_path / "hard.png")
    os.symlink(src, tmp_path / "soft.png")
    for out in ("photo.png", "hard.png", "soft.png", "./photo.png"):
        for force in (False, True):
            with pytest.raises(SRCNNError, match="is the input"):
                output_paths([str(src)], str(tmp_path / out), force=force)
    with pytest.raises(SRCNNError, match="input folder"):
        output_paths([str(tmp_path)], str(tmp_path), force=True)
    os.symlink(tmp_path, tmp_path.parent / "same_folder")
    with pytest.raises(SRCNNError, match="input folder"):
        output_paths([str(tmp_path)], str(tmp_path.parent / "same_folder"), force=True)


def test_existing_outputs_need_force_and_missing_folders_are_named(tmp_path):
    src, out = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(photo()).save(src)
    out.write_bytes(b"old")
    with pytest.raises(SRCNNError, match="already exists.*--force"):
        output_paths([str(src)], str(out))
    assert output_paths([str(src)], str(out), force=True) == [(str(src), str(out))]
    with pytest.raises(SRCNNError, match="output folder does not exist"):
        output_paths([str(src)], str(tmp_path / "nope" / "b.png"))
    with pytest.raises(SRCNNError, match="is a folder"):
        check_outputs([str(tmp_path)], force=True)


def test_cli_never_touches_the_original(weights_file, tmp_path):
    src = tmp_path / "photo.jpg"
    Image.fromarray(photo()).save(src, quality=90)
    before = src.read_bytes()
    res = run("upscale", "--weights", weights_file, str(src), "-o", str(src), "--force")
    assert_one_line_error(res, "is the input")
    res = run("upscale", "--weights", weights_file, str(tmp_path), "-o", str(tmp_path))
    assert_one_line_error(res, "input folder")
    res = run("upscale", "--weights", weights_file, str(src), "-o", str(tmp_path / "no" / "x.png"))
    assert_one_line_error(res, "output folder does not exist")
    assert src.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["photo.jpg"]
    out = tmp_path / "big.png"
    assert run("upscale", "--weights", weights_file, str(src), "-o", str(out)).returncode == 0
    assert_one_line_error(run("upscale", "--weights", weights_file, str(src), "-o", str(out)),
                          "already exists")
    assert run("upscale", "--weights", weights_file, str(src), "-o", str(out),
               "--force").returncode == 0


# --------------------------------------------------------------------------
# Real photographs
# --------------------------------------------------------------------------

def _exif(orientation, width, height):
    ex = Image.Exif()
    ex[0x0112] = orientation
    ex[0x010F] = "Maker"
    ex[0x8769] = {0xA002: width, 0xA003: height, 0x9003: "2024:05:06 07:08:09"}
    return ex


def test_exif_orientation_icc_and_metadata_survive_an_upscale(weights, tmp_path):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    stored = photo(10, 16)                      # as the camera wrote it: 16 wide, 10 high
    src = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(src, exif=_exif(6, 16, 10).tobytes(), icc_profile=icc,
                                 quality=95)
    arr, meta = image_io.read_photo(str(src))
    assert arr.shape == (16, 10, 3)             # orientation 6: rotated 90 degrees, upright
    assert meta.icc_profile == icc and 0x0112 not in meta.exif
    for ext in (".jpg", ".png", ".webp"):
        out = tmp_path / f"out{ext}"
        assert upscale_files([(str(src), str(out))], 2, weights, progress=False) == []
        im = Image.open(out)
        assert im.size == (20, 32), ext        # upright, x2
        assert im.info.get("icc_profile") == icc, ext
        ex = im.getexif()
        assert ex.get(0x0112, 1) == 1 and ex.get(0x010F) == "Maker", ext
        assert ex.get_ifd(0x8769)[0xA002] == 20 and ex.get_ifd(0x8769)[0xA003] == 32, ext
        assert ex.get_ifd(0x8769)[0x9003] == "2024:05:06 07:08:09", ext


def test_jpeg_is_written_at_quality_95_with_444_chroma_unless_told(tmp_path):
    img = photo(32, 32)
    for quality in (95, 70):
        path = tmp_path / f"q{quality}.jpg"
        image_io.write_image(str(path), img, quality=quality)
        ref = io.BytesIO()
        Image.fromarray(img).save(ref, format="JPEG", quality=quality, subsampling=0)
        got, want = Image.open(path), Image.open(ref)
        assert JpegImagePlugin.get_sampling(got) == 0          # 4:4:4
        assert got.quantization == want.quantization
    with pytest.raises(SRCNNError, match="quality"):
        image_io.write_image(str(tmp_path / "bad.jpg"), img, quality=0)


def test_gray_alpha_stays_gray_alpha(weights, tmp_path):
    la = np.stack([photo()[..., 0], np.linspace(0, 255, 16, dtype=np.uint8)[None].repeat(12, 0)], 2)
    src, out = tmp_path / "la.png", tmp_path / "la_x2.png"
    Image.fromarray(la, mode="LA").save(src)
    assert image_io.read_image(str(src)).shape == (12, 16, 2)
    assert upscale_files([(str(src), str(out))], 2, weights, progress=False) == []
    im = Image.open(out)
    assert im.mode == "LA" and im.size == (32, 24)
    alpha = np.array(im)[..., 1]
    assert alpha[:, 0].max() < 40 and alpha[:, -1].min() > 215   # the alpha ramp, enlarged


def test_animated_gif_uses_the_first_frame_and_says_so(tmp_path, capfd):
    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (10, 200)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    arr = image_io.read_image(str(path))
    assert arr.shape == (8, 8, 3) and abs(int(arr.mean()) - 10) <= 2
    assert "2 frames; using the first" in capfd.readouterr().err


# --------------------------------------------------------------------------
# Large images: our limit, never Pillow's bomb exception
# --------------------------------------------------------------------------

def _png_header_only(width, height):
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (its data are truncated)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def test_pixel_limit_is_ours_and_can_be_raised(tmp_path, weights_file):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(15000, 15000))       # 225 Mpx in a few bytes
    with pytest.raises(SRCNNError, match="225.0 million pixels, over the limit of 100 million"):
        image_io.read_image(str(bomb))
    try:
        image_io.set_pixel_limit(300_000_000)
        with pytest.raises(SRCNNError, match="cannot read image"):   # allowed, then truncated
            image_io.read_image(str(bomb))
        small = tmp_path / "small.png"
        Image.fromarray(photo()).save(small)
        image_io.set_pixel_limit(100)
        with pytest.raises(SRCNNError, match="small.png: 16x12 is 0.0 million pixels, over"):
            image_io.read_image(str(small))
    finally:
        image_io.set_pixel_limit(None)
    res = run("upscale", "--weights", weights_file, str(bomb), "-o", str(tmp_path / "o.png"))
    assert_one_line_error(res, "bomb.png", "--max-pixels")
    assert "DecompressionBomb" not in res.stderr


# --------------------------------------------------------------------------
# Broken weights files: one line naming the file, in every command that loads them
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name,content", [
    ("trunc.npz", None), ("text.mat", b"not a MATLAB file\n" * 20), ("empty.npz", b""),
])
def test_broken_weights_files_give_one_line_errors(weights_file, tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(open(weights_file, "rb").read()[:300] if content is None else content)
    img = tmp_path / "img.png"
    Image.fromarray(photo(30, 30)).save(img)
    for args in (["upscale", str(img), "-o", str(tmp_path / "o.png")], ["evaluate", str(img)]):
        res = run(args[0], "--weights", str(path), "--scale", "2", *args[1:])
        assert_one_line_error(res, name)
        assert "Traceback" not in res.stderr
    assert not (tmp_path / "o.png").exists()


# --------------------------------------------------------------------------
# Killed runs
# --------------------------------------------------------------------------

def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_a_killed_run_are_removed_by_the_next(tmp_path, capfd):
    out = tmp_path / "result.png"
    stale = tmp_path / f".tmp-result.png-{_dead_pid()}-abc123.png"
    live = tmp_path / f".tmp-result.png-{os.getpid()}-def456.png"    # a live writer's: kept
    other = tmp_path / f".tmp-other.png-{_dead_pid()}-ghi789.png"     # another output's: kept
    for p in (stale, live, other):
        p.write_bytes(b"partial")
    with atomic_output(str(out), suffix=".png") as tmp:
        assert str(os.getpid()) in os.path.basename(tmp)
        open(tmp, "wb").write(b"complete")
    assert out.read_bytes() == b"complete"
    assert not stale.exists() and live.exists() and other.exists()
    assert f"removed {stale}" in capfd.readouterr().err
    assert remove_stale_temps(str(tmp_path / "other.png")) == [other.name]


def test_kill_9_of_patch_generation_leaves_no_output_and_the_next_run_cleans_up(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.fromarray(photo(120, 120, seed=i)).save(images / f"{i}.png")
    out = tmp_path / "train.h5"
    cmd = [sys.executable, os.path.join(REPO, "data_prep", "generate_h5.py"), "--images",
           str(images), "--scale", "3", "--output", str(out), "--augment", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):   # until it has started writing
            if any(n.startswith(".tmp-train.h5-") for n in os.listdir(tmp_path)):
                break
            if proc.poll() is not None:
                pytest.fail("generate_h5 finished before it could be killed")
            import time
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    left = [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]
    assert left and not out.exists()
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "left by a run that was killed" in res.stderr
    assert out.exists() and not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]


def test_figure_follows_the_same_rule(weights_file, tmp_path):
    img = tmp_path / "hr.png"
    Image.fromarray(photo(40, 40)).save(img)
    res = run("figure", "--weights", weights_file, str(img), "-o", str(img))
    assert_one_line_error(res, "is the input")
    out = tmp_path / "fig.png"
    out.write_bytes(b"mine")
    assert_one_line_error(run("figure", "--weights", weights_file, str(img), "-o", str(out)),
                          "already exists")
    assert out.read_bytes() == b"mine"


def test_evaluate_save_dir_and_benchmark_follow_the_same_rule(weights_file, tmp_path):
    hr = tmp_path / "SRCNN"
    hr.mkdir()
    Image.fromarray(photo(30, 30)).save(hr / "img.png")
    before = (hr / "img.png").read_bytes()
    # --save-dir DIR writes DIR/SRCNN/img.png: here that is the ground truth itself
    res = run("evaluate", "--weights", weights_file, "--scale", "2", str(hr), "--save-dir",
              str(tmp_path), "--force")
    assert_one_line_error(res, "is the input")
    assert (hr / "img.png").read_bytes() == before
    save = tmp_path / "saved"
    assert run("evaluate", "--weights", weights_file, "--scale", "2", str(hr), "--save-dir",
               str(save)).returncode == 0
    assert_one_line_error(run("evaluate", "--weights", weights_file, "--scale", "2", str(hr),
                              "--save-dir", str(save)), "already exists")
    assert run("evaluate", "--weights", weights_file, "--scale", "2", str(hr), "--save-dir",
               str(save), "--force").returncode == 0
    out = tmp_path / "results"
    out.mkdir()
    (out / "benchmark.md").write_text("my notes")
    res = run("benchmark", "--data", str(hr), "--scales", "2", "--out", str(out))
    assert_one_line_error(res, "benchmark.md", "already exists")
    assert (out / "benchmark.md").read_text() == "my notes"
