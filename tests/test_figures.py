"""The committed figures are what the code makes, and the front page shows them.

Each figure under docs/images/ is made again by ``scripts/figures.py``'s
own function (from the numbers stored in benchmarks/results/, the shipped
models' logs, the authors' weights) and compared pixel for pixel with the
committed PNG (pinned Matplotlib, Agg). A figure edited by hand, or code or
numbers changed without ``make figures``, fails here.
"""
import importlib.util
import io
import os
import re
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import DATA, REPO, require_data

IMAGES = os.path.join(REPO, "docs", "images")
MAX_BYTES = 500 * 1024


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


figures = _load("figures_script", os.path.join(REPO, "scripts", "figures.py"))
update_readme = _load("update_readme_script", os.path.join(REPO, "scripts", "update_readme.py"))


def pixels(png):
    """RGBA pixels of PNG bytes."""
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))


def assert_same_figure(name, made):
    path = os.path.join(IMAGES, name)
    assert os.path.isfile(path), f"{path} is missing: run `make figures`"
    with open(path, "rb") as f:
        committed = pixels(f.read())
    fresh = pixels(made)
    assert committed.shape == fresh.shape, (f"docs/images/{name} is {committed.shape[:2]}, the code makes "
                                            f"{fresh.shape[:2]}: run `make figures`")
    differ = int(np.any(committed != fresh, axis=-1).sum())
    assert differ == 0, f"docs/images/{name}: {differ} pixels differ from what the code makes: run `make figures`"


@pytest.mark.parametrize("name", ["forest.png", "training_curves.png", "speed.png"])
def test_figure_from_stored_numbers_is_fresh(name):
    assert_same_figure(name, figures.FIGURES[name](DATA))


def test_filters_figure_is_fresh():
    require_data("SRCNN_v1", "model", figures.AUTHORS_915, "x3.mat")
    assert_same_figure("filters.png", figures.filters(DATA))


@pytest.mark.slow   # runs three networks on the butterfly
def test_crop_comparison_is_fresh():
    require_data("Set5", "butterfly_GT.bmp")
    assert_same_figure("butterfly.png", figures.butterfly(DATA))


def test_a_changed_pixel_is_caught(tmp_path, monkeypatch):
    """The check itself: one pixel edited by hand in a copy of a committed figure fails it."""
    img = np.array(Image.open(os.path.join(IMAGES, "speed.png")).convert("RGBA"))
    img[10, 10] = (255 - img[10, 10, 0], 0, 0, 255)
    Image.fromarray(img).save(tmp_path / "speed.png")
    monkeypatch.setattr(sys.modules[__name__], "IMAGES", str(tmp_path))
    with pytest.raises(AssertionError, match="1 pixels differ"):
        assert_same_figure("speed.png", figures.speed(DATA))


def test_figures_are_the_same_bytes_every_time():
    first, second = figures.forest(DATA), figures.forest(DATA)
    assert first == second
    assert b"Software" not in first and b"Matplotlib" not in first   # no version in the metadata


def test_every_figure_is_committed_small_and_made_by_the_script():
    committed = sorted(n for n in os.listdir(IMAGES) if n.endswith(".png"))
    assert committed == sorted(figures.FIGURES)
    for name in committed:
        assert os.path.getsize(os.path.join(IMAGES, name)) < MAX_BYTES, name


def test_speed_tables_are_what_speed_json_says():
    """README's and docs/speed.md's speed tables are the splice of benchmarks/results/speed.json."""
    short, full = update_readme.speed_blocks()
    for path, block in ((update_readme.README, short), (update_readme.SPEED_DOC, full)):
        with open(path) as f:
            text = f.read()
        assert update_readme.splice(text, "speed", block) == text, \
            f"{path}: the speed table is not benchmarks/results/speed.json's: run `make figures`"


def test_readme_shows_the_figures():
    with open(os.path.join(REPO, "README.md")) as f:
        lines = f.read().splitlines()
    assert len(lines) <= 200
    shown = [i for i, line in enumerate(lines) if re.search(r"!\[[^]]*\]\(docs/images/[\w.-]+\.png\)", line)]
    assert len(shown) >= 4 and shown[0] < 25
    assert "make demo" in "\n".join(lines[:25]) and "make test" in "\n".join(lines[:25])
    for line in lines:
        for target in re.findall(r"\]\(((?:docs|benchmarks|notebooks|srcnn_theano)/[^)#]+)\)", line):
            assert os.path.exists(os.path.join(REPO, target)), target


#: Wording that tells the project's history instead of what is true now ("[ ]" keeps this
#: file's own source from matching).
HISTORY = re.compile(r"was \d|[(]was\b|this[ ]round|first[ ]round|second[ ]round|third[ ]round|"
                     r"issue \d+|the[ ]issue's|no[ ]longer|before[ ]the[ ]fix|as[ ]it[ ]always[ ]did|"
                     r"used[ ]to[ ](spend|be|take|run|call|compile)", re.I)


def _code_files():
    """The project's Python and shell sources: library, tests, scripts, tools."""
    files = [os.path.join(REPO, "train.py")]
    for top in ("srcnn_theano", "tests", "benchmarks", "scripts", "gpu_setup", "data_prep"):
        for folder, _, names in os.walk(os.path.join(REPO, top)):
            files += [os.path.join(folder, n) for n in sorted(names) if n.endswith((".py", ".sh"))]
    return [os.path.relpath(f, REPO) for f in files]


def test_docs_are_in_the_present_tense():
    pages = ["README.md", "benchmarks/README.md", "notebooks/README.md",
             "srcnn_theano/pretrained/README.md"]
    pages += [os.path.join("docs", n) for n in os.listdir(os.path.join(REPO, "docs")) if n.endswith(".md")]
    found = []
    for page in pages:
        with open(os.path.join(REPO, page)) as f:
            for k, line in enumerate(f, 1):
                if HISTORY.search(line):
                    found.append(f"{page}:{k}: {line.strip()}")
    assert not found, "history wording (it belongs in git log):\n" + "\n".join(found)


def test_code_and_tests_are_in_the_present_tense():
    """Docstrings and comments say what the code does and why, not what it used to do."""
    found = []
    for path in _code_files():
        with open(os.path.join(REPO, path)) as f:
            for k, line in enumerate(f, 1):
                if HISTORY.search(line):
                    found.append(f"{path}:{k}: {line.strip()}")
    assert not found, "history wording (it belongs in git log):\n" + "\n".join(found)
