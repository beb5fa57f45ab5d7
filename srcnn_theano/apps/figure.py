"""The comparison figure: ground truth, bicubic and SRCNN side by side.

Colour pictures are made the way the paper's figures are: SRCNN's Y with
the bicubic image's Cb/Cr. Captions give the Y-channel PSNR of the whole
(shaved) image, computed by :func:`srcnn_theano.evaluation.protocol.evaluate_image`.
"""
import io

import numpy as np

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


def save_comparison(path, image, scale, predictor, name="image", crop=None, replace=True):
    """Write the side-by-side PNG. ``crop`` = (top, left, height, width) in HR pixels.

    ``replace``: False publishes it exclusively, never over an existing
    file (:func:`srcnn_theano.files.publish`).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels, report = comparison_panels(image, scale, predictor, name)
    if crop is None:
        h, w = panels[0][1].shape[:2]
        side = min(h, w, 160)
        crop = ((h - side) // 2, (w - side) // 2, side, side)
    t, l, ch, cw = crop
    captions = {"ground truth": "ground truth",
                "bicubic": f"bicubic {report['bicubic_psnr']:.2f} dB",
                "SRCNN": f"SRCNN {report['srcnn_psnr']:.2f} dB"}
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.4))
    for ax, (title, img) in zip(axes, panels):
        ax.imshow(img[t:t + ch, l:l + cw], cmap="gray" if img.ndim == 2 else None,
                  vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(captions[title])
        ax.axis("off")
    fig.suptitle(f"{name}, x{scale} (Y-channel PSNR of the whole image)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue(), replace=replace)
    return report
