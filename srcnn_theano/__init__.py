"""srcnn-theano: SRCNN (Dong et al., ECCV 2014 / TPAMI 2015) on Theano + Lasagne.

The pipeline, one stage per module, data flowing one way::

    image_io  -> ycbcr (MATLAB rgb2ycbcr) -> imresize (MATLAB bicubic)
      -> patches (HDF5 training patches)  -> model (Lasagne layers)
      -> functions (compiled Theano train/val/predict) -> weights
      -> inference (whole images, tiles) -> metrics / evaluate (PSNR, SSIM)

Importing this package does not import Theano; modules that need it import
it through :mod:`srcnn_theano.backend`.
"""
__version__ = "0.1.0"
