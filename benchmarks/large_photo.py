#!/usr/bin/env python
"""A 12-megapixel photo x2, end to end, against the network's own time for the same pixels.

Two fresh processes, run in turn (A B B A ..., after one warm-up each):

``command``  ``python -m srcnn_theano upscale --scale 2 photo4000x3000.jpg -o out.png --force``:
             wall time of the whole command (start-up, JPEG decode, colour
             conversion, bicubic, the network on Y, PNG encode, atomic write)
             and its peak RSS (``os.wait4``, what ``/usr/bin/time -v`` reports);
``network``  :class:`srcnn_theano.network.inference.Predictor` (its default
             512-pixel tiles) on one 8000x6000 float32 plane, the Y channel of
             the output: the time of that call alone, in a process that has
             already built the predictor.

Reported: medians, the median of the per-pair ratios command / network (the
issue's target: at most 1.3) and the command's peak RSS (target: at most 600
MiB). ``--breakdown`` adds one in-process run of the command's steps, timed
separately (read, upscale, write), and the PNG's size.

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

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

_NETWORK = r"""
import json, sys, time
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
from srcnn_theano.apps.upscale import upscale_image
from srcnn_theano.image.io import read_photo, write_image
from srcnn_theano.network.inference import Predictor
from srcnn_theano.network.weights import load_default
p = Predictor(load_default(2), tile=None)
t1 = time.perf_counter()
image, meta = read_photo(sys.argv[1])
t2 = time.perf_counter()
out = upscale_image(image, 2, p)
t3 = time.perf_counter()
write_image(sys.argv[2], out, meta)
t4 = time.perf_counter()
print(json.dumps({"start_s": t1 - t0, "read_s": t2 - t1, "upscale_s": t3 - t2,
                  "write_s": t4 - t3, "png_bytes": os.path.getsize(sys.argv[2])}))
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
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmds = {"command": [sys.executable, "-m", "srcnn_theano", "upscale", "--scale", "2", photo,
                        "-o", out_png, "--force"],
            "network": [sys.executable, "-c", _NETWORK, "6000", "8000"]}
    res = {k: [] for k in cmds}
    load = os.getloadavg()[0]
    try:
        for k in cmds:
            run(cmds[k], env)
        for r in range(args.repeats):
            for k in (("command", "network") if r % 2 == 0 else ("network", "command")):
                res[k].append(run(cmds[k], env))
        breakdown = (run([sys.executable, "-c", _BREAKDOWN, photo, out_png], env)
                     if args.breakdown else None)
        png_bytes = os.path.getsize(out_png)
    finally:
        for n in os.listdir(tmp):
            os.remove(os.path.join(tmp, n))
        os.rmdir(tmp)
    ratios = [c["wall_s"] / n["network_s"] for c, n in zip(res["command"], res["network"])]
    result = {"command_s": statistics.median(c["wall_s"] for c in res["command"]),
              "network_s": statistics.median(n["network_s"] for n in res["network"]),
              "ratio_median_of_pairs": statistics.median(ratios), "ratios": ratios,
              "command_peak_rss_mib": max(c["peak_rss_mib"] for c in res["command"]),
              "png_bytes": png_bytes, "breakdown": breakdown, "repeats": args.repeats,
              "load_before": load, "load_after": os.getloadavg()[0]}
    print(f"4000x3000 JPEG x2 -> 8000x6000 PNG, {args.repeats} interleaved runs each, load "
          f"{load:.2f} before, {result['load_after']:.2f} after")
    print("\n| what | median s | ratio to the network | peak RSS MiB |\n|---|---:|---:|---:|")
    print(f"| whole `upscale` command | {result['command_s']:.1f} | "
          f"{result['ratio_median_of_pairs']:.2f} | {result['command_peak_rss_mib']:.0f} |")
    print(f"| network alone (Predictor on 8000x6000) | {result['network_s']:.1f} | 1.00 | |")
    print(f"\nPNG: {png_bytes / 1e6:.1f} MB")
    if breakdown:
        print("breakdown: " + ", ".join(f"{k} {v:.2f}" for k, v in breakdown.items()
                                        if k.endswith("_s")))
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
