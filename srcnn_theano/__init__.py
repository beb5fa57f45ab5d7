"""srcnn-theano: SRCNN (Dong et al., ECCV 2014 / TPAMI 2015) on Theano + Lasagne.

The pipeline, one folder per stage, data flowing one way, and the modules
that serve them (docs/architecture.md has one line per module, the order of
imports and the array types at each boundary).

Modules::

    image/       image files, MATLAB parity (units, ycbcr: the one Y path, imresize)
    patches/     training patches: extraction (generate_train.m), the HDF5 store
    network/     the network: ops, Lasagne model, compiled functions, weights, inference
    evaluation/  PSNR/SSIM, the authors' protocol, scoring, datasets, statistics
    training/    recipes, a run's data, checkpoints, the loop
    apps/        what users run: upscale, figure, benchmark, demo, speed, export
    errors       ``SRCNNError``, the one error type users see
    files        atomic writes, the rule for existing outputs, hashes, the cache folder
    allocator    glibc's malloc tuned to keep large freed blocks
    cores        the CPU cores this process may use
    blas         which BLAS Theano links: probed once per machine, cached
    gpu          Theano's GPU ops on cuDNN 8/9, flags, ``configure``
    backend      Theano and Lasagne, configured and patched: the only importer of Theano
    commandline  the runner of all three command lines: parsing, ``error:`` lines, exit codes
    cli          ``python -m srcnn_theano`` / ``srcnn-theano``: the sub-commands
    __main__     ``python -m srcnn_theano``: runs ``cli``

Importing this package does not import Theano; modules that need it import
it through :mod:`srcnn_theano.backend`.
"""
__version__ = "0.1.0"
