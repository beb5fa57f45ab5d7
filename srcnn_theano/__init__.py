"""srcnn-theano: SRCNN (Dong et al., ECCV 2014 / TPAMI 2015) on Theano + Lasagne.

The pipeline, one stage per module, data flowing one way::

    image_io  -> ycbcr (MATLAB rgb2ycbcr) -> imresize (MATLAB bicubic)
      -> patches (HDF5 training patches)  -> model (Lasagne layers, conv_ops)
      -> functions (compiled Theano train/val/predict) -> training -> weights
      -> inference (whole images, tiles) -> metrics / evaluate (PSNR, SSIM)
      -> upscale (real photos), benchmark / figure (tables and pictures)

``backend`` (Theano flags, Lasagne shims, ``gpu``) comes before all of it;
``cli`` is a thin command line over the library.

Importing this package does not import Theano; modules that need it import
it through :mod:`srcnn_theano.backend`.
"""
__version__ = "0.1.0"
