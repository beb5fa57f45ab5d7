"""Training patches: cut from images in numpy, stored in an HDF5 file.

Modules::

    extract     the authors' ``generate_train.m``: aligned sub-images, augmentation
    cutting     cutting images into the buckets, in this process or in workers
    workers     the worker processes: tasks in order, a bounded number in flight
    buckets     the two-pass shuffle, in place in the output
    writer      ``write_h5``: the HDF5 patch file, written atomically
    store       the HDF5 patch file: format, validating reader, minibatch sampler
"""
