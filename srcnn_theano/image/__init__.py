"""Image files and MATLAB parity.

Modules::

    io          reading and writing image files: arrays, orientation, metadata, size limits
    png         PNG encoding band by band, compressed by a thread
    units       uint8/uint16 <-> 0-1 floats, MATLAB's rounding
    ycbcr       MATLAB's rgb2ycbcr/ycbcr2rgb and ``y_channel``, the one Y path
    imresize    MATLAB's bicubic ``imresize``, ``modcrop``, ``degrade``
    loops       the inner loops of imresize, ycbcr and units in C (loops.c), loaded with ctypes
"""
