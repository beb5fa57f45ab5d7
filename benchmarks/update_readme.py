"""Regenerate the README's result tables from the benchmark command's own output.

    python benchmarks/update_readme.py [--data ../shared/data]

Runs ``python -m srcnn_theano benchmark`` on Set5 and Set14 (bicubic, the
authors' released models, the shipped models) and replaces the text between
the ``<!-- benchmark:start/end -->`` markers with the Markdown table it
wrote. Nothing in the README's tables is typed.
"""
import argparse
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def benchmark(out, data, *extra):
    cmd = [sys.executable, "-m", "srcnn_theano", "benchmark", "--data",
           os.path.join(data, "Set5"), os.path.join(data, "Set14"), "--out", out, *extra]
    print("$", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(out, "benchmark.md")) as f:
        return f.read().strip()


def splice(text, marker, table, command):
    block = f"<!-- {marker}:start -->\n{table}\n\nProduced by `{command}`.\n<!-- {marker}:end -->"
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
    text = splice(text, "benchmark", table, "python -m srcnn_theano benchmark --data Set5 Set14 "
                  "--authors-models SRCNN_v1/model --out results")
    with open(readme + ".tmp", "w") as f:
        f.write(text)
    os.replace(readme + ".tmp", readme)


if __name__ == "__main__":
    main()
