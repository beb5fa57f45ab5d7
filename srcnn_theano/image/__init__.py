"""Image files and MATLAB parity: reading/writing, rgb2ycbcr (the one Y path), imresize bicubic."""
