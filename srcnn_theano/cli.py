"""Command line: ``python -m srcnn_theano`` / ``srcnn-theano``.

A thin layer over the library: argument parsing, then one library call per
sub-command, run by :func:`srcnn_theano.errors.run_command` (user errors
print ``error: ...`` on one line and exit with status 2, never a traceback).
"""
import json
import os
import sys

from srcnn_theano.commandline import ArgumentParser, add_pixel_limit_option, run_command
from srcnn_theano.errors import SRCNNError


def _weights_and_scale(args):
    """``--weights`` (or the shipped model for ``--scale``) and the scale to use."""
    from srcnn_theano.network.weights import load, load_default

    if args.weights:
        weights = load(args.weights)
        scale = args.scale if args.scale is not None else weights.scale
        if scale is None:
            raise SRCNNError("--scale is required: the weights file does not say its scale")
    else:
        scale = args.scale if args.scale is not None else 3
        weights = load_default(scale)
    if scale < 2:
        raise SRCNNError(f"--scale must be 2 or more, not {scale}")
    weights.check_scale(scale)
    return weights, scale


def _cmd_evaluate(args):
    from srcnn_theano.evaluation.protocol import evaluate_paths, format_table
    from srcnn_theano.image.io import expand_inputs

    weights, scale = _weights_and_scale(args)
    report = evaluate_paths(expand_inputs(args.inputs), scale, weights, progress=not args.json)
    print(json.dumps(report) if args.json else format_table(report))


def _cmd_upscale(args):
    from srcnn_theano.apps.upscale import output_paths, upscale_files

    weights, scale = _weights_and_scale(args)
    pairs = output_paths([args.input], args.output, force=args.force)
    failed = upscale_files(pairs, scale, weights, quality=args.quality,
                           **({} if args.tile is None else {"tile": args.tile}))
    done = len(pairs) - len(failed)
    if len(pairs) > 1 or not failed:
        print(f"wrote {done} image(s) x{scale} to {args.output}", file=sys.stderr)
    if failed:
        if len(pairs) == 1:
            raise SRCNNError(failed[0][1])
        names = ", ".join(os.path.basename(p) for p, _ in failed)
        for p, msg in failed:
            print(f"  failed: {msg}", file=sys.stderr)
        raise SRCNNError(f"{len(failed)} of {len(pairs)} image(s) failed: {names}")


def _cmd_benchmark(args):
    from srcnn_theano.apps.benchmark import run_benchmark, to_markdown, write_benchmark

    rows = run_benchmark(args.data, scales=args.scales, authors_dir=args.authors_models)
    md, cs = write_benchmark(rows, args.out)
    print(to_markdown(rows))
    print(f"wrote {md} and {cs}", file=sys.stderr)


def _cmd_figure(args):
    from srcnn_theano.apps.figure import save_comparison
    from srcnn_theano.image.io import read_image
    from srcnn_theano.network.inference import Predictor

    weights, scale = _weights_and_scale(args)
    crop = tuple(args.crop) if args.crop else None
    report = save_comparison(args.output, read_image(args.image), scale, Predictor(weights),
                             name=os.path.basename(args.image), crop=crop)
    print(f"wrote {args.output}: bicubic {report['bicubic_psnr']:.2f} dB, "
          f"SRCNN {report['srcnn_psnr']:.2f} dB", file=sys.stderr)


def _cmd_bench(args):
    from srcnn_theano.apps.speed import run_from_args

    return run_from_args(args)


def _add_weights_options(p):
    p.add_argument("--weights", help="project weights (.npz) or an authors' model (.mat); "
                                     "default: the shipped model for --scale")
    p.add_argument("--scale", type=int, help="upscaling factor (default: the weights' own, or 3)")


def build_parser():
    parser = ArgumentParser(prog="srcnn-theano", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("evaluate", help="PSNR/SSIM of bicubic and SRCNN on ground-truth images "
                                         "(the authors' protocol)")
    _add_weights_options(ev)
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    ev.set_defaults(func=_cmd_evaluate)

    up = sub.add_parser("upscale", help="enlarge real images (SRCNN on Y, bicubic on Cb/Cr/alpha)")
    _add_weights_options(up)
    up.add_argument("input", metavar="INPUT", help="an image file or a folder of images")
    up.add_argument("-o", "--output", required=True,
                    help="output file (format from its extension) or folder")
    up.add_argument("--tile", type=int, help="low-resolution tile side (bounded memory; default 128)")
    up.add_argument("--quality", type=int, default=95,
                    help="JPEG/WebP quality 1..100 (default 95; JPEG with 4:4:4 chroma)")
    up.add_argument("--force", action="store_true",
                    help="replace existing outputs (never an input: that is always refused)")
    up.set_defaults(func=_cmd_upscale)

    bm = sub.add_parser("benchmark", help="the paper-style table: bicubic, authors' models, ours")
    bm.add_argument("--data", required=True, nargs="+",
                    help="folders of HR images (Set5, Set14, ...), or folders of such folders")
    bm.add_argument("--authors-models", help="the authors' SRCNN_v1/model folder (optional)")
    bm.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4])
    bm.add_argument("--out", default="results", help="folder for benchmark.md and benchmark.csv")
    bm.set_defaults(func=_cmd_benchmark)

    fg = sub.add_parser("figure", help="HR / bicubic / SRCNN comparison PNG with PSNR captions")
    _add_weights_options(fg)
    fg.add_argument("image", help="a ground-truth (HR) image")
    fg.add_argument("-o", "--output", required=True, help="output PNG")
    fg.add_argument("--crop", type=int, nargs=4, metavar=("TOP", "LEFT", "H", "W"))
    fg.set_defaults(func=_cmd_figure)

    from srcnn_theano.apps.speed import add_arguments as _bench_arguments
    bn = sub.add_parser("bench", help="speed: predict on one SIZE x SIZE image and one training "
                                      "step (medians; --json prints one JSON line last)")
    _bench_arguments(bn)
    bn.set_defaults(func=_cmd_bench)
    for command in sub.choices.values():
        add_pixel_limit_option(command)
    return parser


def _main(argv):
    args = build_parser().parse_args(argv)
    return args.func(args)


def main(argv=None):
    """``python -m srcnn_theano`` / ``srcnn-theano``: returns the exit status."""
    return run_command(_main, argv)
