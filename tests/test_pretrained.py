"""The shipped models: they load, say how they were made, beat bicubic clearly and match the authors' 9-1-5."""
import functools
import json
import os
import subprocess
import sys

import pytest

from srcnn_theano.evaluation.protocol import evaluate_paths
from srcnn_theano.image.io import list_images
from srcnn_theano.network.weights import load, load_default, pretrained_path

from conftest import REPO, authors_model, require_data

pytestmark = pytest.mark.slow  # the shipped models on Set5/Set14

PHASES = ["phase1", "phase2", "phase3", "phase4", "phase5"]


@functools.lru_cache(maxsize=None)
def _mean(model, scale, dataset):
    """Mean report of the shipped model (``model='ours'``) or an authors' model on a test set."""
    w = load_default(scale) if model == "ours" else load(authors_model(model, scale))
    return evaluate_paths(list_images(require_data(dataset)), scale, w)["mean"]


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_shipped_model_beats_bicubic_on_set5(scale):
    w = load_default(scale)
    assert w.scale == scale and w.name == "9-1-5" and w.architecture["channels"] == 1
    assert w.provenance["recipe"] == "scripts/train_pretrained.sh"
    assert [p["phase"] for p in w.provenance["phases"]] == PHASES
    mean = _mean("ours", scale, "Set5")
    gain = mean["srcnn_psnr"] - mean["bicubic_psnr"]
    assert gain > 1.2, f"x{scale}: only {gain:.2f} dB over bicubic"


@pytest.mark.parametrize("dataset", ["Set5", "Set14"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_shipped_model_at_least_matches_the_authors_915(scale, dataset):
    """The target: at or above the authors' 9-1-5 (91 images) model, same evaluation code."""
    ours = _mean("ours", scale, dataset)["srcnn_psnr"]
    theirs = _mean("9-1-5(91 images)", scale, dataset)["srcnn_psnr"]
    assert ours >= theirs, f"x{scale} {dataset}: ours {ours:.3f} dB < authors' {theirs:.3f} dB"


def test_commands_default_to_the_shipped_model(tmp_path):
    assert os.path.isfile(pretrained_path(3))
    head = os.path.join(require_data("Set5"), "head_GT.bmp")
    res = subprocess.run([sys.executable, "-m", "srcnn_theano", "evaluate", "--json", head],
                         cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["scale"] == 3 and report["mean"]["srcnn_psnr"] > report["mean"]["bicubic_psnr"]


def test_missing_shipped_scale_is_a_one_line_error(tmp_path):
    res = subprocess.run([sys.executable, "-m", "srcnn_theano", "upscale", "--scale", "5",
                          os.path.join(REPO, "README.md"), "-o", str(tmp_path / "o.png")],
                         cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 2 and "no shipped model for x5" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
