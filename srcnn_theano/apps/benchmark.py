"""The historical-baseline table: bicubic, the authors' models and ours.

Every method is evaluated by :func:`srcnn_theano.evaluation.protocol.evaluate_paths`
(the authors' protocol), on every dataset folder, at every scale, and the
results are written as a paper-style Markdown table and a long-form CSV.
"""
import csv
import io
import os

from srcnn_theano.errors import SRCNNError
from srcnn_theano.evaluation.protocol import evaluate_paths
from srcnn_theano.files import atomic_write_bytes
from srcnn_theano.image.io import list_images
from srcnn_theano.network.weights import load, load_default, pretrained_path

AUTHORS_ARCHS = ("9-1-5(91 images)", "9-5-5(ImageNet)")


def find_datasets(data_dir):
    """``[(name, [image paths])]``: ``data_dir`` itself if it holds images, else its subfolders.

    Subfolders are taken in the papers' order when they are Set5/Set14, then by name.
    """
    if not os.path.isdir(data_dir):
        raise SRCNNError(f"not a folder: {data_dir}")
    own = list_images(data_dir)
    if own:
        return [(os.path.basename(os.path.normpath(data_dir)), own)]
    order = {"Set5": 0, "Set14": 1}
    subs = sorted((d for d in os.listdir(data_dir) if os.path.isdir(os.path.join(data_dir, d))),
                  key=lambda d: (order.get(d, 2), d))
    found = [(d, list_images(os.path.join(data_dir, d))) for d in subs]
    found = [(d, paths) for d, paths in found if paths]
    if not found:
        raise SRCNNError(f"no images in {data_dir} or its subfolders")
    return found


def methods_for(scale, authors_dir=None):
    """``[(column name, Weights)]`` available at ``scale``: the authors' (if given) then ours."""
    out = []
    if authors_dir:
        for arch in AUTHORS_ARCHS:
            path = os.path.join(authors_dir, arch, f"x{scale}.mat")
            if os.path.isfile(path):
                out.append((f"authors {arch}", load(path)))
    if os.path.isfile(pretrained_path(scale)):
        out.append(("ours 9-1-5 (T91)", load_default(scale)))
    return out


def run_benchmark(data_dirs, scales=(2, 3, 4), authors_dir=None, progress=True):
    """Evaluate everything; returns rows ``{dataset, scale, method, psnr, ssim}``.

    ``data_dirs``: folders as :func:`find_datasets` reads them.
    """
    rows = []
    datasets = [d for folder in data_dirs for d in find_datasets(folder)]
    for scale in scales:
        methods = methods_for(scale, authors_dir)
        if not methods:
            raise SRCNNError(f"no model for x{scale}: no shipped weights and no --authors-models")
        for name, paths in datasets:
            for i, (method, weights) in enumerate(methods):
                report = evaluate_paths(paths, scale, weights, progress=progress)
                m = report["mean"]
                if i == 0:
                    rows.append(dict(dataset=name, scale=scale, method="bicubic",
                                     psnr=m["bicubic_psnr"], ssim=m["bicubic_ssim"]))
                rows.append(dict(dataset=name, scale=scale, method=method,
                                 psnr=m["srcnn_psnr"], ssim=m["srcnn_ssim"]))
    return rows


def to_csv(rows):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["dataset", "scale", "method", "psnr", "ssim"])
    writer.writeheader()
    for r in rows:
        writer.writerow(dict(r, psnr=f"{r['psnr']:.4f}", ssim=f"{r['ssim']:.4f}"))
    return buf.getvalue()


def to_markdown(rows):
    """Paper-style table: one row per dataset and scale, one column per method (PSNR / SSIM)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    keys = list(dict.fromkeys((r["dataset"], r["scale"]) for r in rows))
    cell = {(r["dataset"], r["scale"], r["method"]): r for r in rows}
    lines = ["| dataset | scale | " + " | ".join(methods) + " |",
             "|---|---|" + "---|" * len(methods)]
    for ds, sc in keys:
        vals = []
        for m in methods:
            r = cell.get((ds, sc, m))
            vals.append(f"{r['psnr']:.2f} / {r['ssim']:.4f}" if r else "–")
        lines.append(f"| {ds} | x{sc} | " + " | ".join(vals) + " |")
    lines.append("")
    lines.append("PSNR (dB) / SSIM on the Y channel, MATLAB bicubic degradation, `scale` pixels shaved.")
    return "\n".join(lines) + "\n"


def write_benchmark(rows, out_dir):
    """Write ``benchmark.md`` and ``benchmark.csv`` into ``out_dir``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    md, cs = os.path.join(out_dir, "benchmark.md"), os.path.join(out_dir, "benchmark.csv")
    atomic_write_bytes(md, to_markdown(rows).encode())
    atomic_write_bytes(cs, to_csv(rows).encode())
    return md, cs
