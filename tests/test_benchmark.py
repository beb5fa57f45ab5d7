"""The researcher's table: columns, other methods' results, the layouts, the bootstrap, the files."""
import csv
import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from srcnn_theano.apps import tables
from srcnn_theano.apps.benchmark import (authors_models, parse_method, run_benchmark, summarise,
                                         write_benchmark)
from srcnn_theano.errors import SRCNNError
from srcnn_theano.evaluation.statistics import format_delta, paired_bootstrap

from conftest import AUTHORS_MODELS, REPO, require, require_data


# --------------------------------------------------------------------------
# The bootstrap
# --------------------------------------------------------------------------

def test_bootstrap_is_reproducible_and_contains_the_mean():
    rng = np.random.RandomState(0)
    base = rng.normal(30, 3, 14)
    method = base + rng.normal(0.08, 0.1, 14)
    first = paired_bootstrap(method, base, seed=7)
    assert first == paired_bootstrap(method, base, seed=7)
    assert first != paired_bootstrap(method, base, seed=8)
    mean, low, high = first
    assert mean == pytest.approx(np.mean(method - base), abs=1e-12)
    assert low < mean < high and high - low < 0.2


def test_bootstrap_is_the_percentile_interval_of_resampled_means():
    """The same draws by hand: 10,000 resamples of the 5 indices with default_rng(seed)."""
    d = np.array([0.3, -0.1, 0.2, 0.05, 0.4])
    idx = np.random.default_rng(3).integers(0, 5, size=(10_000, 5))
    want = np.percentile(d[idx].mean(axis=1), [2.5, 97.5])
    _, low, high = paired_bootstrap(d, np.zeros(5), resamples=10_000, seed=3)
    assert (low, high) == pytest.approx(tuple(want), abs=1e-12)
    assert paired_bootstrap([1.5, 1.5, 1.5], [1.0, 1.0, 1.0]) == pytest.approx((0.5, 0.5, 0.5))
    assert paired_bootstrap([2.0], [1.0]) == (1.0, 1.0, 1.0)
    assert format_delta(0.08, 0.03, 0.13) == "+0.08 [+0.03, +0.13]"
    assert format_delta(-0.014, -0.05, 0.021) == "-0.01 [-0.05, +0.02]"


# --------------------------------------------------------------------------
# The tables
# --------------------------------------------------------------------------

def _rows():
    rows = []
    for ds, n in (("Set5", 5), ("Set14", 14)):
        for scale in (2, 3):
            for k, method in enumerate(("bicubic", "authors 9-5-5(ImageNet)", "my_method & co")):
                for i in range(n):
                    rows.append(dict(protocol="matlab", dataset=ds, scale=scale, method=method,
                                     image=f"img{i}.png", psnr=30 + k + 0.1 * i + (k == 2) * 0.01 * i,
                                     ssim=0.8 + 0.01 * k))
    return rows


def test_summary_deltas_against_the_baseline():
    summary = summarise(_rows(), baseline="bicubic", seed=0)
    by = {(r["dataset"], r["scale"], r["method"]): r for r in summary}
    base = by[("Set5", 2, "bicubic")]
    assert base["delta_psnr"] is None and base["images"] == 5 and base["psnr"] == pytest.approx(30.2)
    d = by[("Set5", 2, "authors 9-5-5(ImageNet)")]
    assert (d["delta_psnr"], d["ci_low"], d["ci_high"]) == pytest.approx((1.0, 1.0, 1.0))
    d = by[("Set14", 3, "my_method & co")]
    assert d["delta_psnr"] == pytest.approx(2 + 0.065)     # 2 + 0.01 * mean(0..13)
    assert d["ci_low"] < d["delta_psnr"] < d["ci_high"]
    with pytest.raises(SRCNNError, match="--baseline 'nope'"):
        summarise(_rows(), baseline="nope")
    other = summarise(_rows(), baseline="authors 9-5-5(ImageNet)")
    assert {r["method"] for r in other if r["delta_psnr"] is None} == {"authors 9-5-5(ImageNet)"}


def test_csv_and_markdown():
    summary = summarise(_rows())
    got = list(csv.DictReader(io.StringIO(tables.to_csv(summary))))
    assert len(got) == 12 and list(got[0]) == list(tables.SUMMARY_FIELDS)
    assert got[0]["delta_psnr"] == "" and float(got[1]["delta_psnr"]) == pytest.approx(1.0)
    md = tables.to_markdown(summary, "basicsr")
    assert "| dataset | scale | bicubic | authors 9-5-5(ImageNet) | my_method & co |" in md
    assert "| Set5 | x2 | 30.20 / 0.8000 | 31.20 / 0.8100 |" in md
    assert "protocol `basicsr`" in md and "10,000 resamples" in md
    assert re.search(r"\| Set5 \| x2 \| \+1\.00 \[\+1\.00, \+1\.00\] \| \+2\.02 \[\+2\.0\d, \+2\.0\d\] \|", md)
    per_image = list(csv.DictReader(io.StringIO(tables.images_csv(_rows()))))
    assert list(per_image[0]) == list(tables.IMAGE_FIELDS) and len(per_image) == 3 * 2 * 19


def test_tex_is_a_booktabs_table_with_the_best_in_bold():
    summary = summarise(_rows())
    tex = tables.to_tex(summary, "rgb")
    lines = tex.strip().splitlines()
    body = [l.strip() for l in lines]
    assert body.index(r"\begin{table}[t]") < body.index(r"\centering") < body.index(r"\toprule")
    assert body[-3:] == [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    order = [b for b in body if b in (r"\toprule", r"\midrule", r"\bottomrule")]
    assert order[0] == r"\toprule" and order[-1] == r"\bottomrule" and order.count(r"\toprule") == 1
    spec = re.search(r"\\begin\{tabular\}\{([lc]+)\}", tex).group(1)
    assert spec == "llccc"
    rows = [b for b in body if b.endswith(r"\\")]
    assert rows[0].startswith("Dataset & Scale & bicubic") and r"my\_method \& co" in rows[0]
    for row in rows:   # every row has one cell per column
        assert row.count("&") - row.count(r"\&") == len(spec) - 1
    data = rows[1:]
    assert len(data) == 4 and all(r"\textbf{" in r for r in data)
    assert all(r"\textbf{32." in r and r"\textbf{0.8200}" in r for r in data)
    assert r"\textbf{30." not in tex
    assert tex.count(r"\begin{") == tex.count(r"\end{")
    assert "rgb" in re.search(r"\\caption\{(.*)\}", tex).group(1)


# --------------------------------------------------------------------------
# Running it (no network: bicubic and other methods' results only)
# --------------------------------------------------------------------------

def _save(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path)


@pytest.fixture
def sets(tmp_path):
    """Set5 in the SelfExSR layout (x2, x3) and Set14 in the EDSR layout (x2), 36x36 colour images,
    plus a method's results in DIR/<dataset>/x<scale>/: the ground truth with one pixel changed."""
    rng = np.random.RandomState(0)
    data, method = tmp_path / "data", tmp_path / "mine"
    truth = {}
    for s in (2, 3):
        for i in (1, 2):
            hr = rng.randint(0, 256, (36, 36, 3)).astype(np.uint8)
            stem = f"img_{i:03d}_SRF_{s}"
            _save(data / "Set5" / f"image_SRF_{s}" / f"{stem}_HR.png", hr)
            _save(data / "Set5" / f"image_SRF_{s}" / f"{stem}_LR.png", hr[::s, ::s])
            sr = hr.copy()
            sr[18, 18] = 255 - sr[18, 18]
            _save(method / "Set5" / f"x{s}" / f"{stem}_mine.png", sr)
            truth[("Set5", s, f"{stem}_HR.png")] = (hr, sr)
    for name in ("baboon", "zebra"):
        hr = rng.randint(0, 256, (36, 36, 3)).astype(np.uint8)
        _save(data / "Set14" / "HR" / f"{name}.png", hr)
        _save(data / "Set14" / "LR_bicubic" / "X2" / f"{name}x2.png", hr[::2, ::2])
        _save(method / "Set14" / "x2" / f"{name}.png", hr)
    return data, method, truth


def test_benchmark_reads_both_layouts_and_scores_other_methods(sets):
    from srcnn_theano.evaluation.score import score_images

    data, method, truth = sets
    rows = run_benchmark([str(data)], scales=(2, 3), progress=False, methods=[("mine", str(method))],
                         ours=False)
    cells = {(r["dataset"], r["scale"], r["method"]) for r in rows}
    assert cells == {("Set5", 2, "bicubic"), ("Set5", 3, "bicubic"), ("Set14", 2, "bicubic"),
                     ("Set5", 2, "mine"), ("Set5", 3, "mine"), ("Set14", 2, "mine"), ("Set14", 3, "bicubic")}
    assert {r["image"] for r in rows if r["dataset"] == "Set5"} == \
        {n for (_, _, n) in truth}                                    # only the _HR files
    for r in rows:
        if r["method"] == "mine" and r["dataset"] == "Set5":
            hr, sr = truth[(r["dataset"], r["scale"], r["image"])]
            assert r["psnr"] == pytest.approx(score_images(hr, sr, r["scale"])["psnr"])
        if r["method"] == "mine" and r["dataset"] == "Set14":
            assert r["psnr"] == float("inf")


def test_benchmark_with_the_sets_lr_files(sets):
    data, _, _ = sets
    degraded = run_benchmark([str(data / "Set5")], scales=(2,), progress=False, ours=False)
    shipped = run_benchmark([str(data / "Set5")], scales=(2,), progress=False, ours=False, use_lr=True)
    assert [r["image"] for r in degraded] == [r["image"] for r in shipped]
    assert all(a["psnr"] != b["psnr"] for a, b in zip(degraded, shipped))   # hr[::2] is not imresize


def test_benchmark_protocols_and_files(sets, tmp_path):
    data, method, _ = sets
    rows = run_benchmark([str(data)], scales=(2,), progress=False, methods=[("mine", str(method))],
                         ours=False, protocols=("matlab", "basicsr", "rgb"))
    by = {(r["protocol"], r["dataset"], r["method"], r["image"]): r["psnr"] for r in rows}
    k = ("Set5", "bicubic", "img_001_SRF_2_HR.png")
    assert len({by[("matlab",) + k], by[("basicsr",) + k], by[("rgb",) + k]}) == 3
    summary, paths = write_benchmark(rows, str(tmp_path / "out"), "rgb", seed=1)
    assert [os.path.basename(p) for p in paths] == ["benchmark.md", "benchmark.csv", "benchmark.tex",
                                                    "benchmark_images.csv", "benchmark.png"]
    assert {r["protocol"] for r in summary} == {"rgb"}
    with open(paths[1]) as f:
        got = list(csv.DictReader(f))
    assert {"dataset", "scale", "method", "psnr", "ssim", "delta_psnr", "ci_low", "ci_high"} <= set(got[0])
    with open(paths[3]) as f:
        assert f.readline().strip() == "dataset,scale,method,image,psnr,ssim"


def test_benchmark_errors(sets, tmp_path):
    data, method, _ = sets
    with pytest.raises(SRCNNError, match="--method wants NAME=DIR"):
        parse_method("mine")
    with pytest.raises(SRCNNError, match="not a folder"):
        parse_method(f"mine={tmp_path / 'nope'}")
    os.makedirs(tmp_path / "empty")
    with pytest.raises(SRCNNError, match="--method other: no results in"):
        run_benchmark([str(data)], scales=(2,), progress=False, ours=False,
                      methods=[("other", str(tmp_path / "empty"))])
    os.remove(method / "Set14" / "x2" / "zebra.png")
    with pytest.raises(SRCNNError, match=r"no SR image for zebra\.png"):
        run_benchmark([str(data)], scales=(2,), progress=False, ours=False, methods=[("m", str(method))])


def test_every_authors_model_at_a_scale_gets_a_column(tmp_path):
    for arch, scales in (("9-1-5(91 images)", (2, 3, 4)), ("9-1-5(ImageNet)", (3,)),
                         ("9-3-5(ImageNet)", (3,)), ("9-5-5(ImageNet)", (2, 3, 4))):
        for s in scales:
            os.makedirs(tmp_path / arch, exist_ok=True)
            (tmp_path / arch / f"x{s}.mat").write_bytes(b"")
    assert [n for n, _ in authors_models(str(tmp_path), 3)] == [
        "authors 9-1-5(91 images)", "authors 9-1-5(ImageNet)", "authors 9-3-5(ImageNet)",
        "authors 9-5-5(ImageNet)"]
    assert [n for n, _ in authors_models(str(tmp_path), 2)] == [
        "authors 9-1-5(91 images)", "authors 9-5-5(ImageNet)"]
    if os.path.isdir(AUTHORS_MODELS):   # the real release has the same folders
        assert [n for n, _ in authors_models(AUTHORS_MODELS, 3)] == \
            [n for n, _ in authors_models(str(tmp_path), 3)]


@pytest.mark.slow
def test_benchmark_command_on_set5_x3(tmp_path):
    """All four released x3 models, ours, bicubic; the published Set5 x3 numbers; every file."""
    require(os.path.isdir(AUTHORS_MODELS), f"test data not found: {AUTHORS_MODELS}")
    res = subprocess.run([sys.executable, "-m", "srcnn_theano", "benchmark", "--data", require_data("Set5"),
                          "--authors-models", AUTHORS_MODELS, "--scales", "3", "--out", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    with open(tmp_path / "benchmark.csv") as f:
        got = {r["method"]: r for r in csv.DictReader(f)}
    assert list(got) == ["bicubic", "authors 9-1-5(91 images)", "authors 9-1-5(ImageNet)",
                         "authors 9-3-5(ImageNet)", "authors 9-5-5(ImageNet)", "ours 9-1-5 (T91)"]
    assert abs(float(got["bicubic"]["psnr"]) - 30.39) < 0.01
    assert abs(float(got["authors 9-5-5(ImageNet)"]["psnr"]) - 32.75) < 0.01
    for name, row in got.items():
        if name != "bicubic":
            assert float(row["ci_low"]) <= float(row["delta_psnr"]) <= float(row["ci_high"])
    assert sorted(os.listdir(tmp_path)) == ["benchmark.csv", "benchmark.md", "benchmark.png",
                                            "benchmark.tex", "benchmark_images.csv"]
    assert "benchmark.png" in res.stderr   # named in the "wrote ..." line


def test_columns_in_a_papers_order():
    got = tables.method_order(["bicubic", "authors 9-5-5(ImageNet)", "ours 9-1-5 (T91)", "A+",
                               "authors 9-1-5(ImageNet)", "SelfExSR", "authors 9-1-5(91 images)"])
    assert got == ["bicubic", "authors 9-1-5(91 images)", "authors 9-1-5(ImageNet)", "authors 9-5-5(ImageNet)",
                   "ours 9-1-5 (T91)", "A+", "SelfExSR"]


# --------------------------------------------------------------------------
# The forest plot beside the tables
# --------------------------------------------------------------------------

def _noisy_rows():
    """Per-image rows of two sets, two scales, bicubic and two methods (no network)."""
    rng = np.random.RandomState(0)
    return [dict(protocol="matlab", dataset=ds, scale=sc, method=m, image=f"i{i}.png",
                 psnr=30.0 + k + rng.normal(0, 0.3), ssim=0.9)
            for ds in ("Set5", "Set14") for sc in (2, 3) for k, m in enumerate(("bicubic", "A", "B"))
            for i in range(5)]


def test_benchmark_png_is_the_forest_plot_of_its_summary(tmp_path):
    from srcnn_theano.apps.plots import forest_png, read_summary_csv

    summary, paths = write_benchmark(_noisy_rows(), str(tmp_path), resamples=100)
    assert os.path.basename(paths[-1]) == "benchmark.png"
    plot = np.asarray(Image.open(paths[-1]))
    assert plot.ndim == 3 and plot.shape[0] > 100
    # the same picture as the forest plot of the rows read back from benchmark.csv: the stored
    # numbers are enough to make it again
    title = forest_png(read_summary_csv(paths[1]), title="PSNR gain over bicubic with its paired "
                                                         "bootstrap 95% interval (protocol matlab)")
    assert np.array_equal(plot, np.asarray(Image.open(io.BytesIO(title))))
    # the intervals are drawn: another seed moves them and changes the picture
    _, other = write_benchmark(_noisy_rows(), str(tmp_path / "other"), resamples=100, seed=5)
    assert not np.array_equal(np.asarray(Image.open(other[-1])), plot)


def test_benchmark_no_plot(tmp_path):
    _, paths = write_benchmark(_noisy_rows(), str(tmp_path), resamples=10, plot=False)
    assert "benchmark.png" not in os.listdir(tmp_path)
    assert [os.path.basename(p) for p in paths] == ["benchmark.md", "benchmark.csv", "benchmark.tex",
                                                    "benchmark_images.csv"]


def test_benchmark_without_other_methods_writes_no_plot(tmp_path, capsys):
    rows = [r for r in _noisy_rows() if r["method"] == "bicubic"]
    _, paths = write_benchmark(rows, str(tmp_path), resamples=10)
    assert "benchmark.png" not in os.listdir(tmp_path) and len(paths) == 4
    assert "no benchmark.png" in capsys.readouterr().err


@pytest.mark.parametrize("no_plot", [False, True])
def test_benchmark_command_plots_unless_told_not_to(tmp_path, monkeypatch, capsys, no_plot):
    """The command line's wiring: --no-plot reaches write_benchmark and the outputs rule."""
    from srcnn_theano import cli
    from srcnn_theano.apps import benchmark

    monkeypatch.setattr(benchmark, "run_benchmark", lambda *a, **k: _noisy_rows())
    out = tmp_path / "out"
    args = ["benchmark", "--data", str(tmp_path), "--resamples", "10", "--out", str(out)]
    assert cli.main(args + (["--no-plot"] if no_plot else [])) in (0, None)
    assert ("benchmark.png" in os.listdir(out)) is not no_plot
    # an existing plot counts as an output: refused without --force, unless it is not written
    (out / "benchmark.md").unlink()
    (out / "benchmark.csv").unlink()
    (out / "benchmark.tex").unlink()
    (out / "benchmark_images.csv").unlink()
    (out / "benchmark.png").write_bytes(b"mine")
    status = cli.main(args + (["--no-plot"] if no_plot else []))
    assert (status == 2) is not no_plot
    assert (out / "benchmark.png").read_bytes() == b"mine"


@pytest.mark.slow
def test_commands_with_threads_of_their_own_shorten_idle_spin():
    """psnr-table and upscale run threads beside the network: importing them sets the BLAS's
    and OpenMP's idle spin short (before those libraries load); the environment wins."""
    code = ("import os, srcnn_theano.apps.benchmark, srcnn_theano.apps.upscale; "
            "print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OPENBLAS_THREAD_TIMEOUT'))")
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OPENBLAS_THREAD_TIMEOUT")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.stdout.split() == ["20000", "18"], out.stderr[-2000:]
    out = subprocess.run([sys.executable, "-c", code], env=dict(env, GOMP_SPINCOUNT="7"),
                         capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == ["7", "18"], out.stderr[-2000:]
