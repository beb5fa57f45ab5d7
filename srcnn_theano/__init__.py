"""srcnn-theano: SRCNN (Dong et al., ECCV 2014 / TPAMI 2015) on Theano + Lasagne.

The pipeline, one folder per stage, data flowing one way::

    image/       io, units (0-1 floats, MATLAB rounding), ycbcr (the one Y path), imresize
    patches/     extract (generate_train.m), store (HDF5)
    network/     banded_corr, model (Lasagne), functions (compiled Theano), weights, inference
    evaluation/  metrics (PSNR/SSIM), protocol (the authors' test), datasets
    training/    config, data, checkpoint, loop
    apps/        upscale, figure, benchmark, demo, speed, export (ONNX, safetensors)

``errors`` (the one error type and command-line runner) and ``files``
(atomic writes, hashes) serve all of them; ``blas``, ``gpu`` and ``backend``
set up Theano before ``network``; ``cli`` is a thin command line over the
library. docs/architecture.md has one line per module and the array types
at each boundary.

Importing this package does not import Theano; modules that need it import
it through :mod:`srcnn_theano.backend`.
"""
__version__ = "0.1.0"
