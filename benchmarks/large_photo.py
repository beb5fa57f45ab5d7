#!/usr/bin/env python
"""A 12-megapixel photo x2, end to end, against the network's own time for the same pixels.

Three fresh processes, run in turn (A B C C B A ..., after one warm-up each):

``command``  ``python -m srcnn_theano upscale --scale 2 photo4000x3000.jpg -o out.png --force``:
             wall time of the whole command (start-up, JPEG decode, colour
             conversion, bicubic, the network on Y, PNG encode, atomic write)
             and its peak RSS (``os.wait4``, what ``/usr/bin/time -v`` reports);
``network``  :class:`srcnn_theano.network.inference.Predictor` (its default
             512-pixel tiles) on one 8000x6000 float32 plane, the Y channel of
             the output: the time of that call alone, in a process that has
             already built the predictor.

``network_plain``  the same, in a process that has not imported
             :mod:`srcnn_theano.apps.upscale` (which shortens the BLAS's and
             OpenMP's idle-thread spin, :func:`srcnn_theano.cores.short_idle_spin`):
             the network with the libraries' defaults.

Reported: medians, the median of the per-run ratios command / network (the
network's time: the faster of its two settings in that run; the
target: at most 1.3) and the command's peak RSS (target: at most 600 MiB).
``--breakdown`` adds one in-process run of the command's steps (start-up,
read, the bands computed and handed to the PNG writer, the network's share
of that, the PNG's tail after the last band) and the PNG's size.

The photo is a 4000x3000 mosaic of scikit-image's bundled photographs
(astronaut, chelsea, coffee, rocket, Hubble deep field, IHC, retina), some
mirrored, saved as a JPEG at quality 92: real photographic content, so the PNG
encoder sees what it would see on a photo.

    .venv/bin/python benchmarks/large_photo.py --repeats 3 [--breakdown]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from common import REPO, child_env

_NETWORK = r"""
import json, sys, time
if sys.argv[3] == "upscale":   # the OpenBLAS setting the command runs with
    import srcnn_theano.apps.upscale
import numpy as np
from srcnn_theano.network.inference import Predictor
from srcnn_theano.network.weights import load_default
h, w = int(sys.argv[1]), int(sys.argv[2])
p = Predictor(load_default(2))
plane = np.random.default_rng(0).random((h, w), dtype=np.float32)
p(plane[:64, :64])
t0 = time.perf_counter()
p(plane)
print(json.dumps({"network_s": time.perf_counter() - t0}))
"""

_BREAKDOWN = r"""
import json, os, sys, time
t0 = time.perf_counter()
from srcnn_theano.apps.upscale import upscale_bands
from srcnn_theano.image.io import image_writer, read_photo
from srcnn_theano.network.inference import Predictor
from srcnn_theano.network.weights import load_default
p = Predictor(load_default(2), tile=None)
net = [0.0]
class Timed:   # the predictor, its calls timed
    model = p.model
    def __call__(self, x):
        t = time.perf_counter()
        y = p(x)
        net[0] += time.perf_counter() - t
        return y
t1 = time.perf_counter()
image, meta = read_photo(sys.argv[1])
t2 = time.perf_counter()
shape = (image.shape[0] * 2, image.shape[1] * 2, 3)
with image_writer(sys.argv[2], shape, image.dtype, meta) as write:
    for band in upscale_bands(image, 2, Timed()):
        write(band)
    t3 = time.perf_counter()
t4 = time.perf_counter()
print(json.dumps({"start_s": t1 - t0, "read_s": t2 - t1, "bands_s": t3 - t2,
                  "network_in_bands_s": net[0], "png_after_last_band_s": t4 - t3,
                  "png_bytes": os.path.getsize(sys.argv[2])}))
"""


def make_photo(path, width=4000, height=3000):
    import numpy as np
    import skimage.data as d
    from PIL import Image

    tiles = []
    for name in ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
                 "immunohistochemistry", "retina"):
        a = getattr(d, name)()
        tiles.append(np.stack([a] * 3, 2) if a.ndim == 2 else a[..., :3])
    out = np.zeros((height, width, 3), np.uint8)
    y = i = 0
    while y < height:
        x = row = 0
        while x < width:
            t = tiles[i % len(tiles)]
            i += 1
            t = t[:, ::-1] if i % 2 else t
            h, w = min(t.shape[0], height - y), min(t.shape[1], width - x)
            out[y:y + h, x:x + w] = t[:h, :w]
            x, row = x + w, max(row, h)
        y += row
    Image.fromarray(out).save(path, quality=92)
    return path


def run(cmd, env):
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode(errors="replace")
    proc.stdout.close()
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed: {err[-2000:]}")
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    return dict(json.loads(lines[-1]) if lines else {}, wall_s=wall,
                peak_rss_mib=usage.ru_maxrss / 1024)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--breakdown", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="srcnn_large_")
    photo = make_photo(os.path.join(tmp, "photo4000x3000.jpg"))
    out_png = os.path.join(tmp, "out.png")
    env = child_env()
    cmds = {"command": [sys.executable, "-m", "srcnn_theano", "upscale", "--scale", "2", photo,
                        "-o", out_png, "--force"],
            "network": [sys.executable, "-c", _NETWORK, "6000", "8000", "upscale"],
            "network_plain": [sys.executable, "-c", _NETWORK, "6000", "8000", "plain"]}
    res = {k: [] for k in cmds}
    load = os.getloadavg()[0]
    try:
        for k in cmds:
            run(cmds[k], env)
        for r in range(args.repeats):
            order = ("command", "network", "network_plain")
            for k in (order if r % 2 == 0 else order[::-1]):
                res[k].append(run(cmds[k], env))
        breakdown = (run([sys.executable, "-c", _BREAKDOWN, photo, out_png], env)
                     if args.breakdown else None)
        png_bytes = os.path.getsize(out_png)
    finally:
        for n in os.listdir(tmp):
            os.remove(os.path.join(tmp, n))
        os.rmdir(tmp)
    # The network's own time: the faster of its two OpenBLAS settings, run by run.
    nets = [min(a["network_s"], b["network_s"])
            for a, b in zip(res["network"], res["network_plain"])]
    ratios = [c["wall_s"] / n for c, n in zip(res["command"], nets)]
    result = {"command_s": statistics.median(c["wall_s"] for c in res["command"]),
              "network_s": statistics.median(n["network_s"] for n in res["network"]),
              "network_plain_s": statistics.median(n["network_s"] for n in res["network_plain"]),
              "ratio_median_of_pairs": statistics.median(ratios), "ratios": ratios,
              "command_peak_rss_mib": max(c["peak_rss_mib"] for c in res["command"]),
              "png_bytes": png_bytes, "breakdown": breakdown, "repeats": args.repeats,
              "load_before": load, "load_after": os.getloadavg()[0]}
    print(f"4000x3000 JPEG x2 -> 8000x6000 PNG, {args.repeats} interleaved runs each, load "
          f"{load:.2f} before, {result['load_after']:.2f} after")
    print("\n| what | median s | ratio to the network | peak RSS MiB |\n|---|---:|---:|---:|")
    print(f"| whole `upscale` command | {result['command_s']:.1f} | "
          f"{result['ratio_median_of_pairs']:.2f} | {result['command_peak_rss_mib']:.0f} |")
    print(f"| network alone (Predictor on 8000x6000), as `upscale` sets OpenBLAS | "
          f"{result['network_s']:.1f} | | |")
    print(f"| network alone, OpenBLAS's defaults | {result['network_plain_s']:.1f} | | |")
    print(f"\nPNG: {png_bytes / 1e6:.1f} MB")
    if breakdown:
        print("breakdown: " + ", ".join(f"{k} {v:.2f}" for k, v in breakdown.items()
                                        if k.endswith("_s")))
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
