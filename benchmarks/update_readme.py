"""Regenerate the README's result tables from the benchmark command's own output.

    python benchmarks/update_readme.py [--data ../shared/data]

Runs ``python -m srcnn_theano benchmark`` on Set5, Set14 and the seven
photographs bundled with scikit-image, which no model here was trained on
(bicubic, the authors' released models, the shipped models) and replaces the text between
the ``<!-- benchmark:start/end -->`` markers with the Markdown table it
wrote. Nothing in the README's tables is typed.
"""
import argparse
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def skimage_photos(folder):
    """The bundled scikit-image photographs as PNG files in ``folder``/skimage."""
    import shutil
    import tempfile

    sys.path.insert(0, REPO)
    from srcnn_theano.evaluation.datasets import write_skimage_photos

    out = os.path.join(folder, "skimage")
    os.makedirs(out, exist_ok=True)
    for d in write_skimage_photos(tempfile.mkdtemp()):
        for name in os.listdir(d):
            shutil.copy(os.path.join(d, name), os.path.join(out, name))
    return out


def benchmark(out, data, *extra):
    cmd = [sys.executable, "-m", "srcnn_theano", "benchmark", "--data",
           os.path.join(data, "Set5"), os.path.join(data, "Set14"), skimage_photos(out),
           "--out", out, "--force", *extra]  # regenerated tables replace the last run's
    print("$", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(out, "benchmark.md")) as f:
        return f.read().strip()


def splice(text, marker, table, command):
    block = f"<!-- {marker}:start -->\n{table}\n\nProduced by `{command}` (which runs `python -m srcnn_theano " \
            f"benchmark --data Set5 Set14 skimage --authors-models SRCNN_v1/model --out results`).\n" \
            f"<!-- {marker}:end -->"
    return re.sub(rf"<!-- {marker}:start -->.*?<!-- {marker}:end -->", lambda _: block, text, flags=re.S)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data"))
    args = p.parse_args()
    readme = os.path.join(REPO, "README.md")
    with open(readme) as f:
        text = f.read()
    models = os.path.join(args.data, "SRCNN_v1", "model")
    table = benchmark(os.path.join(REPO, "results"), args.data, "--authors-models", models)
    text = splice(text, "benchmark", table, "python benchmarks/update_readme.py")
    with open(readme + ".tmp", "w") as f:
        f.write(text)
    os.replace(readme + ".tmp", readme)


if __name__ == "__main__":
    main()
