#!/usr/bin/env python
"""Cold and warm start: a fresh process that predicts once, with and without
Theano's compiled-module cache.

Theano compiles each op's C code once and keeps the modules in its
compiledir (``~/.theano/compiledir_*``); a later process loads them instead
of compiling. The graph has no fixed image size, so one cache serves every
image size and tile. This script runs, in new processes::

    python -c 'from srcnn_theano.network.inference import Predictor; ...; predict once'

``cold``: with an empty ``base_compiledir`` (a first run on a fresh machine);
``warm``: the same command again on that now-filled directory (what every
later ``upscale``/``evaluate`` call pays). With ``--upscale`` it also runs
the ``upscale`` command twice (cold, then warm) on a small image.

    .venv/bin/python benchmarks/startup.py [--warm-runs 3] [--upscale]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from common import REPO, child_env

PREDICT_ONCE = r"""
import time
t0 = time.perf_counter()
import json
import numpy as np
from srcnn_theano.network.inference import Predictor
from srcnn_theano.network.model import ARCHITECTURES, SRCNN
from srcnn_theano.network.weights import Weights
t1 = time.perf_counter()
arch = dict(ARCHITECTURES['9-1-5'], channels=1)
p = Predictor(Weights(SRCNN(**arch, seed=0).get_weights(), arch))
t2 = time.perf_counter()
y = p(np.random.RandomState(0).rand(96, 80).astype(np.float32))
t3 = time.perf_counter()
print(json.dumps({'import_s': t1 - t0, 'compile_or_load_s': t2 - t1, 'first_call_s': t3 - t2}))
"""


def run(cmd, env):
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-3000:])
    lines = [ln for ln in res.stdout.strip().splitlines() if ln.startswith("{")]
    inner = json.loads(lines[-1]) if lines else {}
    return dict(inner, wall_s=wall)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--warm-runs", type=int, default=3)
    p.add_argument("--upscale", action="store_true", help="also time the upscale command")
    p.add_argument("--keep", action="store_true", help="keep the temporary compiledir")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="srcnn_startup_")
    env = child_env()
    flags = [f for f in (env.get("THEANO_FLAGS"),) if f]
    env["THEANO_FLAGS"] = ",".join(flags + [f"base_compiledir={os.path.join(tmp, 'theano')}"])
    results = {}
    try:
        cmd = [sys.executable, "-c", PREDICT_ONCE]
        results["predict_cold"] = run(cmd, env)
        warm = [run(cmd, env) for _ in range(args.warm_runs)]
        results["predict_warm"] = {k: statistics.median(r[k] for r in warm) for k in warm[0]}
        if args.upscale:
            import numpy as np
            from PIL import Image

            from srcnn_theano.network.weights import Weights, save  # numpy only, no Theano

            arch = dict(f1=9, f2=1, f3=5, n1=64, n2=32, channels=1)
            rng = np.random.RandomState(0)
            shapes = {"conv1.W": (64, 1, 9, 9), "conv1.b": (64,), "conv2.W": (32, 64, 1, 1),
                      "conv2.b": (32,), "conv3.W": (1, 32, 5, 5), "conv3.b": (1,)}
            arrays = {k: (rng.randn(*v) * 0.01).astype("float32") for k, v in shapes.items()}
            wpath = os.path.join(tmp, "w.npz")
            save(wpath, Weights(arrays, arch, scale=3))
            src = os.path.join(tmp, "in.png")
            Image.fromarray((np.random.RandomState(0).rand(60, 80, 3) * 255).astype("uint8")).save(src)
            up = [sys.executable, "-m", "srcnn_theano", "upscale", src, "-o",
                  os.path.join(tmp, "out.png"), "--weights", wpath, "--scale", "3", "--force"]
            shutil.rmtree(os.path.join(tmp, "theano"), ignore_errors=True)
            results["upscale_cold"] = run(up, env)
            results["upscale_warm"] = run(up, env)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print("| start | wall s | import s | build predict s | first call s |")
    print("|---|---:|---:|---:|---:|")
    for k, r in results.items():
        print(f"| {k} | {r['wall_s']:.1f} | {r.get('import_s', float('nan')):.2f} | "
              f"{r.get('compile_or_load_s', float('nan')):.2f} | "
              f"{r.get('first_call_s', float('nan')):.2f} |")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
