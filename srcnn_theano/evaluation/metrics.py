"""Image-quality metrics as the SRCNN papers compute them.

Both take uint8-valued arrays (H, W) of the Y channel, already shaved; the
authors' ``compute_psnr`` works on uint8 images in [0, 255].
"""
import numpy as np
from skimage.metrics import structural_similarity


def shave(img, border):
    """Drop ``border`` pixels on each side of the two first axes (the authors' ``shave``)."""
    if border == 0:
        return img
    return img[border:-border, border:-border]


def psnr(a, b):
    """PSNR in dB, 20 log10(255 / RMSE), of two uint8 images of the same shape."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    rmse = np.sqrt(np.mean(diff ** 2))
    return float("inf") if rmse == 0 else float(20.0 * np.log10(255.0 / rmse))


def ssim(a, b):
    """SSIM (Wang et al. 2004: Gaussian window 11x11, sigma 1.5, K1 0.01, K2 0.03, range 255)."""
    return float(structural_similarity(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64),
                                       data_range=255, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False, K1=0.01, K2=0.03))
