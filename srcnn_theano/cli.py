"""Command line: ``python -m srcnn_theano`` / ``srcnn-theano``.

A thin layer over the library: argument parsing, then one library call per
sub-command. User errors (:class:`SRCNNError`) print ``error: ...`` on one
line and exit with status 2, never a traceback.
"""
import argparse
import json
import sys

from .errors import SRCNNError


def _cmd_evaluate(args):
    from .evaluate import evaluate_paths, format_table
    from .image_io import expand_inputs
    from .weights import load

    weights = load(args.weights)
    scale = args.scale if args.scale is not None else weights.scale
    if scale is None:
        raise SRCNNError("--scale is required: the weights file does not say its scale")
    report = evaluate_paths(expand_inputs(args.inputs), scale, weights, progress=not args.json)
    print(json.dumps(report) if args.json else format_table(report))


def build_parser():
    parser = argparse.ArgumentParser(prog="srcnn-theano", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("evaluate", help="PSNR/SSIM of bicubic and SRCNN on ground-truth images "
                                         "(the authors' protocol)")
    ev.add_argument("--weights", required=True,
                    help="project weights (.npz) or an authors' model (.mat)")
    ev.add_argument("--scale", type=int, help="upscaling factor (default: the weights' own)")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    ev.set_defaults(func=_cmd_evaluate)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except SRCNNError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
