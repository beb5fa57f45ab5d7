"""Training patches: numpy extraction/augmentation (``extract``) and the HDF5 store (``store``)."""
