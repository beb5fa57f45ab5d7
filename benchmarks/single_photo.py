#!/usr/bin/env python
"""One photo, start to finish: ``python -m srcnn_theano upscale`` against the usual PyTorch script.

Both are whole commands in fresh processes, run in turn (A B B A A B ...,
after one warm-up run each), on the same photo, with the same network and
weights, writing a PNG:

``srcnn``   ``python -m srcnn_theano upscale --scale S photo.png -o out.png --force``
            (the shipped model; Theano's compiled-module cache and this
            project's on-disk caches as a user has them after a first run);
``pytorch`` ``benchmarks/pytorch_photo.py`` (import torch, PIL bicubic, the
            9-1-5 network on Y, PNG), under ``--torch-python``.

Reported: the median wall time of each, the median of the per-pair ratios
srcnn / pytorch (below 1: the project is faster) and each command's peak RSS
(``os.wait4``, as ``/usr/bin/time`` reports it). The photo is scikit-image's
astronaut (512x512) extended by mirroring to 512x600, unless ``--photo`` is given.

    .venv/bin/python benchmarks/single_photo.py --repeats 10 [--torch-python PY]
"""
import argparse
import json
import os
import statistics
import sys
import tempfile

from common import HERE, child_env, run_timed
from compare_pytorch import _torch_python as torch_python


def make_photo(path):
    import numpy as np
    from PIL import Image
    from skimage import data

    a = data.astronaut()
    Image.fromarray(np.concatenate([a, a[::-1][:88]], axis=0)).save(path)   # 512 wide, 600 high
    return path


def _torch_python(requested):
    """The interpreter that runs the PyTorch script (compare_pytorch's rule); exit if none."""
    python = torch_python(requested)
    if python is None:
        raise SystemExit("no torch in this interpreter: give --torch-python")
    return python


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photo", help="input image (default: the 512x600 astronaut)")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10, help="timed runs of each command")
    p.add_argument("--torch-python", help="interpreter with torch (default: this one)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="srcnn_photo_")
    photo = args.photo or make_photo(os.path.join(tmp, "photo.png"))
    cmds = {
        "srcnn": [sys.executable, "-m", "srcnn_theano", "upscale", "--scale", str(args.scale),
                  photo, "-o", os.path.join(tmp, "srcnn.png"), "--force"],
        "pytorch": [_torch_python(args.torch_python), os.path.join(HERE, "pytorch_photo.py"),
                    "--scale", str(args.scale), photo, "-o", os.path.join(tmp, "torch.png")],
    }
    env = child_env()
    res = {k: [] for k in cmds}
    load = os.getloadavg()[0]
    try:
        for k in cmds:
            run_timed(cmds[k], env=env)                                # warm-up
        for r in range(args.repeats):
            for k in (("srcnn", "pytorch") if r % 2 == 0 else ("pytorch", "srcnn")):
                res[k].append(run_timed(cmds[k], env=env))
        sizes = {k: os.path.getsize(c[c.index("-o") + 1]) for k, c in cmds.items()}
    finally:
        for n in os.listdir(tmp):
            os.remove(os.path.join(tmp, n))
        os.rmdir(tmp)
    ratios = [a[0] / b[0] for a, b in zip(res["srcnn"], res["pytorch"])]
    out = {k: {"median_s": statistics.median(t for t, _ in v), "min_s": min(t for t, _ in v),
               "peak_rss_mib": max(m for _, m in v), "png_bytes": sizes[k]}
           for k, v in res.items()}
    out.update(ratio_median_of_pairs=statistics.median(ratios), ratios=ratios,
               repeats=args.repeats, scale=args.scale, load_before=load,
               load_after=os.getloadavg()[0])
    print(f"x{args.scale}, {args.repeats} interleaved runs each, load {load:.2f} before, "
          f"{out['load_after']:.2f} after")
    print("\n| command | median s | min s | peak RSS MiB |\n|---|---:|---:|---:|")
    for k, label in (("srcnn", "`python -m srcnn_theano upscale`"),
                     ("pytorch", "PyTorch script (`benchmarks/pytorch_photo.py`)")):
        print(f"| {label} | {out[k]['median_s']:.2f} | {out[k]['min_s']:.2f} | "
              f"{out[k]['peak_rss_mib']:.0f} |")
    print(f"\nratio srcnn / pytorch, median of pairs: {out['ratio_median_of_pairs']:.2f} "
          f"(pairs {min(ratios):.2f}..{max(ratios):.2f})")
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
