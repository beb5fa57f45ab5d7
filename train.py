#!/usr/bin/env python
"""Train SRCNN (a thin command line over ``srcnn_theano.training``).

With no arguments: a short demo (about 2-3 minutes on two cores) that
trains the ``fast`` recipe (He init + Adam, not the paper's) on
photographs bundled with scikit-image, x3, then compares with bicubic on
held-out photographs and writes ``runs/demo/example.png``::

    python train.py

The paper's setup (preset ``paper``, the default whenever data are given)::

    python train.py --images ../shared/data/T91 --val ../shared/data/Set5
    python train.py --train train_x3.h5 --val ../shared/data/Set5 --out runs/x3
    python train.py --resume runs/x3                # after Ctrl-C or to add --epochs

Errors are printed as one ``error: ...`` line on stderr with exit status 2
(3 when the training diverges, 130 when interrupted). One training at a
time holds a run folder: a second one there (new or ``--resume``) stops at
once with status 2, naming the folder and the pid of the one that holds it.
"""
import argparse
import os
import shlex
import sys
import time

if __package__ in (None, ""):
    try:
        import srcnn_theano  # noqa: F401  (installed, or run from the repo with it on the path)
    except ImportError:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from srcnn_theano.commandline import (ArgumentParser, add_pixel_limit_option, exit_process,
                                      run_command)  # noqa: E402
from srcnn_theano.errors import SRCNNError  # noqa: E402

RECIPE = ("preset", "arch", "filters", "padding", "init", "init_std", "optimizer", "lr", "momentum",
          "lr_multipliers", "loss", "schedule", "batch_size", "seed", "scale", "val", "out",
          "input_size", "stride", "force", "init_weights")


def build_parser():
    from srcnn_theano.network.model import ARCHITECTURES, PADDINGS, parse_architecture, parse_filters
    from srcnn_theano.training.config import LOSSES, MULTIPLIERS, OPTIMIZERS, PRESETS, SCHEDULES

    presets = "; ".join(f"{name}: " + ", ".join(f"{k} {'he' if v is None else v}" for k, v in values.items())
                        for name, values in PRESETS.items())
    p = ArgumentParser(description=__doc__.split("\n\n")[0],
                epilog=f"Presets ({presets}). Any recipe option overrides the preset's value.")
    data = p.add_argument_group("data")
    src = data.add_mutually_exclusive_group()
    src.add_argument("--train", metavar="FILE.h5", help="patch file from data_prep/generate_h5.py")
    src.add_argument("--images", metavar="DIR",
                     help="training images; the patch file is made in the run folder")
    src.add_argument("--resume", metavar="RUN_DIR", help="continue the run saved in RUN_DIR")
    data.add_argument("--val", metavar="DIR", help="whole validation images (default with --images: "
                      "a Set5 folder beside the training folder)")
    data.add_argument("--scale", type=int, help="upscaling factor (default: the patch file's; 3 "
                      "with --images)")
    data.add_argument("--out", metavar="DIR", help="run folder (default runs/<preset>_<arch>_x<scale>; "
                      "runs/demo for the demo)")
    data.add_argument("--input-size", type=int, help="with --images: input patch side "
                      "(default 33; labels get the model's output size)")
    data.add_argument("--stride", type=int, help="with --images: patch stride (default 14)")
    rec = p.add_argument_group("recipe (default: the preset's value)")
    rec.add_argument("--preset", choices=tuple(PRESETS), help="default: paper (fast for the demo)")
    def arch_type(text):
        try:
            parse_architecture(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return text

    def filters_type(text):
        try:
            return parse_filters(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    rec.add_argument("--arch", type=arch_type, metavar="F1-F2-F3",
                     help=f"odd kernel sizes: the paper's {', '.join(ARCHITECTURES)} or any other "
                          "(the TPAMI ablations, e.g. 11-1-7); default 9-1-5")
    rec.add_argument("--filters", type=filters_type, metavar="N1,N2",
                     help="filters of the first two layers (default 64,32; the ablations: 128,64, 32,16)")
    rec.add_argument("--padding", choices=PADDINGS, help="of the training convolutions")
    rec.add_argument("--init", choices=("gaussian", "he"), help="weight initialisation")
    rec.add_argument("--init-std", type=float, help="std of the Gaussian init (default 0.001, the paper's)")
    rec.add_argument("--optimizer", choices=OPTIMIZERS)
    rec.add_argument("--lr", type=float, help="base learning rate")
    rec.add_argument("--momentum", type=float, help="SGD momentum")
    rec.add_argument("--lr-multipliers", choices=MULTIPLIERS, help="SGD per-layer multipliers")
    rec.add_argument("--loss", choices=LOSSES, help="caffe: sum((F-y)^2)/(2N), the paper's; mse: per pixel")
    rec.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule over all steps")
    rec.add_argument("--epochs", type=int, help="total epochs (with --resume: extend the run)")
    rec.add_argument("--batch-size", type=int)
    rec.add_argument("--seed", type=int, help="initialisation and minibatch order (default 0)")
    rec.add_argument("--init-weights", metavar="W.npz",
                     help="start from these weights (fine-tuning, e.g. x2 from the x3 model)")
    run = p.add_argument_group("run")
    run.add_argument("--force", action="store_true", help="start over in a run folder holding a run")
    run.add_argument("--memory-mb", type=int, default=1024,
                     help="patches held in memory; larger files are streamed (default 1024)")
    run.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    add_pixel_limit_option(run)
    return p


def _given(args, names):
    return [n for n in names if getattr(args, n) not in (None, False)]


def _config(args, scale):
    """The preset (paper unless --preset) with the options given on the command line."""
    from srcnn_theano.training import TrainConfig

    if args.init == "he" and args.init_std is not None:
        raise SRCNNError("--init-std is the std of --init gaussian; it does not apply to --init he")
    config = TrainConfig.from_preset(
        args.preset or "paper", arch=args.arch, filters=args.filters, padding=args.padding, optimizer=args.optimizer,
        learning_rate=args.lr, momentum=args.momentum, lr_multipliers=args.lr_multipliers,
        loss=args.loss, schedule=args.schedule, epochs=args.epochs, batch_size=args.batch_size,
        seed=args.seed, scale=scale)
    if args.init == "he":
        config.init_std = None
    elif args.init == "gaussian" or args.init_std is not None:
        config.init_std = args.init_std or config.init_std or 0.001
    config.check()
    return config


def _h5_scale(path):
    from srcnn_theano.patches.store import open_h5

    with open_h5(path, check_values=False) as f:
        scale = f.attrs.get("scale")
    if scale is None:
        raise SRCNNError(f"--scale is required: {path} does not say its scale")
    return int(scale)


def _run_train(args, command, say):
    from srcnn_theano import training

    if args.train:
        if args.input_size or args.stride:
            raise SRCNNError("--input-size and --stride apply to --images (the patch file is already cut)")
        config = _config(args, args.scale if args.scale is not None else _h5_scale(args.train))
    else:
        config = _config(args, args.scale if args.scale is not None else 3)
    val = args.val
    if val is None and args.images:
        val = os.path.join(os.path.dirname(os.path.abspath(args.images)), "Set5")
        if not os.path.isdir(val):
            raise SRCNNError(f"--val DIR is required (no Set5 folder beside the training images: {val})")
    if val is None:
        raise SRCNNError("--val DIR is required (whole validation images, e.g. Set5)")
    out = args.out or os.path.join("runs", f"{args.preset or 'paper'}_{config.arch}_x{config.scale}")
    say(f"training SRCNN, preset {args.preset or 'paper'}"
        f"{' (the paper recipe)' if (args.preset or 'paper') == 'paper' else ''}:\n"
        f"{config.describe(args.preset or 'paper')}\n"
        f"  data           = {args.train or args.images}\n  validation     = {val}\n  run folder     = {out}")
    with training.hold_run(out):   # before anything is written there, until the process ends
        h5 = args.train
        if args.images:
            training.clear_run(out, args.force)  # before cutting patches into a folder holding a run
            h5 = training.prepare_h5(args.images, out, config, input_size=args.input_size or 33,
                                     stride=args.stride or 14, force=args.force,
                                     progress=not args.quiet)
        return training.train(config, h5, val, out, force=args.force, command=command,
                              progress=not args.quiet, memory_budget=args.memory_mb << 20,
                              init_weights=args.init_weights)


def _run_demo(args, command, say):
    from srcnn_theano.apps import demo
    from srcnn_theano.training.config import PRESETS
    from srcnn_theano.evaluation.datasets import SKIMAGE_HELD_OUT, SKIMAGE_TRAIN
    from srcnn_theano.evaluation.protocol import format_table

    out = args.out or os.path.join("runs", "demo")
    epochs = args.epochs or demo.DEMO_EPOCHS
    say(f"demo: SRCNN {PRESETS['fast']['arch']} x{demo.DEMO_SCALE}, {epochs} epochs of the "
        "'fast' recipe (He init + Adam + cosine, MSE: quicker on a CPU than the paper's SGD, "
        "which is --preset paper)\n"
        f"  training on scikit-image photographs {', '.join(SKIMAGE_TRAIN)}\n"
        f"  held out: {', '.join(SKIMAGE_HELD_OUT)}\n  run folder: {out}")
    start = time.time()
    result, report = demo.demo(out, epochs=epochs, command=command, progress=not args.quiet)
    say(format_table(report))
    gain = report["mean"]["srcnn_psnr"] - report["mean"]["bicubic_psnr"]
    say(f"SRCNN {'beats' if gain > 0 else 'does NOT beat'} bicubic on the held-out photographs by "
        f"{gain:+.2f} dB (best epoch {result.best_epoch}); {time.time() - start:.0f} s in all\n"
        f"example: {os.path.join(out, 'example.png')}  weights: {os.path.join(out, 'best.npz')}  "
        f"curves: {os.path.join(out, 'curves.png')}")
    return result


def _main(argv):
    args = build_parser().parse_args(argv)
    command = shlex.join(["python", "train.py"] + list(sys.argv[1:] if argv is None else argv))
    say = print
    from srcnn_theano import training

    if args.resume:
        extra = _given(args, RECIPE)
        if extra:
            raise SRCNNError(f"--{extra[0].replace('_', '-')} cannot be used with --resume "
                             "(the run's settings are in its checkpoint; only --epochs may change)")
        say(f"resuming {args.resume}")
        result = training.resume(args.resume, epochs=args.epochs, command=command,
                                 progress=not args.quiet, memory_budget=args.memory_mb << 20)
    elif args.train or args.images:
        result = _run_train(args, command, say)
    else:
        extra = [n for n in _given(args, RECIPE) if n not in ("out", "force")]
        if extra:
            raise SRCNNError(f"--{extra[0].replace('_', '-')} needs --train or --images "
                             "(with no data, train.py runs the demo: only --out, --epochs, --quiet)")
        _run_demo(args, command, say)
        return 0
    say(f"done: best validation PSNR {result.best_psnr:.2f} dB at epoch {result.best_epoch} "
        f"(bicubic {result.bicubic_psnr:.2f} dB); weights {os.path.join(result.run_dir, 'best.npz')}")
    return 0


def main(argv=None):
    """Exit status 0, 2 (bad input), 3 (diverged) or 130 (interrupted)."""
    return run_command(_main, argv)


if __name__ == "__main__":
    exit_process(main())
