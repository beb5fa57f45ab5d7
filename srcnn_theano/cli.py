"""Command line: ``python -m srcnn_theano`` / ``srcnn-theano``.

A thin layer over the library: argument parsing, then one library call per
sub-command, run by :func:`srcnn_theano.commandline.run_command` (user errors
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
    from srcnn_theano.evaluation.datasets import hr_inputs, lr_candidates
    from srcnn_theano.evaluation.pairing import pair
    from srcnn_theano.evaluation.protocol import evaluate_paths, format_table

    weights, scale = _weights_and_scale(args)
    paths = hr_inputs(args.inputs, scale)
    lr_paths = pair(paths, lr_candidates(args.lr, scale), "LR", args.lr) if args.lr else None
    report = evaluate_paths(paths, scale, weights, progress=not args.json, lr_paths=lr_paths,
                            save_dir=args.save_dir, imresize_border=args.imresize_border,
                            force=args.force)
    print(json.dumps(report) if args.json else format_table(report))
    if args.save_dir:
        print(f"wrote {len(paths)} SRCNN and bicubic image(s) to {args.save_dir}/SRCNN and "
              f"{args.save_dir}/bicubic", file=sys.stderr)


def _cmd_score(args):
    from srcnn_theano.evaluation.datasets import hr_inputs
    from srcnn_theano.evaluation.score import format_score_table, score_folder

    if args.scale < 2:
        raise SRCNNError(f"--scale must be 2 or more, not {args.scale}")
    for option, folder in (("--hr", args.hr), ("--sr", args.sr)):
        if not os.path.isdir(folder):
            raise SRCNNError(f"{option}: not a folder: {folder}")
    report = score_folder(hr_inputs([args.hr], args.scale), args.sr, args.scale, args.protocol,
                          args.shave)
    print(json.dumps(report) if args.json else format_score_table(report))


def _cmd_upscale(args):
    from srcnn_theano.apps.upscale import output_paths, upscale_files

    weights, scale = _weights_and_scale(args)
    pairs = output_paths([args.input], args.output, force=args.force)
    failed = upscale_files(pairs, scale, weights, quality=args.quality, force=args.force,
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
    from srcnn_theano.apps.benchmark import output_paths, parse_method, run_benchmark, write_benchmark

    output_paths(args.out, args.force, not args.no_plot)  # before the work: the outputs rule
    methods = [parse_method(m) for m in args.method]
    rows = run_benchmark(args.data, scales=args.scales, authors_dir=args.authors_models,
                         protocols=(args.protocol,), methods=methods, use_lr=args.lr_files,
                         imresize_border=args.imresize_border)
    _, paths = write_benchmark(rows, args.out, args.protocol, args.baseline, args.resamples, args.seed,
                               force=args.force, plot=not args.no_plot)
    with open(paths[0]) as f:
        print(f.read())
    print("wrote " + ", ".join(paths), file=sys.stderr)


def _label_and_file(spec, option):
    """``'LABEL=FILE'`` -> ``(LABEL, FILE)`` for a file that exists."""
    label, sep, path = spec.partition("=")
    if not sep or not label or not path:
        raise SRCNNError(f"{option} wants LABEL=WEIGHTS, not {spec!r}")
    if not os.path.isfile(path):
        raise SRCNNError(f"{option} {label}: no such weights file: {path}")
    return label, path


def _cmd_figure(args):
    from srcnn_theano.apps.figure import save_comparison
    from srcnn_theano.files import check_outputs
    from srcnn_theano.image.io import read_image
    from srcnn_theano.network.inference import Predictor
    from srcnn_theano.network.weights import load

    others = [_label_and_file(spec, "--compare") for spec in args.compare]
    check_outputs([args.output], [args.image, *(path for _, path in others)], args.force)
    weights, scale = _weights_and_scale(args)
    predictors = []
    for label, path in others:
        w = load(path)
        w.check_scale(scale)
        predictors.append((label, Predictor(w)))
    crop = tuple(args.crop) if args.crop else None
    report = save_comparison(args.output, read_image(args.image), scale, Predictor(weights),
                             name=os.path.basename(args.image), crop=crop, replace=args.force,
                             label=args.label, others=predictors)
    print(f"wrote {args.output}: bicubic {report['bicubic_psnr']:.2f} dB, "
          f"{args.label} {report['srcnn_psnr']:.2f} dB", file=sys.stderr)


def _cmd_export(args):
    from srcnn_theano.apps.export import export, format_of

    if args.weights is None and args.scale is None:
        raise SRCNNError("give --scale S (the shipped model for xS) or --weights FILE")
    fmt = format_of(args.output, args.format)   # before reading anything
    weights, scale = _weights_and_scale(args)
    export(weights, args.output, scale, fmt, args.padding,
           inputs=[args.weights] if args.weights else [], force=args.force)
    print(f"wrote {args.output}: SRCNN {weights.name} x{scale}, {fmt}, {args.padding} padding",
          file=sys.stderr)


def _cmd_bench(args):
    from srcnn_theano.apps.speed import run_from_args

    return run_from_args(args)


def _add_weights_options(p):
    p.add_argument("--weights", help="project weights (.npz) or an authors' model (.mat); "
                                     "default: the shipped model for --scale")
    p.add_argument("--scale", type=int, help="upscaling factor (default: the weights' own, or 3)")


def _add_imresize_border_option(p):
    p.add_argument("--imresize-border", choices=("symmetric", "replicate"), default="symmetric",
                   help="MATLAB imresize's border rule for the bicubic images: symmetric (current "
                        "MATLAB, default) or replicate (imresize.m of 2007-2013, with which the "
                        "papers' tables were made)")


def build_parser():
    parser = ArgumentParser(prog="srcnn-theano", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("evaluate", help="PSNR/SSIM of bicubic and SRCNN on ground-truth images "
                                         "(the authors' protocol)")
    _add_weights_options(ev)
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--lr", metavar="LR_DIR",
                    help="take the LR images from these files (paired by name) instead of degrading "
                         "the ground truth: a folder, or a SelfExSR/EDSR set")
    ev.add_argument("--save-dir", metavar="DIR",
                    help="also write the SR images to DIR/SRCNN/<stem>.png and DIR/bicubic/<stem>.png")
    ev.add_argument("--force", action="store_true", help="replace existing images in --save-dir")
    _add_imresize_border_option(ev)
    ev.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR",
                    help="ground-truth images, folders of them, or sets in the SelfExSR "
                         "(image_SRF_<s>/), EDSR (HR/ + LR_bicubic/X<s>/) or BasicSR "
                         "(GTmod12/ + LRbicx<s>/) layout")
    ev.set_defaults(func=_cmd_evaluate)

    from srcnn_theano.evaluation.score import PROTOCOLS
    sc = sub.add_parser("score", help="PSNR/SSIM of any method's SR images against the ground truth "
                                      "(matlab, basicsr or rgb protocol)")
    sc.add_argument("--hr", required=True, metavar="HR_DIR",
                    help="ground truth: a folder of HR images, or a SelfExSR/EDSR set")
    sc.add_argument("--sr", required=True, metavar="SR_DIR", help="the method's results, paired by name")
    sc.add_argument("--scale", type=int, required=True)
    sc.add_argument("--protocol", choices=PROTOCOLS, default="matlab",
                    help="matlab: the authors' code (default); basicsr: BasicSR's float Y; "
                         "rgb: PSNR over RGB")
    sc.add_argument("--shave", type=int, help="pixels dropped at each border (default: the scale)")
    sc.add_argument("--json", action="store_true", help="print one JSON object")
    sc.set_defaults(func=_cmd_score)

    up = sub.add_parser("upscale", help="enlarge real images (SRCNN on Y, bicubic on Cb/Cr/alpha)")
    _add_weights_options(up)
    up.add_argument("input", metavar="INPUT", help="an image file or a folder of images")
    up.add_argument("-o", "--output", required=True,
                    help="output file (format from its extension) or folder")
    up.add_argument("--tile", type=int, help="low-resolution tile side (bounded memory; default 256)")
    up.add_argument("--quality", type=int, default=95,
                    help="JPEG/WebP quality 1..100 (default 95; JPEG with 4:4:4 chroma)")
    up.add_argument("--force", action="store_true",
                    help="replace existing outputs (never an input: that is always refused)")
    up.set_defaults(func=_cmd_upscale)

    bm = sub.add_parser("psnr-table", aliases=["benchmark"],
                        help="the researcher's table: PSNR/SSIM of bicubic, every authors' model, "
                             "ours, other methods, with bootstrap intervals (alias: benchmark)")
    bm.add_argument("--data", required=True, nargs="+",
                    help="sets (a folder of HR images, or the SelfExSR or EDSR layout), or folders "
                         "of sets")
    bm.add_argument("--authors-models", help="the authors' SRCNN_v1/model folder (optional): every "
                                             "<arch>/x<scale>.mat in it is a column")
    bm.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4])
    bm.add_argument("--method", action="append", default=[], metavar="NAME=DIR",
                    help="another method's results, in DIR/<dataset>/x<scale>/ (repeatable)")
    bm.add_argument("--protocol", choices=PROTOCOLS, default="matlab", help="as in score (default matlab)")
    bm.add_argument("--baseline", default="bicubic",
                    help="method the others are compared with (default bicubic)")
    bm.add_argument("--lr-files", action="store_true",
                    help="enlarge the LR images the sets ship instead of degrading the ground truth")
    _add_imresize_border_option(bm)
    bm.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    bm.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    bm.add_argument("--out", default="results",
                    help="folder for benchmark.md, .csv, .tex, .png and benchmark_images.csv")
    bm.add_argument("--no-plot", action="store_true",
                    help="leave out benchmark.png (the forest plot of the PSNR gains and intervals)")
    bm.add_argument("--force", action="store_true", help="replace the tables of an earlier run")
    bm.set_defaults(func=_cmd_benchmark)

    fg = sub.add_parser("figure", help="HR / bicubic / SRCNN comparison PNG: zoomed crops, PSNR under each")
    _add_weights_options(fg)
    fg.add_argument("image", help="a ground-truth (HR) image")
    fg.add_argument("-o", "--output", required=True, help="output PNG")
    fg.add_argument("--crop", type=int, nargs=4, metavar=("TOP", "LEFT", "H", "W"),
                    help="the zoomed region in HR pixels (default: a centred 160-pixel square)")
    fg.add_argument("--label", default="SRCNN", help="caption of the --weights/--scale model "
                                                     "(default SRCNN)")
    fg.add_argument("--compare", action="append", default=[], metavar="LABEL=WEIGHTS",
                    help="another model (.npz or the authors' .mat) shown before it (repeatable)")
    fg.add_argument("--force", action="store_true", help="replace an existing output")
    fg.set_defaults(func=_cmd_figure)

    ex = sub.add_parser("export", help="write a model as ONNX (the network, for onnxruntime) or "
                                       "safetensors (PyTorch Conv2d weights)")
    _add_weights_options(ex)
    ex.add_argument("-o", "--output", required=True, metavar="FILE",
                    help="output file: *.onnx or *.safetensors (or see --format)")
    ex.add_argument("--format", choices=("onnx", "safetensors"),
                    help="default: from the output's extension")
    ex.add_argument("--padding", choices=("replicate", "same"), default="replicate",
                    help="per-layer padding in the ONNX graph, recorded in both formats: replicate "
                         "(the authors' test-time rule, default) or same (zeros)")
    ex.add_argument("--force", action="store_true",
                    help="replace an existing output (never an input: that is always refused)")
    ex.set_defaults(func=_cmd_export)

    from srcnn_theano.apps.speed import add_arguments as _bench_arguments
    bn = sub.add_parser("speed", aliases=["bench"],
                        help="timings: predict on one SIZE x SIZE image and one training step "
                             "(medians; --json prints one JSON line last) (alias: bench)")
    _bench_arguments(bn)
    bn.set_defaults(func=_cmd_bench)
    for command in {id(p): p for p in sub.choices.values()}.values():  # an alias shares its parser
        add_pixel_limit_option(command)
    return parser


def _main(argv):
    args = build_parser().parse_args(argv)
    return args.func(args)


def main(argv=None):
    """``python -m srcnn_theano`` / ``srcnn-theano``: returns the exit status."""
    return run_command(_main, argv)
