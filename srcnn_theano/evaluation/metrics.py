"""Image-quality metrics: the SRCNN papers' PSNR/SSIM, and BasicSR's.

``psnr`` and ``ssim`` take uint8-valued arrays (H, W) of the Y channel,
already shaved, as the authors' ``compute_psnr`` works on uint8 images in
[0, 255]. ``psnr_basicsr`` and ``ssim_basicsr`` are BasicSR's
``calculate_psnr`` / ``_ssim`` (``basicsr/metrics/psnr_ssim.py``) on float64
(H, W) planes in [0, 255], not rounded (BasicSR's Y is float).
"""
import numpy as np

BASICSR_WINDOW = 11  #: side of BasicSR's Gaussian SSIM window (sigma 1.5)


def shave(img, border):
    """Drop ``border`` pixels on each side of the two first axes (the authors' ``shave``)."""
    if border == 0:
        return img
    return img[border:-border, border:-border]


def psnr(a, b):
    """PSNR in dB, 20 log10(255 / RMSE), of two uint8-valued images of the same shape.

    Parameters
    ----------
    a, b : ndarray, (H, W) or (H, W, C), values 0..255 (any dtype)
        The mean is over every value (all channels together).

    Returns
    -------
    float
        ``inf`` for identical images.
    """
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    rmse = np.sqrt(np.mean(diff ** 2))
    return float("inf") if rmse == 0 else float(20.0 * np.log10(255.0 / rmse))


def ssim(a, b):
    """SSIM (Wang et al. 2004: Gaussian window 11x11, sigma 1.5, K1 0.01, K2 0.03, range 255).

    scikit-image's ``structural_similarity`` on (H, W) planes, values 0..255,
    as ``evaluate`` reports it.
    """
    from skimage.metrics import structural_similarity  # 0.2 s to import: only when needed

    return float(structural_similarity(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64),
                                       data_range=255, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False, K1=0.01, K2=0.03))


def psnr_basicsr(a, b):
    """BasicSR's ``calculate_psnr`` after cropping: ``10 log10(255^2 / MSE)`` in float64.

    Parameters
    ----------
    a, b : ndarray, (H, W) or (H, W, C), float values in [0, 255]

    Returns
    -------
    float
        ``inf`` for identical images (as BasicSR).
    """
    mse = np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0 * 255.0 / mse))


def ssim_basicsr(a, b):
    """BasicSR's ``_ssim`` on one plane: its own SSIM, not scikit-image's.

    OpenCV's 11x11 Gaussian window (``cv2.getGaussianKernel(11, 1.5)``, outer
    product) applied with ``cv2.filter2D`` to ``a``, ``b``, ``a**2``, ``b**2``
    and ``a*b``, keeping only the 'valid' part (5 pixels cropped on each
    side), C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2, mean of the SSIM map.

    Parameters
    ----------
    a, b : ndarray, (H, W), float values in [0, 255]; H, W >= 11

    Returns
    -------
    float
    """
    import cv2

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if min(a.shape) < BASICSR_WINDOW:
        raise ValueError(f"BasicSR's SSIM needs at least {BASICSR_WINDOW}x{BASICSR_WINDOW} pixels, "
                         f"got {a.shape[0]}x{a.shape[1]}")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    kernel = cv2.getGaussianKernel(BASICSR_WINDOW, 1.5)
    window = np.outer(kernel, kernel.transpose())
    r = BASICSR_WINDOW // 2

    def filt(x):
        return cv2.filter2D(x, -1, window)[r:-r, r:-r]

    mu1, mu2 = filt(a), filt(b)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 ** 2, mu2 ** 2, mu1 * mu2
    sigma1_sq = filt(a ** 2) - mu1_sq
    sigma2_sq = filt(b ** 2) - mu2_sq
    sigma12 = filt(a * b) - mu1_mu2
    ssim_map = ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / ((mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2))
    return float(ssim_map.mean())
