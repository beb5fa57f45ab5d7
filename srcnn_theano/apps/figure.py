"""The comparison figure: ground truth, bicubic and one or more SRCNN models side by side.

Colour pictures are made the way the paper's figures are: SRCNN's Y with
the bicubic image's Cb/Cr. Captions give the Y-channel PSNR of the whole
(shaved) image, computed by :func:`srcnn_theano.evaluation.protocol.evaluate_image`.
"""
import numpy as np

from srcnn_theano.errors import SRCNNError
from srcnn_theano.evaluation.protocol import evaluate_image
from srcnn_theano.files import atomic_write_bytes
from srcnn_theano.image.imresize import degrade, modcrop
from srcnn_theano.image.units import from_float, to_float
from srcnn_theano.image.ycbcr import rgb2ycbcr, ycbcr2rgb


def comparison_panels(image, scale, predictor, name="image"):
    """Ground truth, bicubic and SRCNN versions of ``image`` (uint8), plus the metrics.

    Returns
    -------
    (panels, report): panels is a list of (title, uint8 (H, W[, 3])) and
    report the dict of :func:`evaluate_image` (without the images).
    """
    report = evaluate_image(image, scale, predictor, name=name)
    ys = report.pop("images")
    if image.ndim == 2:
        return [("ground truth", ys["gt"]), ("bicubic", ys["bicubic"]), ("SRCNN", ys["srcnn"])], report
    hr = to_float(modcrop(image[..., :3], scale))
    bic = np.clip(degrade(hr, scale), 0, 1)
    ycc = rgb2ycbcr(bic)
    ycc[..., 0] = to_float(ys["srcnn"])  # MATLAB's Y in uint8 units, as a float in [0, 1]
    panels = [("ground truth", from_float(hr)), ("bicubic", from_float(bic)),
              ("SRCNN", from_float(ycbcr2rgb(ycc)))]
    return panels, report


def model_panels(image, scale, models, name="image"):
    """Ground truth, bicubic, then each model's picture of ``image`` (uint8), with their PSNRs.

    Parameters
    ----------
    image : uint8 ndarray (H, W[, C])
        The ground truth.
    scale : int
    models : list of (str, callable)
        ``(label, predictor)``: a label for the caption and a
        :class:`~srcnn_theano.network.inference.Predictor` (or any callable
        mapping a float32 (H, W) Y image to one).
    name : str

    Returns
    -------
    (panels, reports): panels is a list of (caption, uint8 (H, W[, 3]),
    PSNR in dB or None): the ground truth (no PSNR), bicubic, then each
    model, in the order given; reports holds each model's
    :func:`evaluate_image` dict (without the images).
    """
    if not models:
        raise SRCNNError("a comparison figure needs at least one model")
    out, reports = [], []
    for label, predictor in models:
        panels, report = comparison_panels(image, scale, predictor, name)
        if not out:
            out = [("ground truth", panels[0][1], None),
                   ("bicubic", panels[1][1], report["bicubic_psnr"])]
        out.append((label, panels[2][1], report["srcnn_psnr"]))
        reports.append(report)
    return out, reports


def default_crop(shape, side=160):
    """(top, left, height, width): a centred square of ``side`` pixels (or the whole short side)."""
    h, w = shape[:2]
    side = min(h, w, side)
    return (h - side) // 2, (w - side) // 2, side, side


def comparison_png(panels, crop, title):
    """PNG bytes: the whole ground truth with the crop marked, then each panel's crop, zoomed.

    ``panels`` as :func:`model_panels` returns them; the PSNR (of the whole
    shaved image) is written under each crop. Drawn in the style of
    :mod:`srcnn_theano.apps.plots` (the same bytes on every run).
    """
    from matplotlib.patches import Rectangle

    from srcnn_theano.apps.plots import new_figure, styled

    t, l, ch, cw = crop
    hr = panels[0][1]

    def draw():
        ratio = hr.shape[1] / hr.shape[0]
        fig = new_figure(2.1 * (len(panels) + ratio), 2.75)
        axes = fig.subplots(1, len(panels) + 1, width_ratios=[ratio] + [cw / ch] * len(panels))
        gray = hr.ndim == 2
        axes[0].imshow(hr, cmap="gray" if gray else None, vmin=0, vmax=255, interpolation="antialiased")
        axes[0].add_patch(Rectangle((l - 0.5, t - 0.5), cw, ch, fill=False, color="yellow", lw=1.2))
        axes[0].set_xlabel(f"{hr.shape[1]}x{hr.shape[0]}")
        for ax, (caption, img, psnr) in zip(axes[1:], panels):
            ax.imshow(img[t:t + ch, l:l + cw], cmap="gray" if gray else None, vmin=0, vmax=255,
                      interpolation="nearest")
            ax.set_title(caption)
            ax.set_xlabel("reference" if psnr is None else f"{psnr:.2f} dB")
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(title)
        return fig

    return styled(draw)


def save_comparison(path, image, scale, predictor, name="image", crop=None, replace=True, label="SRCNN",
                    others=()):
    """Write the comparison PNG; returns the report of ``predictor``'s model (:func:`evaluate_image`).

    ``crop`` = (top, left, height, width) in HR pixels (default: a centred
    160-pixel square); ``others`` = [(label, predictor)] come before
    ``predictor`` (captioned ``label``). ``replace``: False publishes the
    file exclusively, never over an existing one
    (:func:`srcnn_theano.files.publish`).
    """
    models = list(others) + [(label, predictor)]
    panels, reports = model_panels(image, scale, models, name)
    if crop is None:
        crop = default_crop(panels[0][1].shape)
    png = comparison_png(panels, crop, f"{name}, x{scale}: Y-channel PSNR of the whole image, "
                                       f"{scale} pixels shaved")
    atomic_write_bytes(path, png, replace=replace)
    return reports[-1]
