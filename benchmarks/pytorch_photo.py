#!/usr/bin/env python
"""The usual PyTorch way to upscale one photo with SRCNN: the reference for the single-photo benchmark.

What a PyTorch user typically writes, start to finish, in one process::

    import torch; PIL: open, bicubic resize x SCALE, convert to YCbCr;
    the 9-1-5 network (replicate padding, as the authors' test code) on Y;
    Y clipped, back to RGB with PIL, written as PNG.

It loads the same weights file as ``python -m srcnn_theano upscale`` (the
project's ``.npz``: plain numpy arrays, default the shipped model for the
scale), so both run the same network on the same photo. PIL's bicubic and
YCbCr (JPEG's full-range BT.601) are not MATLAB's, so the outputs differ
slightly from the project's; the work done is the same.

PyTorch is not a dependency of the project; run this with any interpreter
that has ``torch``, ``numpy`` and ``pillow``::

    python benchmarks/pytorch_photo.py --scale 2 photo.png -o photo_x2.png

``benchmarks/single_photo.py`` times it against the project's command.
"""
import argparse
import os
import sys

import numpy as np
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
PRETRAINED = os.path.join(os.path.dirname(HERE), "srcnn_theano", "pretrained")


def build_net(weights_path):
    """SRCNN 9-1-5 with the kernels of a project ``.npz`` (correlation kernels = PyTorch's)."""
    arrays = np.load(weights_path, allow_pickle=False)
    convs = []
    for i in (1, 2, 3):
        w = torch.from_numpy(np.asarray(arrays[f"conv{i}.W"], dtype=np.float32))
        o, c, f, _ = w.shape
        conv = torch.nn.Conv2d(c, o, f, padding=f // 2, padding_mode="replicate")
        with torch.no_grad():
            conv.weight.copy_(w)
            conv.bias.copy_(torch.from_numpy(np.asarray(arrays[f"conv{i}.b"], dtype=np.float32)))
        convs.append(conv)
    return torch.nn.Sequential(convs[0], torch.nn.ReLU(), convs[1], torch.nn.ReLU(), convs[2]).eval()


def upscale(src, dst, scale, weights_path):
    img = Image.open(src).convert("RGB")
    up = img.resize((img.width * scale, img.height * scale), Image.BICUBIC)
    ycbcr = np.asarray(up.convert("YCbCr"), dtype=np.float32) / 255.0
    net = build_net(weights_path)
    with torch.inference_mode():
        y = net(torch.from_numpy(np.ascontiguousarray(ycbcr[..., 0]))[None, None])[0, 0].numpy()
    ycbcr = ycbcr.copy()
    ycbcr[..., 0] = np.clip(y, 0.0, 1.0)
    out = Image.fromarray(np.round(ycbcr * 255.0).astype(np.uint8), "YCbCr").convert("RGB")
    out.save(dst)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--weights", help="project .npz (default: the shipped model for --scale)")
    args = p.parse_args(argv)
    upscale(args.input, args.output, args.scale,
            args.weights or os.path.join(PRETRAINED, f"x{args.scale}.npz"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
