"""Make every figure under docs/images/ from the numbers stored in the repository.

    python scripts/figures.py [--data ../shared/data] [--out docs/images] [NAME ...]

(``make figures`` runs it.) Each figure is drawn by the library
(:mod:`srcnn_theano.apps.plots`, :mod:`srcnn_theano.apps.figure`) from:

* ``forest.png``: ``benchmarks/results/benchmark.csv``, written by
  ``python -m srcnn_theano psnr-table ... --out benchmarks/results``
  (``python scripts/update_readme.py`` runs it);
* ``training_curves.png``: the shipped models' provenance and
  ``srcnn_theano/pretrained/logs/``, with the authors' 9-1-5 (91 images)
  from ``benchmark.csv`` as the reference;
* ``filters.png``: the first layer of ``srcnn_theano/pretrained/x3.npz`` and of
  the authors' ``9-1-5(91 images)/x3.mat`` (needs ``--data``);
* ``speed.png``: ``benchmarks/results/speed.json``;
* ``butterfly.png``: the ``figure`` command on Set5's butterfly (runs the
  networks; needs ``--data``).

The bytes are the same on every run with the pinned Matplotlib: running it
twice changes nothing (``tests/test_figures.py`` checks the committed
figures against what this makes).
"""
import argparse
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

RESULTS = os.path.join(REPO, "benchmarks", "results")
BENCHMARK_CSV = os.path.join(RESULTS, "benchmark.csv")
SPEED_JSON = os.path.join(RESULTS, "speed.json")
LOGS = os.path.join(REPO, "srcnn_theano", "pretrained", "logs")
AUTHORS_915 = "9-1-5(91 images)"
#: The crop comparison: the ``figure`` command's arguments (paths relative to the data folder).
BUTTERFLY = ["--scale", "3", "--label", "ours 9-1-5 (T91)",
             "--compare", "authors 9-5-5 (ImageNet)={data}/SRCNN_v1/model/9-5-5(ImageNet)/x3.mat",
             "--crop", "70", "70", "120", "120", "{data}/Set5/butterfly_GT.bmp"]


def forest(data):
    from srcnn_theano.apps.plots import forest_png, read_summary_csv

    rows = [r for r in read_summary_csv(BENCHMARK_CSV) if r["protocol"] == "matlab"]
    return forest_png(rows, title="PSNR gain over bicubic, mean of the images with its paired "
                                  "bootstrap 95% interval (protocol matlab)")


def training_curves(data):
    from srcnn_theano.apps.plots import read_summary_csv, training_curves_png, training_phases
    from srcnn_theano.apps.benchmark import OURS
    from srcnn_theano.network.weights import load_default

    names = {"Set5": "Set5", "skimage": "scikit-image"}
    psnr = {(r["dataset"], r["scale"], r["method"]): r["psnr"] for r in read_summary_csv(BENCHMARK_CSV)
            if r["protocol"] == "matlab"}
    reference = {(names[ds], sc): (psnr[(ds, sc, f"authors {AUTHORS_915}")], psnr[(ds, sc, "bicubic")],
                                   psnr[(ds, sc, OURS)])
                 for ds, sc, m in psnr if ds in names and m == "bicubic"}
    phases = {s: training_phases(load_default(s).provenance, LOGS, s) for s in (2, 3, 4)}
    return training_curves_png(phases, reference)


def filters(data):
    from srcnn_theano.apps.plots import filters_png
    from srcnn_theano.network.weights import load, load_default

    authors = load(os.path.join(data, "SRCNN_v1", "model", AUTHORS_915, "x3.mat"))
    return filters_png([("ours 9-1-5 (T91), x3: conv1", load_default(3).arrays["conv1.W"]),
                        (f"authors' {AUTHORS_915}, x3: conv1", authors.arrays["conv1.W"])])


def speed(data):
    from srcnn_theano.apps.plots import read_speed, speed_png

    return speed_png(read_speed(SPEED_JSON))


def butterfly_command(data, output):
    """The ``figure`` command line that makes the crop comparison in ``output``."""
    args = [a.format(data=data) for a in BUTTERFLY]
    return [sys.executable, "-m", "srcnn_theano", "figure", *args, "-o", output, "--force"]


def butterfly(data):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "butterfly.png")
        subprocess.run(butterfly_command(data, out), cwd=REPO, check=True)
        with open(out, "rb") as f:
            return f.read()


#: name -> function(data folder) -> PNG bytes; the ones without data come first.
FIGURES = {"forest.png": forest, "training_curves.png": training_curves, "speed.png": speed,
           "filters.png": filters, "butterfly.png": butterfly}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data"))
    p.add_argument("--out", default=os.path.join(REPO, "docs", "images"))
    p.add_argument("names", nargs="*", choices=[[]] + list(FIGURES), metavar="NAME",
                   help=f"only these ({', '.join(FIGURES)}; default: all)")
    args = p.parse_args()
    from srcnn_theano.files import atomic_write_bytes

    os.makedirs(args.out, exist_ok=True)
    for name in args.names or FIGURES:
        png = FIGURES[name](os.path.normpath(args.data))
        path = os.path.join(args.out, name)
        atomic_write_bytes(path, png)
        print(f"wrote {os.path.relpath(path, REPO)} ({len(png) // 1024} KB)", file=sys.stderr)


if __name__ == "__main__":
    main()
