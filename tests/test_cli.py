"""The command line: evaluate's table and JSON, and one-line errors for bad input."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
from PIL import Image

from conftest import REPO, authors_model, require_data


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "srcnn_theano", *args], cwd=REPO,
                          capture_output=True, text=True)


def assert_one_line_error(res, *fragments):
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stderr
    for f in fragments:
        assert f in lines[0]


@pytest.mark.slow
def test_evaluate_json_schema_and_table():
    mat = authors_model("9-1-5(91 images)", 3)
    head = os.path.join(require_data("Set5"), "head_GT.bmp")
    res = run_cli("evaluate", "--weights", mat, "--json", head)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["scale"] == 3 and [r["name"] for r in report["images"]] == ["head_GT.bmp"]
    assert set(report["images"][0]) == {"name", "bicubic_psnr", "srcnn_psnr", "bicubic_ssim", "srcnn_ssim"}
    assert report["mean"]["srcnn_psnr"] == report["images"][0]["srcnn_psnr"]
    assert report["mean"]["srcnn_psnr"] > report["mean"]["bicubic_psnr"] + 0.5
    table = run_cli("evaluate", "--weights", mat, head)
    assert table.returncode == 0 and "mean" in table.stdout and "head_GT.bmp" in table.stdout


@pytest.fixture
def mat_x3():
    return authors_model("9-1-5(91 images)", 3)


def test_missing_image(mat_x3, tmp_path):
    assert_one_line_error(run_cli("evaluate", "--weights", mat_x3, str(tmp_path / "nope.png")),
                          "no such file")


def test_unreadable_image(mat_x3, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert_one_line_error(run_cli("evaluate", "--weights", mat_x3, str(bad)), "bad.png")


def test_image_smaller_than_shave_border(mat_x3, tmp_path):
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.full((6, 7, 3), 128, np.uint8)).save(tiny)
    assert_one_line_error(run_cli("evaluate", "--weights", mat_x3, str(tiny)), "too small")


def test_wrong_scale_for_weights(mat_x3, tmp_path):
    img = tmp_path / "img.png"
    Image.fromarray(np.full((30, 30), 100, np.uint8)).save(img)
    assert_one_line_error(run_cli("evaluate", "--weights", mat_x3, "--scale", "2", str(img)),
                          "x3, not x2")


def test_mat_of_wrong_shape(tmp_path):
    path = tmp_path / "x3.mat"
    scipy.io.savemat(path, {"weights_conv1": np.zeros((80, 64)), "biases_conv1": np.zeros((64, 1)),
                            "weights_conv2": np.zeros((64, 1, 32)), "biases_conv2": np.zeros((32, 1)),
                            "weights_conv3": np.zeros((32, 25)), "biases_conv3": np.zeros((1, 1))})
    img = tmp_path / "img.png"
    Image.fromarray(np.full((30, 30), 100, np.uint8)).save(img)
    assert_one_line_error(run_cli("evaluate", "--weights", str(path), str(img)), "weights_conv1")


def test_weights_file_not_weights(tmp_path):
    path = tmp_path / "w.npz"
    path.write_text("hello")
    assert_one_line_error(run_cli("evaluate", "--weights", str(path), str(path)), "w.npz")


COMMAND_LINES = {
    "srcnn_theano": [sys.executable, "-m", "srcnn_theano"],
    "train.py": [sys.executable, os.path.join(REPO, "train.py")],
    "generate_h5.py": [sys.executable, os.path.join(REPO, "data_prep", "generate_h5.py")],
}


@pytest.mark.parametrize("name,args,fragment", [
    ("srcnn_theano", ["evaluate", "--no-such-option", "x.png"], "unrecognized arguments"),
    ("srcnn_theano", ["no-such-command"], "invalid choice"),
    ("train.py", ["--lr", "fast"], "invalid float value"),
    ("generate_h5.py", ["--images", "x"], "required"),
    ("srcnn_theano", ["upscale", "missing.png", "-o", "out.png", "--scale", "2"], "missing.png"),
    ("train.py", ["--train", "missing.h5", "--val", "."], "missing.h5"),
    ("generate_h5.py", ["--images", "missing_dir", "--scale", "3", "--output", "o.h5"], "missing_dir"),
])
def test_every_command_line_reports_errors_on_one_line(tmp_path, name, args, fragment):
    """The one runner (errors.run_command + errors.ArgumentParser): usage mistakes and bad
    inputs alike give ``error: ...`` on one line, exit status 2, no traceback."""
    res = subprocess.run(COMMAND_LINES[name] + args, cwd=tmp_path, capture_output=True, text=True)
    assert_one_line_error(res, fragment)
    assert os.listdir(tmp_path) == []   # nothing written


@pytest.mark.parametrize("args,fragment", [
    (["score", "--hr", "missing_dir", "--sr", ".", "--scale", "3"], "missing_dir"),
    (["score", "--hr", ".", "--sr", ".", "--scale", "3", "--protocol", "psnr"], "invalid choice"),
    (["benchmark", "--data", ".", "--method", "mine"], "--method wants NAME=DIR"),
    (["benchmark", "--data", ".", "--method", "mine=missing_dir"], "missing_dir"),
    (["evaluate", "--scale", "3", "--lr", "missing_lr", "x.png"], "missing_lr"),
    (["figure", "--compare", "authors", "x.png", "-o", "o.png"], "--compare wants LABEL=WEIGHTS"),
    (["figure", "--compare", "authors=missing.mat", "x.png", "-o", "o.png"], "missing.mat"),
])
def test_score_benchmark_evaluate_options_report_errors_on_one_line(tmp_path, args, fragment):
    res = subprocess.run(COMMAND_LINES["srcnn_theano"] + args, cwd=tmp_path, capture_output=True, text=True)
    assert_one_line_error(res, fragment)
    assert os.listdir(tmp_path) == []


def _selfexsr_set(root, hr, lr):
    """``root/Set5/image_SRF_3/img_001_SRF_3_{HR,LR}.png`` and another method's result beside them."""
    folder = root / "Set5" / "image_SRF_3"
    folder.mkdir(parents=True)
    Image.fromarray(hr).save(folder / "img_001_SRF_3_HR.png")
    Image.fromarray(lr).save(folder / "img_001_SRF_3_LR.png")
    Image.fromarray(hr).save(folder / "img_001_SRF_3_A+.png")
    return root / "Set5"


@pytest.mark.slow
def test_evaluate_a_selfexsr_set_with_its_lr_files_and_save_dir(tmp_path):
    """The set's HR image only (never its LR or A+ files), the hand-made LR file as the input,
    the SR images saved at the HR size; the numbers equal the library's for the same LR."""
    from srcnn_theano.evaluation.protocol import evaluate_image
    from srcnn_theano.network.inference import Predictor
    from srcnn_theano.network.weights import load_default

    rng = np.random.RandomState(0)
    hr = rng.randint(0, 256, (36, 36, 3)).astype(np.uint8)
    lr = rng.randint(0, 256, (12, 12, 3)).astype(np.uint8)
    root = _selfexsr_set(tmp_path, hr, lr)
    out = tmp_path / "out"
    res = run_cli("evaluate", "--scale", "3", "--json", "--lr", str(root), "--save-dir", str(out), str(root))
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert [r["name"] for r in report["images"]] == ["img_001_SRF_3_HR.png"]
    want = evaluate_image(hr, 3, Predictor(load_default(3)), lr=lr)
    assert report["images"][0]["bicubic_psnr"] == pytest.approx(want["bicubic_psnr"], abs=1e-9)
    assert report["images"][0]["srcnn_psnr"] == pytest.approx(want["srcnn_psnr"], abs=1e-6)
    for sub in ("SRCNN", "bicubic"):
        assert os.listdir(out / sub) == ["img_001_SRF_3_HR.png"]
        assert np.asarray(Image.open(out / sub / "img_001_SRF_3_HR.png")).shape == (36, 36, 3)
    (root / "image_SRF_3" / "img_001_SRF_3_LR.png").unlink()
    Image.fromarray(lr[:11]).save(root / "image_SRF_3" / "img_001_SRF_3_LR.png")
    assert_one_line_error(run_cli("evaluate", "--scale", "3", "--lr", str(root), str(root)),
                          "img_001_SRF_3_LR.png is 11x12")


@pytest.mark.parametrize("name, alias, args", [("speed", "bench", ["--size", "40"]),
                                               ("psnr-table", "benchmark", ["--data", "x"])])
def test_renamed_commands_keep_their_old_names(name, alias, args, capsys):
    """``speed`` and ``psnr-table`` answer to their old names, ``bench`` and ``benchmark``,
    with the same options, and ``--help`` says so."""
    from srcnn_theano.cli import build_parser

    parser = build_parser()
    new, old = parser.parse_args([name, *args]), parser.parse_args([alias, *args])
    assert new.func is old.func
    assert {k: v for k, v in vars(new).items() if k != "command"} == \
        {k: v for k, v in vars(old).items() if k != "command"}
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    assert f"(alias: {alias})" in " ".join(capsys.readouterr().out.split())
