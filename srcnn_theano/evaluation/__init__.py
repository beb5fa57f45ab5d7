"""Evaluation: scores of SR images under the authors' protocol and others.

Modules::

    metrics     PSNR and SSIM on uint8 Y (the papers'); BasicSR's on float Y
    protocol    the authors' test protocol (``demo_SR.m``): bicubic and SRCNN, scored
    score       any method's SR images against the ground truth: matlab, basicsr, rgb
    pairing     pairing files by name: HR with SR or LR images
    datasets    ground-truth image sets: folders, the benchmark layouts, bundled photographs
    statistics  the paired bootstrap interval of a mean PSNR difference
"""
