#!/usr/bin/env python
"""Time and peak memory of SRCNN on a 4000x3000 photo (bounded by tiling).

Each measurement runs in a fresh process (peak RSS is per process):

``predict``  :class:`srcnn_theano.network.inference.Predictor` on one 4000x3000
             float32 plane (the Y channel of a 12-megapixel photo), tiled;
``upscale``  :func:`srcnn_theano.apps.upscale.upscale_image` on a 4000x3000 RGB
             uint8 image, x``--scale`` (SRCNN on Y, bicubic Cb/Cr).

Reported: seconds for the run, the process's RSS before it (imports,
compiled functions, input) and its peak RSS during the run (``VmHWM`` after
resetting it through ``/proc/self/clear_refs``; else ``ru_maxrss``), in MiB. The
input is a smooth synthetic image (content does not change the speed).

    .venv/bin/python benchmarks/big_image.py [--tiles 256 512 none] [--upscale --scale 2]
"""
import argparse
import json
import subprocess
import sys

from common import REPO, child_env

_CHILD = r"""
import json, resource, sys, time
import numpy as np
cfg = json.loads(sys.argv[1])

def rss_mib(key='VmRSS:'):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    return float('nan')

def reset_peak():
    # Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS.
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False

from srcnn_theano.network.inference import Predictor
from srcnn_theano.network.model import ARCHITECTURES, SRCNN
from srcnn_theano.network.weights import Weights
arch = dict(ARCHITECTURES['9-1-5'], channels=1)
w = Weights(SRCNN(**arch, init_std=None, seed=0).get_weights(), arch, scale=cfg['scale'])
h, wd = cfg['height'], cfg['width']
yy, xx = np.mgrid[0:h, 0:wd].astype(np.float32)
plane = (0.5 + 0.25 * np.sin(yy / 37.0) * np.cos(xx / 53.0)).astype(np.float32)
del yy, xx
t0 = time.perf_counter()
if cfg['mode'] == 'predict':
    p = Predictor(w, tile=cfg['tile'])
    p(plane[:40, :40])
    compile_s = time.perf_counter() - t0
    base = rss_mib()
    reset = reset_peak()
    t0 = time.perf_counter()
    out = p(plane)
    run_s = time.perf_counter() - t0
    assert out.shape == plane.shape and np.isfinite(out).all()
else:
    from srcnn_theano.apps.upscale import upscale_image
    rgb = (np.stack([plane, plane[::-1], plane[:, ::-1]], axis=2) * 255).astype(np.uint8)
    del plane
    p = Predictor(w, tile=None)
    upscale_image(rgb[:40, :40], cfg['scale'], p, tile=cfg['tile'])
    compile_s = time.perf_counter() - t0
    base = rss_mib()
    reset = reset_peak()
    t0 = time.perf_counter()
    out = upscale_image(rgb, cfg['scale'], p, tile=cfg['tile'])
    run_s = time.perf_counter() - t0
    assert out.shape == (h * cfg['scale'], wd * cfg['scale'], 3)
peak = rss_mib('VmHWM:') if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(dict(cfg, run_s=round(run_s, 2), compile_s=round(compile_s, 2),
                      rss_before_mib=round(base), peak_rss_mib=round(peak),
                      peak_is_of_the_run=reset,
                      megapixels_out=out.shape[0] * out.shape[1] / 1e6)))
"""


def measure(cfg, python=sys.executable):
    res = subprocess.run([python, "-c", _CHILD, json.dumps(cfg)], env=child_env(), cwd=REPO,
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=4000)
    p.add_argument("--height", type=int, default=3000)
    p.add_argument("--tiles", nargs="+", default=["256"],
                   help="Predictor tile sides to try ('none': the whole image at once)")
    p.add_argument("--upscale", action="store_true",
                   help="also time the upscale pipeline on an RGB image of that size")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--upscale-tile", type=int, default=128, help="upscale's LR tile side")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows = []
    for t in args.tiles:
        tile = None if t.lower() == "none" else int(t)
        rows.append(measure(dict(mode="predict", width=args.width, height=args.height,
                                 tile=tile, scale=args.scale)))
        print(rows[-1], file=sys.stderr)
    if args.upscale:
        rows.append(measure(dict(mode="upscale", width=args.width, height=args.height,
                                 tile=args.upscale_tile, scale=args.scale)))
        print(rows[-1], file=sys.stderr)
    print("| what | tile | seconds | RSS before (MiB) | peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        what = (f"predict {r['width']}x{r['height']}" if r["mode"] == "predict" else
                f"upscale {r['width']}x{r['height']} RGB x{r['scale']}")
        print(f"| {what} | {r['tile']} | {r['run_s']} | {r['rss_before_mib']} | "
              f"{r['peak_rss_mib']} |")
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
