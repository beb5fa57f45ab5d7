#!/usr/bin/env python
"""Parallel patch generation: ``data_prep/generate_h5.py --workers N`` on many images.

Two measurements, each ``generate_h5`` run in a fresh process:

``course``
    One large simulated job (default 20,000 synthetic photos): the run's
    progress is sampled every ``--sample`` seconds (images done, from the
    writer's ``monitor`` callback) together with the resident memory of the
    whole process tree (the writer and its workers, ``psutil``), so that
    throughput and peak memory can be read over the course of the job, plus
    the shuffle at the end. Prints a table and the extrapolation of the
    measured throughput to ImageNet's 395,909 training images.
``pairs``
    ``--workers 1`` against ``--workers N`` on a smaller set (default 2,000
    of the same photos), interleaved (1, N, N, 1, ...), each run after an
    ``os.sync()`` (untimed), whole-command wall
    time from ``/usr/bin/time``-style accounting (``os.wait4``), and the
    ratio per pair; and a check that both wrote the same datasets and
    attributes.

The synthetic photos are JPEGs (quality 90) of ``--size`` pixels with photo-like
content (smooth gradients, edges, texture and noise), made once into
``--dir`` (kept between runs). Patch geometry is the paper's (33/21, stride
14) unless ``--stride`` says otherwise; the large job's default stride 33
keeps its output to a few GB.

    .venv/bin/python benchmarks/patch_generation.py pairs --images 2000 --workers 2
    .venv/bin/python benchmarks/patch_generation.py course --images 20000 --workers 2
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from common import REPO, child_env, run_timed

IMAGENET_IMAGES = 395_909   # the paper's ImageNet training set (ILSVRC 2013 detection train)


def make_photos(folder, count, size, seed=0):
    """``count`` synthetic RGB JPEGs of ``size`` (w, h) in ``folder`` (reused if present)."""
    import numpy as np
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    have = {n for n in os.listdir(folder) if n.endswith(".jpg")}
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(count):
        name = f"img{i:06d}.jpg"
        if name in have:
            continue
        rng = np.random.default_rng(seed + i)
        a, b, c = rng.uniform(0.01, 0.08, 3)
        base = 0.5 + 0.3 * np.sin(a * xx + b * yy + c * i)
        edges = (np.sin(rng.uniform(0.02, 0.2) * (xx * rng.uniform(-1, 1) + yy)) > 0) * 0.25
        img = np.stack([base + edges * k for k in rng.uniform(-1, 1, 3)], axis=2)
        img += rng.normal(0, 0.04, img.shape)
        img = (np.clip(img, 0, 1) * 255).astype(np.uint8)
        Image.fromarray(img).save(os.path.join(folder, name), quality=90)
    return folder


def _subset(folder, count):
    """A folder of symbolic links to the first ``count`` photos (generate_h5 takes a folder)."""
    names = sorted(n for n in os.listdir(folder) if n.endswith(".jpg"))[:count]
    sub = os.path.join(folder, f"first{count}")
    os.makedirs(sub, exist_ok=True)
    for n in names:
        link = os.path.join(sub, n)
        if not os.path.lexists(link):
            os.symlink(os.path.join("..", n), link)
    return sub


def _cli(images, output, workers, stride, scale):
    return [sys.executable, os.path.join(REPO, "data_prep", "generate_h5.py"), "--images", images,
            "--scale", str(scale), "--output", output, "--stride", str(stride), "--quiet",
            "--force", "--workers", str(workers)]


def _same_file(a, b):
    import h5py
    import numpy as np

    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        same = all(np.array_equal(fa[k][...], fb[k][...]) for k in ("data", "label"))
        attrs = sorted(fa.attrs) == sorted(fb.attrs) and all(
            np.array_equal(fa.attrs[k], fb.attrs[k]) for k in fa.attrs)
        return same and attrs, len(fa["data"])


def pairs(args):
    if args.folder:
        images = args.folder
        args.images = len([n for n in os.listdir(images) if not n.startswith(".")])
    else:
        images = _subset(make_photos(args.dir, args.images, args.size), args.images)
    tmp = tempfile.mkdtemp(prefix="srcnn_patchgen_", dir=args.tmp)
    out = {1: os.path.join(tmp, "w1.h5"), args.workers: os.path.join(tmp, f"w{args.workers}.h5")}
    times = {1: [], args.workers: []}
    rss = {1: [], args.workers: []}
    try:
        for w in (1, args.workers):          # warm-up: page cache, Python's bytecode
            run_timed(_cli(images, out[w], w, args.stride, args.scale))
        for r in range(args.repeats):
            for w in ((1, args.workers) if r % 2 == 0 else (args.workers, 1)):
                os.remove(out[w])      # not timed: deleting the previous run's file
                # Not timed either: the previous run's output still being written back
                # (GBs at the paper's stride) would throttle this run's writes, which a
                # single run does not meet.
                os.sync()
                t, m = run_timed(_cli(images, out[w], w, args.stride, args.scale))
                times[w].append(t)
                rss[w].append(m)
        same, n = _same_file(out[1], out[args.workers])
    finally:
        for p in out.values():
            if os.path.exists(p):
                os.remove(p)
        os.rmdir(tmp)
    ratios = [a / b for a, b in zip(times[1], times[args.workers])]
    row = {"images": args.images, "size": args.size, "stride": args.stride, "patches": n,
           "workers": args.workers, "repeats": args.repeats,
           "median_s_1": statistics.median(times[1]),
           f"median_s_{args.workers}": statistics.median(times[args.workers]),
           "speedup_median_of_pairs": statistics.median(ratios), "speedups": ratios,
           "peak_rss_mib_1": max(rss[1]), f"peak_rss_mib_{args.workers}": max(rss[args.workers]),
           "same_file": same, "load_before": os.getloadavg()[0]}
    print(f"| images | patches | --workers 1 s | --workers {args.workers} s | speedup (median of "
          "pairs) | same file |")
    print("|---:|---:|---:|---:|---:|---|")
    print(f"| {args.images} | {n} | {row['median_s_1']:.1f} | "
          f"{row[f'median_s_{args.workers}']:.1f} | {row['speedup_median_of_pairs']:.2f} | "
          f"{'yes' if same else 'NO'} |")
    return row


_COURSE_CHILD = r"""
import json, sys, time
from srcnn_theano.image.io import list_images
from srcnn_theano.patches.writer import write_h5
cfg = json.loads(sys.argv[1])
t0 = time.perf_counter()
def monitor(done, patches):
    if done % cfg['every'] == 0 or done == cfg['images']:
        print(json.dumps({'t': time.perf_counter() - t0, 'images': done, 'patches': patches}),
              flush=True)
s = write_h5(cfg['output'], list_images(cfg['images_dir']), cfg['scale'], stride=cfg['stride'],
             workers=cfg['workers'], progress=False, force=True, monitor=monitor)
print(json.dumps({'t': time.perf_counter() - t0, 'done': True, 'count': s.count}), flush=True)
"""


def course(args):
    import psutil

    photos = make_photos(args.dir, args.images, args.size)
    images = _subset(photos, args.images)
    tmp = tempfile.mkdtemp(prefix="srcnn_patchgen_", dir=args.tmp)
    output = os.path.join(tmp, "big.h5")
    cfg = dict(images_dir=images, output=output, scale=args.scale, stride=args.stride,
               workers=args.workers, images=args.images, every=max(1, args.images // 200))
    env = child_env()
    load = os.getloadavg()[0]
    proc = subprocess.Popen([sys.executable, "-c", _COURSE_CHILD, json.dumps(cfg)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, text=True)
    samples, progress, lock = [], [], threading.Lock()

    def sampler():
        root = psutil.Process(proc.pid)
        t0 = time.perf_counter()
        while proc.poll() is None:
            try:
                procs = [root] + root.children(recursive=True)
                rss = sum(p.memory_info().rss for p in procs if p.is_running())
            except psutil.Error:
                rss = None
            with lock:
                last = progress[-1] if progress else {"images": 0, "t": 0}
            if rss is not None:
                samples.append({"t": time.perf_counter() - t0, "rss_mib": rss / 2**20,
                                "images": last["images"]})
            time.sleep(args.sample)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    end = None
    try:
        for line in proc.stdout:
            msg = json.loads(line)
            if msg.get("done"):
                end = msg
            else:
                with lock:
                    progress.append(msg)
        proc.wait()
        th.join()
        size_gb = os.path.getsize(output) / 1e9 if os.path.exists(output) else None
    finally:
        if os.path.exists(output):
            os.remove(output)
        os.rmdir(tmp)
    if proc.returncode != 0 or end is None:
        raise RuntimeError("generate_h5 run failed")
    # Throughput over tenths of the extraction, and memory over the same stretches.
    extraction_end = progress[-1]["t"]
    rows = []
    for k in range(10):
        lo, hi = args.images * k // 10, args.images * (k + 1) // 10
        pts = [p for p in progress if lo <= p["images"] <= hi]
        if len(pts) < 2:
            continue
        rate = (pts[-1]["images"] - pts[0]["images"]) / (pts[-1]["t"] - pts[0]["t"])
        t_lo, t_hi = pts[0]["t"], pts[-1]["t"]
        mem = [s["rss_mib"] for s in samples if t_lo <= s["t"] <= t_hi] or [float("nan")]
        rows.append({"images": f"{lo}-{hi}", "images_per_s": rate, "peak_rss_mib": max(mem)})
    shuffle_mem = [s["rss_mib"] for s in samples if s["t"] > extraction_end] or [float("nan")]
    total_s = end["t"]
    per_image = total_s / args.images
    result = {"images": args.images, "size": args.size, "stride": args.stride,
              "workers": args.workers, "patches": end["count"], "file_gb": size_gb,
              "extraction_s": extraction_end, "shuffle_s": total_s - extraction_end,
              "total_s": total_s, "course": rows, "shuffle_peak_rss_mib": max(shuffle_mem),
              "peak_rss_mib": max(s["rss_mib"] for s in samples), "load_before": load,
              "imagenet_hours_at_this_rate": IMAGENET_IMAGES * per_image / 3600}
    print(f"{args.images} photos {args.size[0]}x{args.size[1]}, stride {args.stride}, "
          f"--workers {args.workers}: {end['count']} patches, {size_gb:.2f} GB, "
          f"{total_s:.0f} s ({extraction_end:.0f} s cutting, {total_s - extraction_end:.0f} s "
          f"writing the buckets), load {load:.2f} before")
    print("\n| images | photos/s | peak RSS of writer + workers (MiB) |\n|---|---:|---:|")
    for r in rows:
        print(f"| {r['images']} | {r['images_per_s']:.0f} | {r['peak_rss_mib']:.0f} |")
    print(f"| shuffle | | {result['shuffle_peak_rss_mib']:.0f} |")
    print(f"\nImageNet ({IMAGENET_IMAGES} photos of this size) at this rate: "
          f"{result['imagenet_hours_at_this_rate']:.1f} h")
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("pairs", "course"))
    p.add_argument("--images", type=int, default=None,
                   help="photos (default: 2,000 for pairs, 20,000 for course)")
    p.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("W", "H"))
    p.add_argument("--stride", type=int, default=None,
                   help="patch stride (default 14 for pairs, 33 for course)")
    p.add_argument("--scale", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=4, help="pairs: timed runs of each")
    p.add_argument("--sample", type=float, default=0.5, help="course: seconds between samples")
    p.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "srcnn_synthetic_photos"),
                   help="where the synthetic photos are made (kept)")
    p.add_argument("--folder", help="pairs: an existing folder of images instead (e.g. T91)")
    p.add_argument("--tmp", default=None, help="folder for the output files (default: temp)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.images is None:
        args.images = 2000 if args.what == "pairs" else 20000
    if args.stride is None:
        args.stride = 14 if args.what == "pairs" else 33
    args.size = tuple(args.size)
    result = pairs(args) if args.what == "pairs" else course(args)
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
