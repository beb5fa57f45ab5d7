"""The project's figures, drawn from stored numbers: PNG bytes, the same bytes on every run.

Each ``*_png`` function takes numbers (never runs a network) and returns
the PNG file's bytes:

* :func:`forest_png`: the benchmark's PSNR gain over the baseline, with its
  bootstrap 95% interval, one line per method, set and scale (the rows of
  :func:`srcnn_theano.apps.benchmark.summarise`, or of ``benchmark.csv``
  read back by :func:`read_summary_csv`);
* :func:`training_curves_png`: the shipped models' validation PSNR against
  the number of backprops (training patches seen), from their logs;
* :func:`filters_png`: two sets of first-layer filters side by side;
* :func:`speed_png`: predict and training-step times per architecture
  against PyTorch's (the speed file, :func:`read_speed`).

Determinism: the Agg canvas (pyplot is never imported), one style
(:data:`STYLE`: Matplotlib's bundled DejaVu Sans, fixed sizes, fixed DPI),
and PNG metadata without the ``Software`` entry, so that the bytes depend
only on the numbers and the pinned Matplotlib.
"""
import csv
import io
import json
import os

import numpy as np

from srcnn_theano.errors import SRCNNError

DPI = 100
#: Matplotlib settings every figure is drawn with (the rest are Matplotlib's defaults).
STYLE = {
    "font.family": "DejaVu Sans", "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9,
    "legend.fontsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8, "figure.dpi": DPI,
    "savefig.dpi": DPI, "axes.grid": False, "image.interpolation": "nearest",
    "path.simplify": False, "svg.hashsalt": "srcnn-theano",
}
METHOD_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                  "#7f7f7f", "#bcbd22", "#17becf")


def new_figure(width, height):
    """A Matplotlib ``Figure`` of ``width`` x ``height`` inches on an Agg canvas, in :data:`STYLE`.

    Call it and :func:`png_bytes` inside ``matplotlib.rc_context(STYLE)``
    (:func:`styled` does), so that text and lines take the style.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def styled(draw):
    """Run ``draw()`` (which returns a ``Figure``) in :data:`STYLE`; returns its PNG bytes."""
    import matplotlib

    with matplotlib.rc_context(STYLE):
        return png_bytes(draw())


def png_bytes(fig):
    """The figure as PNG bytes at :data:`DPI`, with no ``Software`` (version) entry."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


# --- the benchmark's forest plot -------------------------------------------------------------

def _float_or_none(text):
    return None if text in ("", None) else float(text)


def read_summary_csv(path):
    """The rows of a ``benchmark.csv`` (:data:`srcnn_theano.apps.tables.SUMMARY_FIELDS`), typed.

    ``scale`` and ``images`` are ints, the scores floats, empty cells
    ``None``. :class:`SRCNNError` naming the file if it is missing or not
    such a table.
    """
    from srcnn_theano.apps.tables import SUMMARY_FIELDS

    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise SRCNNError(f"cannot read {path}: {e.strerror or e}") from None
    if not rows or set(SUMMARY_FIELDS) - set(rows[0]):
        raise SRCNNError(f"{path}: not a benchmark.csv (columns {', '.join(SUMMARY_FIELDS)})")
    try:
        return [dict(r, scale=int(r["scale"]), images=int(r["images"]), psnr=float(r["psnr"]),
                     ssim=float(r["ssim"]), delta_psnr=_float_or_none(r["delta_psnr"]),
                     ci_low=_float_or_none(r["ci_low"]), ci_high=_float_or_none(r["ci_high"]))
                for r in rows]
    except ValueError as e:
        raise SRCNNError(f"{path}: bad number in a benchmark.csv: {e}") from None


def forest_png(summary, baseline="bicubic", title=None):
    """The forest plot: each method's mean PSNR gain over ``baseline``, with its 95% interval.

    Parameters
    ----------
    summary : list of dict
        Rows of one protocol with ``dataset, scale, method, delta_psnr,
        ci_low, ci_high`` (dB); rows without a difference (the baseline
        itself) are left out.
    baseline : str
        Named on the axis.
    title : str or None

    Returns
    -------
    bytes (PNG): one panel per set, a group of lines per scale, a point
    and its interval per method; methods in the tables' order.
    """
    from srcnn_theano.apps.tables import method_order

    rows = [r for r in summary if r.get("delta_psnr") is not None]
    if not rows:
        raise SRCNNError(f"nothing to plot: no method has a PSNR difference to {baseline}")
    methods = method_order(r["method"] for r in rows)
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    scales = sorted({r["scale"] for r in rows})
    cell = {(r["dataset"], r["scale"], r["method"]): r for r in rows}
    lo = min(r["ci_low"] for r in rows)
    hi = max(r["ci_high"] for r in rows)
    pad = 0.05 * (hi - lo or 1.0)

    def draw():
        height = 0.9 + 0.16 * len(scales) * (len(methods) + 1)
        fig = new_figure(2.6 * len(datasets) + 1.2, height)
        axes = fig.subplots(1, len(datasets), sharey=True, squeeze=False)[0]
        step = 1.0 / (len(methods) + 1)
        for ax, dataset in zip(axes, datasets):
            for k, method in enumerate(methods):
                ys, xs, los, his = [], [], [], []
                for j, scale in enumerate(scales):
                    r = cell.get((dataset, scale, method))
                    if r is None:
                        continue
                    ys.append(j + (k + 1) * step)
                    xs.append(r["delta_psnr"])
                    los.append(r["delta_psnr"] - r["ci_low"])
                    his.append(r["ci_high"] - r["delta_psnr"])
                colour = METHOD_COLOURS[k % len(METHOD_COLOURS)]
                ax.errorbar(xs, ys, xerr=[los, his], fmt="o", ms=3.5, color=colour, elinewidth=1.2,
                            capsize=2, label=method if ax is axes[0] else None)
            for j in range(1, len(scales)):
                ax.axhline(j, color="0.85", lw=0.8)
            ax.axvline(0, color="0.3", lw=0.8, ls="--")
            ax.set_xlim(min(0.0, lo) - pad, hi + pad)
            ax.set_title(dataset)
            ax.set_xlabel(f"PSNR gain over {baseline} (dB)")
            ax.grid(axis="x", alpha=0.3)
        axes[0].set_ylim(len(scales), 0)
        axes[0].set_yticks([j + 0.5 for j in range(len(scales))], [f"x{s}" for s in scales])
        fig.legend(loc="outside right center", frameon=False)
        if title:
            fig.suptitle(title)
        return fig

    return styled(draw)


# --- the shipped models' training curves -----------------------------------------------------

def read_log(path):
    """A training log (``log.csv`` of :func:`srcnn_theano.training.checkpoint.write_logs`) as
    a list of dicts of floats (``epoch`` and ``step`` as ints)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return [{k: int(v) if k in ("epoch", "step") else float(v) for k, v in r.items()}
                for r in rows]
    except OSError as e:
        raise SRCNNError(f"cannot read {path}: {e.strerror or e}") from None
    except (ValueError, TypeError) as e:
        raise SRCNNError(f"{path}: not a training log: {e}") from None


def training_phases(provenance, logs_dir, scale):
    """Each training phase of a shipped model as ``dict(phase, val_set, start, log)``.

    ``start`` is the number of backprops (training patches, steps x batch
    size) the phase's initial weights had seen: every phase starts from the
    best epoch of the one before (the provenance's ``epoch``). ``log`` is
    the phase's ``logs/x<scale>_<phase>.csv`` with a ``backprops`` column
    added (from the start of training). ``val_set`` names the validation
    images (``Set5`` or ``scikit-image``).
    """
    phases, start = [], 0
    for p in provenance.get("phases", []):
        log_scale = p["config"]["scale"]
        log = read_log(os.path.join(logs_dir, f"x{log_scale}_{p['phase']}.csv"))
        batch = p["config"]["batch_size"]
        for r in log:
            r["backprops"] = start + r["step"] * batch
        val = "Set5" if p.get("val_dir", "").rstrip("/").endswith("Set5") else "scikit-image"
        phases.append(dict(phase=p["phase"], scale=log_scale, val_set=val, start=start, log=log))
        best = next((r for r in log if r["epoch"] == p["epoch"]), log[-1])
        start = best["backprops"]
    if not phases:
        raise SRCNNError(f"the x{scale} model's provenance lists no training phases")
    return phases


def training_curves_png(phases_by_scale, reference):
    """The shipped models' validation PSNR against backprops, the authors' 9-1-5 as reference.

    Parameters
    ----------
    phases_by_scale : dict int -> list
        :func:`training_phases` of each shipped model.
    reference : dict
        ``{(set, scale): (authors' PSNR, bicubic PSNR, ours PSNR)}`` in dB:
        the authors' 9-1-5 (91 images) model, bicubic and the shipped model
        (after every phase) on the same validation images (``"Set5"`` and
        ``"scikit-image"``), from the benchmark's table.

    Returns
    -------
    bytes (PNG): left, the first phase (x3 from He initialisation,
    validated on Set5, as in the paper's figure); right, the fine-tuning
    phases of every scale, validated on the scikit-image photographs, as
    the gain over bicubic.
    """
    def draw():
        fig = new_figure(10, 3.8)
        left, right = fig.subplots(1, 2, width_ratios=[1, 1.4])
        scratch = [(s, ph) for s, phases in sorted(phases_by_scale.items()) for ph in phases
                   if ph["val_set"] == "Set5"][:1]
        for scale, ph in scratch:
            x = np.array([r["backprops"] for r in ph["log"]]) / 1e6
            left.plot(x, [r["srcnn_psnr"] for r in ph["log"]], "o-", ms=3, color="#1f77b4",
                      label=f"ours 9-1-5 x{ph['scale']}, from He initialisation")
            authors, bicubic, final = reference[("Set5", ph["scale"])]
            left.axhline(final, color="#1f77b4", ls="-.", lw=1.2,
                         label=f"ours x{ph['scale']} after fine-tuning {final:.2f} dB")
            left.axhline(authors, color="#d62728", ls="--", lw=1.2,
                         label=f"authors' 9-1-5 (91 images) {authors:.2f} dB")
            left.axhline(bicubic, color="0.4", ls=":", lw=1.2, label=f"bicubic {bicubic:.2f} dB")
            left.set_title(f"Set5 x{ph['scale']}, first training phase")
        left.set(xlabel="backprops (millions of patches)", ylabel="PSNR, Y (dB)")
        left.legend(loc="lower right")
        for k, (scale, phases) in enumerate(sorted(phases_by_scale.items())):
            colour = METHOD_COLOURS[k]
            tuned = [ph for ph in phases if ph["val_set"] == "scikit-image"]
            for i, ph in enumerate(tuned):
                x = np.array([ph["start"]] + [r["backprops"] for r in ph["log"]]) / 1e6
                gain = [r["srcnn_psnr"] - r["bicubic_psnr"] for r in ph["log"]]
                y = [np.nan] + gain
                right.plot(x, y, "o-", ms=2, lw=1.2, color=colour,
                           label=f"ours x{scale}" if i == 0 else None)
                right.axvline(ph["start"] / 1e6, color=colour, lw=0.5, alpha=0.3)
            authors, bicubic, _ = reference[("scikit-image", scale)]
            right.axhline(authors - bicubic, color=colour, ls="--", lw=1,
                          label=f"authors' 9-1-5 (91 images) x{scale}")
        right.set(xlabel="backprops (millions of patches, from the start of training)",
                  ylabel="PSNR gain over bicubic, Y (dB)",
                  title="fine-tuning on augmented T91, validated on scikit-image's photographs")
        right.legend(loc="lower right", ncols=2)
        for ax in (left, right):
            ax.grid(alpha=0.3)
        return fig

    return styled(draw)


# --- first-layer filters ---------------------------------------------------------------------

def filter_grid(w, columns=8, gap=1):
    """First-layer filters ``w`` (n, 1, f, f) tiled as one 2-D float image in [0, 1].

    Each filter is scaled to its own range (as the paper shows them); the
    gaps are 1 (white).
    """
    w = np.asarray(w, np.float64)[:, 0]
    n, f, _ = w.shape
    rows = -(-n // columns)
    grid = np.ones((rows * (f + gap) - gap, columns * (f + gap) - gap))
    for i in range(n):
        k = w[i] - w[i].min()
        k = k / k.max() if k.max() > 0 else k
        r, c = divmod(i, columns)
        grid[r * (f + gap):r * (f + gap) + f, c * (f + gap):c * (f + gap) + f] = k
    return grid


def filters_png(panels):
    """``panels`` = [(title, conv1.W (n, 1, f, f))]: the filter grids side by side (gray)."""
    def draw():
        fig = new_figure(3.3 * len(panels), 3.6)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (title, w) in zip(axes, panels):
            ax.imshow(filter_grid(w), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(title)
            ax.axis("off")
        return fig

    return styled(draw)


# --- speed -----------------------------------------------------------------------------------

SPEED_FIELDS = ("arch", "predict_ms", "pytorch_predict_ms", "train_step_ms", "pytorch_train_step_ms",
                "predict_gflops", "train_gflops")


def read_speed(path):
    """The speed file (``benchmarks/results/speed.json``), checked.

    Schema: ``{"cpu": str, "sgemm_gflops": float, "measured": str,
    "command": str, "rows": [{arch, predict_ms, pytorch_predict_ms,
    train_step_ms, pytorch_train_step_ms, predict_gflops, train_gflops}]}``
    (times are medians in milliseconds; GFLOP/s are ours; ``sgemm_gflops``
    is the machine's float32 matrix-product rate; a row may carry its own,
    timed in the same run). Written by ``benchmarks/compare_pytorch.py
    --out``. :class:`SRCNNError`
    naming the file when a field is missing.
    """
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as e:
        raise SRCNNError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise SRCNNError(f"{path}: not JSON: {e}") from None
    missing = [k for k in ("cpu", "sgemm_gflops", "rows") if k not in data]
    missing += [f"rows[{i}].{k}" for i, r in enumerate(data.get("rows", [])) for k in SPEED_FIELDS
                if k not in r]
    if missing:
        raise SRCNNError(f"{path}: missing {', '.join(missing)}")
    return data


def speed_png(speed):
    """Predict and training-step times per architecture, ours beside PyTorch's (ms, lower is better)."""
    rows = speed["rows"]

    def draw():
        fig = new_figure(8, 3.2)
        axes = fig.subplots(1, 2)
        x = np.arange(len(rows))
        for ax, (what, ours, theirs) in zip(axes, [
                ("predict, one 512x512 Y image", "predict_ms", "pytorch_predict_ms"),
                ("training step, 64 patches 33x33", "train_step_ms", "pytorch_train_step_ms")]):
            a = [r[ours] for r in rows]
            b = [r[theirs] for r in rows]
            ax.bar(x - 0.2, a, 0.4, color="#1f77b4", label="srcnn-theano (Theano)")
            ax.bar(x + 0.2, b, 0.4, color="#ff7f0e", label="PyTorch, CPU")
            for xi, ai, bi in zip(x, a, b):
                ax.annotate(f"{ai / bi:.2f}x", (xi - 0.2, ai), ha="center", va="bottom",
                            xytext=(0, 2), textcoords="offset points", fontsize=7)
            ax.set_xticks(x, [r["arch"] for r in rows])
            ax.set(title=what, ylabel="ms (median)")
            ax.set_ylim(0, 1.15 * max(a + b))
            ax.grid(axis="y", alpha=0.3)
        axes[0].legend(loc="upper left")
        fig.suptitle(f"{speed['cpu']}; above each bar: our time / PyTorch's")
        return fig

    return styled(draw)
