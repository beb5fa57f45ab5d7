"""Whether a lead means anything: paired bootstrap confidence intervals of a mean difference.

Two methods scored on the same images give paired per-image values. The
difference of their means is the mean of the per-image differences; its
95% interval is the percentile bootstrap: the images are resampled with
replacement ``resamples`` times (10,000 by default) and the 2.5th and
97.5th percentiles of the resampled means are the bounds. The resampling is
seeded, so the same inputs and seed always give the same interval; the
indices depend only on the seed and the number of images, so every method
of one table is resampled on the same draws.
"""
import numpy as np

RESAMPLES = 10_000
SEED = 0


def paired_bootstrap(values, baseline, resamples=RESAMPLES, seed=SEED, level=0.95):
    """Mean of ``values - baseline`` and its percentile-bootstrap confidence interval.

    Parameters
    ----------
    values, baseline : sequence of float, same length n >= 1
        Paired per-image scores (e.g. PSNR in dB of a method and of bicubic
        on the same images, in the same order).
    resamples : int
        Bootstrap resamples.
    seed : int
        Seed of ``numpy.random.default_rng``.
    level : float
        Coverage of the interval (0.95: the 2.5th and 97.5th percentiles).

    Returns
    -------
    (mean, low, high) : floats
        ``mean`` is the mean per-image difference; with one image the
        interval is that difference itself; with an infinite difference
        (a PSNR of identical images) the bounds are NaN.
    """
    d = np.asarray(values, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError(f"need two equal, non-empty sequences, got {np.shape(values)} and "
                         f"{np.shape(baseline)}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, not {resamples}")
    if not np.all(np.isfinite(d)):  # an infinite PSNR (identical images): no interval
        return float(d.mean()), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(int(resamples), d.size))
    means = d[idx].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(d.mean()), float(low), float(high)


def format_delta(mean, low, high, digits=2):
    """``'+0.08 [+0.03, +0.13]'``: a difference and its interval, signed."""
    return f"{mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"
