"""The network: Lasagne layers, compiled Theano functions, weights files, whole-image inference.

Modules::

    banded_corr the CPU correlation ops: pixel-major bands sized for the cache, their C code
    fused_corr  two layers in one pass over the bands: fused ops and the graph rewrites that make them
    model       SRCNN as Lasagne layers, architectures, padding modes
    functions   compiled predict/train/val functions, SGD and Adam, Caffe's loss
    cache       what a new process would rebuild, kept on disk (cache keys, pickled functions)
    weights     weights files: the project's ``.npz``, the authors' ``.mat``, the shipped models
    inference   ``Predictor``: whole images through a compiled function, exact tiling
"""
