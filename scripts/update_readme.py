"""Regenerate the result and speed tables of README.md and docs/ from stored or fresh numbers.

    python scripts/update_readme.py [--data ../shared/data]    # runs the benchmark
    python scripts/update_readme.py --speed                    # only the speed tables

Without ``--speed``: runs ``python -m srcnn_theano psnr-table`` on Set5, Set14
and the seven photographs bundled with scikit-image, which no model here was
trained on (bicubic, the authors' released models, the shipped models), into
``benchmarks/results/`` (``benchmark.md``, ``.csv``, ``.tex``, ``.png``,
``benchmark_images.csv``: the numbers ``make figures`` draws), and replaces
the text between the README's ``<!-- benchmark:start/end -->`` markers with
the Markdown table it wrote.

Always: replaces the text between the ``<!-- speed:start/end -->`` markers
of README.md (the short table) and docs/speed.md (the full one) with the
tables of ``benchmarks/results/speed.json``
(:func:`srcnn_theano.apps.tables.speed_markdown`). Nothing in these tables
is typed.

:func:`splice` and :func:`rewrite` are the one way a generated block goes into a page
(``scripts/protocol_table.py`` uses them too).
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
RESULTS = os.path.join(REPO, "benchmarks", "results")
README = os.path.join(REPO, "README.md")
SPEED_DOC = os.path.join(REPO, "docs", "speed.md")
COMMAND = "python scripts/update_readme.py"


def skimage_photos(folder):
    """The bundled scikit-image photographs as PNG files in ``folder``/skimage."""
    from srcnn_theano.evaluation.datasets import write_skimage_photos

    out = os.path.join(folder, "skimage")
    os.makedirs(out, exist_ok=True)
    for d in write_skimage_photos(tempfile.mkdtemp(dir=folder)):
        for name in os.listdir(d):
            shutil.copy(os.path.join(d, name), os.path.join(out, name))
    return out


def benchmark(out, data, *extra):
    with tempfile.TemporaryDirectory() as photos:
        cmd = [sys.executable, "-m", "srcnn_theano", "psnr-table", "--data",
               os.path.join(data, "Set5"), os.path.join(data, "Set14"), skimage_photos(photos),
               "--out", out, "--force", *extra]  # regenerated tables replace the last run's
        print("$", " ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(out, "benchmark.md")) as f:
        return f.read().strip()


def splice(text, marker, block, path="README.md"):
    """``text`` with what lies between ``<!-- marker:start -->`` and ``<!-- marker:end -->``
    replaced by ``block``; exits naming ``path`` when the page has no such marker."""
    if f"<!-- {marker}:start -->" not in text:
        raise SystemExit(f"{path} has no <!-- {marker}:start --> marker")
    new = f"<!-- {marker}:start -->\n{block}\n<!-- {marker}:end -->"
    return re.sub(rf"<!-- {marker}:start -->.*?<!-- {marker}:end -->", lambda _: new, text, flags=re.S)


def speed_blocks():
    """(README's speed table, docs/speed.md's): the same table, each with its "Produced by" line."""
    from srcnn_theano.apps.plots import read_speed
    from srcnn_theano.apps.tables import speed_markdown

    speed = read_speed(os.path.join(RESULTS, "speed.json"))
    block = (speed_markdown(speed) + f"\n\nProduced by `{COMMAND} --speed` from "
             "`benchmarks/results/speed.json`.")
    return block, block


def rewrite(path, edit):
    """Replace the file ``path`` by ``edit(its text)``, atomically, when that differs."""
    from srcnn_theano.files import atomic_write_bytes

    with open(path) as f:
        text = f.read()
    new = edit(text)
    if new != text:
        atomic_write_bytes(path, new.encode())


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data"))
    p.add_argument("--speed", action="store_true", help="only the speed tables (no benchmark run)")
    args = p.parse_args()
    if not args.speed:
        models = os.path.join(args.data, "SRCNN_v1", "model")
        table = benchmark(RESULTS, args.data, "--authors-models", models)
        block = (f"{table}\n\nProduced by `{COMMAND}` (which runs `python -m srcnn_theano psnr-table "
                 f"--data Set5 Set14 skimage --authors-models SRCNN_v1/model --out benchmarks/results`).")
        rewrite(README, lambda text: splice(text, "benchmark", block))
    short, full = speed_blocks()
    rewrite(README, lambda text: splice(text, "speed", short))
    rewrite(SPEED_DOC, lambda text: splice(text, "speed", full, "docs/speed.md"))


if __name__ == "__main__":
    main()
