"""Evaluation: metrics (PSNR/SSIM on Y), the authors' protocol, ground-truth image sets."""
