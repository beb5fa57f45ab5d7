"""The benchmark's tables: Markdown, CSV, LaTeX (booktabs) and the per-image CSV.

The writers take the rows of :func:`srcnn_theano.apps.benchmark.summarise`
(one per dataset, scale and method, for one protocol) or the per-image rows
of :func:`srcnn_theano.apps.benchmark.run_benchmark`; nothing here computes
a score.
"""
import csv
import io
import math

from srcnn_theano.evaluation.score import PROTOCOL_CAPTIONS
from srcnn_theano.evaluation.statistics import RESAMPLES, SEED, format_delta

SUMMARY_FIELDS = ("dataset", "scale", "method", "protocol", "images", "psnr", "ssim",
                  "delta_psnr", "ci_low", "ci_high")
IMAGE_FIELDS = ("dataset", "scale", "method", "image", "psnr", "ssim")


def _ordered(values):
    return list(dict.fromkeys(values))


def method_order(methods):
    """Columns in a paper's order: bicubic, the authors' models by name, ours, then the others as given."""
    methods = _ordered(methods)

    def rank(m):
        group = 0 if m == "bicubic" else 1 if m.startswith("authors ") else 2 if m.startswith("ours ") else 3
        return (group, m if group == 1 else "", methods.index(m))

    return sorted(methods, key=rank)


def _grid(rows):
    """(methods, [(dataset, scale)], {(dataset, scale, method): row}) of one protocol's rows."""
    methods = method_order(r["method"] for r in rows)
    keys = _ordered((r["dataset"], r["scale"]) for r in rows)
    return methods, keys, {(r["dataset"], r["scale"], r["method"]): r for r in rows}


def caption(protocol):
    return f"PSNR (dB) / SSIM, protocol `{protocol}`: {PROTOCOL_CAPTIONS[protocol]}."


def to_markdown(rows, protocol="matlab", baseline="bicubic", resamples=RESAMPLES, seed=SEED):
    """The paper-style table (PSNR / SSIM per method) and the differences to ``baseline``."""
    methods, keys, cell = _grid(rows)
    lines = ["| dataset | scale | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for ds, sc in keys:
        vals = [f"{c['psnr']:.2f} / {c['ssim']:.4f}" if c else "–"
                for c in (cell.get((ds, sc, m)) for m in methods)]
        lines.append(f"| {ds} | x{sc} | " + " | ".join(vals) + " |")
    lines += ["", caption(protocol)]
    others = [m for m in methods if m != baseline]
    if others:
        lines += ["", "| dataset | scale | " + " | ".join(others) + " |",
                  "|---|---|" + "---|" * len(others)]
        for ds, sc in keys:
            vals = []
            for m in others:
                c = cell.get((ds, sc, m))
                ok = c is not None and c["delta_psnr"] is not None
                vals.append(format_delta(c["delta_psnr"], c["ci_low"], c["ci_high"]) if ok else "–")
            lines.append(f"| {ds} | x{sc} | " + " | ".join(vals) + " |")
        lines += ["", f"PSNR difference to {baseline} (dB): the mean of the per-image differences, "
                      f"with its paired bootstrap 95% confidence interval ({resamples:,} resamples "
                      f"of the images, seed {seed})."]
    return "\n".join(lines) + "\n"


def _num(value, digits):
    return "" if value is None else f"{value:.{digits}f}"


def to_csv(rows):
    """One line per (dataset, scale, method): :data:`SUMMARY_FIELDS`."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SUMMARY_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(dict(r, psnr=_num(r["psnr"], 4), ssim=_num(r["ssim"], 4),
                             delta_psnr=_num(r["delta_psnr"], 4), ci_low=_num(r["ci_low"], 4),
                             ci_high=_num(r["ci_high"], 4)))
    return buf.getvalue()


def images_csv(image_rows):
    """One line per (dataset, scale, method, image): :data:`IMAGE_FIELDS`."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=IMAGE_FIELDS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for r in image_rows:
        writer.writerow(dict(r, psnr=f"{r['psnr']:.4f}", ssim=f"{r['ssim']:.4f}"))
    return buf.getvalue()


_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


def tex_escape(text):
    """Text with LaTeX's special characters escaped."""
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_tex(rows, protocol="matlab"):
    """A booktabs table (``\\usepackage{booktabs}``): the best PSNR and SSIM of each row in bold."""
    methods, keys, cell = _grid(rows)
    lines = [f"% srcnn-theano benchmark, protocol {protocol}; needs \\usepackage{{booktabs}}",
             r"\begin{table}[t]", r"  \centering",
             "  \\caption{" + tex_escape(caption(protocol).replace("`", "")) + " Best per row in bold.}",
             r"  \label{tab:srcnn-benchmark-" + protocol + "}",
             r"  \begin{tabular}{ll" + "c" * len(methods) + "}", r"    \toprule",
             "    Dataset & Scale & " + " & ".join(tex_escape(m) for m in methods) + r" \\",
             r"    \midrule"]
    previous_scale = None
    for ds, sc in keys:
        if previous_scale is not None and sc != previous_scale:
            lines.append(r"    \midrule")
        previous_scale = sc
        present = [cell[(ds, sc, m)] for m in methods if (ds, sc, m) in cell]
        best_psnr = max(round(c["psnr"], 2) for c in present if not math.isnan(c["psnr"]))
        best_ssim = max(round(c["ssim"], 4) for c in present if not math.isnan(c["ssim"]))
        vals = []
        for m in methods:
            c = cell.get((ds, sc, m))
            if c is None:
                vals.append("--")
                continue
            p, s = f"{c['psnr']:.2f}", f"{c['ssim']:.4f}"
            p = rf"\textbf{{{p}}}" if round(c["psnr"], 2) == best_psnr else p
            s = rf"\textbf{{{s}}}" if round(c["ssim"], 4) == best_ssim else s
            vals.append(f"{p} / {s}")
        lines.append(f"    {tex_escape(ds)} & $\\times${sc} & " + " & ".join(vals) + r" \\")
    lines += [r"    \bottomrule", r"  \end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def speed_markdown(speed):
    """The speed table of the speed file (:func:`srcnn_theano.apps.plots.read_speed`), Markdown.

    Per architecture, predict and training step: ours, PyTorch's, the
    ratio, our GFLOP/s and its share of the machine's float32
    matrix-product rate (the row's ``sgemm_gflops``, timed with it, else
    the file's). A caption names the CPU and how the numbers were measured.
    """
    rate = speed["sgemm_gflops"]
    lines = ["| arch | predict, ours | PyTorch | ratio | GFLOP/s | % of sgemm | train step, ours | "
             "PyTorch | ratio | GFLOP/s | % of sgemm |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in speed["rows"]:
        cells = [r["arch"]]
        for ours, theirs, gflops in (("predict_ms", "pytorch_predict_ms", "predict_gflops"),
                                     ("train_step_ms", "pytorch_train_step_ms", "train_gflops")):
            cells += [f"{r[ours]:.1f} ms", f"{r[theirs]:.1f} ms", f"{r[ours] / r[theirs]:.2f}",
                      f"{r[gflops]:.0f}", f"{100 * r[gflops] / r.get('sgemm_gflops', rate):.0f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    pytorch = speed.get("pytorch", "PyTorch, CPU")
    lines += ["", f"{speed['cpu']}; float32 matrix product (sgemm) {rate:.0f} GFLOP/s. Ratio: ours / "
                  f"{pytorch} (below 1: ours is faster). {speed.get('measured', '')}".rstrip() + "."]
    if speed.get("command"):
        lines[-1] += f" Measured by `{speed['command']}`."
    return "\n".join(lines)
