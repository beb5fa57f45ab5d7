"""Applications over the library: what a user runs.

Modules::

    upscale     enlarging real photos: SRCNN on Y, bicubic Cb/Cr/alpha, tiled, band by band
    figure      the comparison figure: ground truth, bicubic and models, zoomed crops, PSNR
    benchmark   the researcher's table (the ``psnr-table`` command): every model, one protocol
    tables      the table's files (Markdown, CSV, LaTeX, per-image CSV) and the speed tables
    plots       figures from stored numbers: forest plot, training curves, filters, speed
    demo        ``python train.py`` with no data: the ``fast`` recipe on bundled photographs
    speed       the ``speed`` command: predict and train-step timings
    export      a model as ONNX or safetensors, with its metadata
"""
