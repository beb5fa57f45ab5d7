#!/usr/bin/env python
"""Make an SRCNN training file (HDF5 patches) from a folder of images.

Example, the paper's setting (91 images, x3, 33/21 patches, stride 14)::

    python data_prep/generate_h5.py --images ../shared/data/T91 --scale 3 --output train_x3.h5

Errors are printed as one ``error: ...`` line on stderr with exit status 2.
"""
import os
import sys

if __package__ in (None, ""):
    try:
        import srcnn_theano  # noqa: F401  (installed, or run from the repo with it on the path)
    except ImportError:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from srcnn_theano.commandline import (ArgumentParser, add_pixel_limit_option, exit_process,
                                      run_command)  # noqa: E402
from srcnn_theano.errors import SRCNNError  # noqa: E402
from srcnn_theano.image.io import list_images  # noqa: E402
from srcnn_theano.patches.extract import CHANNELS  # noqa: E402
from srcnn_theano.patches.writer import default_workers, write_h5  # noqa: E402


def build_parser():
    p = ArgumentParser(description="Cut shuffled SRCNN training patches (MATLAB generate_train.m) into HDF5.")
    p.add_argument("--images", required=True, metavar="DIR", help="folder of training images (e.g. T91)")
    p.add_argument("--scale", required=True, type=int, help="upscaling factor (2, 3, 4, ...)")
    p.add_argument("--output", required=True, metavar="FILE.h5", help="HDF5 file to create")
    p.add_argument("--input-size", type=int, default=33, help="input patch side in pixels (default 33)")
    p.add_argument("--label-size", type=int, default=21,
                   help="label patch side in pixels (default 21; equal to --input-size for 'same' padding)")
    p.add_argument("--stride", type=int, default=14, help="step between patches in pixels (default 14)")
    p.add_argument("--channels", choices=CHANNELS, default="y",
                   help="'y': luminance as in the paper (default); 'rgb': 3-channel patches")
    p.add_argument("--augment", action="store_true",
                   help="add 8 rotations/flips x 5 downscales of every image (not in the paper)")
    p.add_argument("--drop-partial-chunk", action="store_true",
                   help="drop the last incomplete chunk of 128 patches, as the authors' MATLAB writer does")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed (default 0)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="processes cutting patches (default: the number of cores, here "
                        f"{default_workers()}); the file is the same for any N")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return add_pixel_limit_option(p)


def _main(argv):
    args = build_parser().parse_args(argv)
    paths = list_images(args.images)
    if not paths:
        raise SRCNNError(f"no images in folder: {args.images}")
    try:
        summary = write_h5(args.output, paths, args.scale,
                           input_size=args.input_size, label_size=args.label_size, stride=args.stride,
                           seed=args.seed, drop_partial_chunk=args.drop_partial_chunk,
                           augment=args.augment, channels=args.channels, force=args.force,
                           progress=not args.quiet,
                           workers=default_workers() if args.workers is None else args.workers)
    except KeyboardInterrupt:
        raise KeyboardInterrupt("error: interrupted; no output written") from None
    dropped = summary.count_extracted - summary.count
    print(f"wrote {summary.count} patches from {summary.images} images to {summary.path}"
          + (f" ({dropped} dropped with the partial chunk)" if dropped else "")
          + (f"; skipped {len(summary.skipped)} image(s)" if summary.skipped else ""))
    return 0


def main(argv=None):
    """Exit status 0, 2 (bad input) or 130 (interrupted)."""
    return run_command(_main, argv)


if __name__ == "__main__":
    exit_process(main())
