"""Regenerate docs/protocols.md's table: one set of SR images, three ways of scoring them.

    python scripts/protocol_table.py [--data ../shared/data] [--no-doc]

Bicubic, the authors' 9-5-5 (ImageNet) model and the shipped models on Set5
and Set14 at x2, x3 and x4, each image made once
(:func:`srcnn_theano.apps.benchmark.run_benchmark`) and scored under the
``matlab``, ``basicsr`` and ``rgb`` protocols
(:mod:`srcnn_theano.evaluation.score`), next to the numbers the TPAMI paper
prints, and once more under ``matlab`` with the bicubic images made by the
border rule of MATLAB's older ``imresize`` (``--imresize-border
replicate``), which is how the paper's numbers were made. Writes
``results/protocols/protocol_table.md`` (and each run's ``benchmark.*``
files beside it) and replaces the text between
the ``<!-- protocols:start/end -->`` markers of ``docs/protocols.md``. Nothing in the table
is typed except the paper's column.
"""
import argparse
import os

from update_readme import REPO, rewrite, splice  # the one splice of a generated block

#: Dong et al., TPAMI 2015, Table 2 (PSNR, dB): SRCNN 9-5-5 (ImageNet) and bicubic.
TPAMI = {
    ("Set5", "authors 9-5-5(ImageNet)"): {2: 36.66, 3: 32.75, 4: 30.49},
    ("Set14", "authors 9-5-5(ImageNet)"): {2: 32.45, 3: 29.30, 4: 27.50},
    ("Set5", "bicubic"): {2: 33.66, 3: 30.39, 4: 28.42},
    ("Set14", "bicubic"): {2: 30.23, 3: 27.54, 4: 26.00},
}
METHODS = ("bicubic", "authors 9-5-5(ImageNet)", "ours 9-1-5 (T91)")
COMMAND = "python scripts/protocol_table.py"
OLD = "matlab, 2013 imresize"  #: the matlab protocol on images degraded with imresize's old border rule


def measure(data, out):
    """Per-image rows of all three protocols; also writes each protocol's benchmark files."""
    from srcnn_theano.apps.benchmark import run_benchmark, write_benchmark
    from srcnn_theano.evaluation.score import PROTOCOLS

    sets = [os.path.join(data, "Set5"), os.path.join(data, "Set14")]
    models = dict(scales=(2, 3, 4), authors_dir=os.path.join(data, "SRCNN_v1", "model"),
                  archs=["9-5-5(ImageNet)"])
    rows = run_benchmark(sets, protocols=PROTOCOLS, **models)
    means = {}
    for protocol in PROTOCOLS:
        summary, _ = write_benchmark(rows, os.path.join(out, protocol), protocol, force=True)
        for r in summary:
            means[(r["dataset"], r["scale"], r["method"], protocol)] = r["psnr"]
    old = run_benchmark(sets, protocols=("matlab",), imresize_border="replicate", **models)
    summary, _ = write_benchmark(old, os.path.join(out, "matlab-replicate"), "matlab", force=True)
    for r in summary:
        means[(r["dataset"], r["scale"], r["method"], OLD)] = r["psnr"]
    return means


def table(means):
    """The Markdown table: one row per set, scale and method; the paper, then each protocol."""
    from srcnn_theano.evaluation.score import PROTOCOLS

    columns = (OLD,) + PROTOCOLS
    lines = ["| set | scale | method | TPAMI prints | " + " | ".join(columns) + " |",
             "|---|---|---|---:|" + "---:|" * len(columns)]
    for dataset in ("Set5", "Set14"):
        for scale in (2, 3, 4):
            for method in METHODS:
                paper = TPAMI.get((dataset, method), {}).get(scale)
                cells = [f"{means[(dataset, scale, method, p)]:.2f}" for p in columns]
                lines.append(f"| {dataset} | x{scale} | {method} | {'–' if paper is None else f'{paper:.2f}'} | "
                             + " | ".join(cells) + " |")
    lines += ["", "PSNR (dB), mean over the images, `scale` pixels shaved. The last three columns score "
                  "the same SR images (MATLAB bicubic degradation of the modcropped ground truth, today's "
                  "imresize; SRCNN's colour images are its Y with bicubic Cb/Cr) as `python -m "
                  "srcnn_theano score --protocol P` does: `matlab` the authors' test code (uint8 Y; "
                  "SRCNN's Y taken before any RGB round trip, as `evaluate`), `basicsr` BasicSR's "
                  "calculate_psnr (float Y), `rgb` PSNR over the three RGB channels. The first is "
                  "`matlab` again, on images degraded with the border rule of MATLAB's imresize of "
                  "2007-2013 (`evaluate --imresize-border replicate`)."]
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data"))
    p.add_argument("--out", default=os.path.join(REPO, "results", "protocols"))
    p.add_argument("--no-doc", action="store_true", help="only write the results folder")
    args = p.parse_args()
    from srcnn_theano.files import atomic_write_bytes

    block = table(measure(args.data, args.out))
    atomic_write_bytes(os.path.join(args.out, "protocol_table.md"), (block + "\n").encode())
    print(block)
    if not args.no_doc:
        rewrite(os.path.join(REPO, "docs", "protocols.md"), lambda text: splice(
            text, "protocols", f"{block}\n\nProduced by `{COMMAND}`.", "docs/protocols.md"))


if __name__ == "__main__":
    main()
