#!/usr/bin/env python
"""Streamed training against in-memory training: the step rate when the patch file is larger
than ``--memory-mb``.

One process, one compiled training step (9-1-5, ``valid`` padding, SGD with
momentum, MSE, 64 patches of 33x33, as ``bench``), fed by
:func:`srcnn_theano.patches.store.iterate_minibatches` in three ways, taking
turns in rounds of ``--steps`` steps (so that a busy machine slows all alike):

``memory``     the whole file loaded once (budget larger than the file);
``streamed``   ``--memory-mb`` of budget: blocks of half of it, the next block
               read by the reader's thread while the current one trains;
``serial``     the same blocks read in turn, without the thread (what the
               reader did before), for comparison.

Before each streamed and serial round the file's pages are dropped from the
page cache (``posix_fadvise(DONTNEED)``, this file only), so every block is
read from the disk, the worst case. Each round starts a new epoch (its first
block is read inside the timing). Reported: median steps per second of
each way and the ratios to ``memory``.

The patch file (default 400 synthetic photos, 256x256, the paper's geometry:
about 100,000 patches, 620 MB) is made once with ``data_prep``'s writer in
``--dir`` and kept.

    .venv/bin/python benchmarks/streamed_training.py [--memory-mb 64] [--rounds 5]
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import common  # noqa: F401  (this checkout's srcnn_theano first on sys.path)


def patch_file(folder, images):
    from patch_generation import make_photos, _subset
    from srcnn_theano.image.io import list_images
    from srcnn_theano.patches.writer import write_h5

    path = os.path.join(folder, f"streamed_{images}.h5")
    if not os.path.exists(path):
        photos = _subset(make_photos(os.path.join(folder, "photos"), images, (256, 256)), images)
        write_h5(path, list_images(photos), 3, progress=False, force=True)
    return path


def drop_cache(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def serial_batches(patches, starts, block, batch_size, rng, drop_last):
    """The reader without its thread: each block read when it is needed."""
    from srcnn_theano.patches import store

    for start in starts:
        data, label = store._read_block(patches, int(start), block)
        yield from store._batches(data, label, batch_size, rng, drop_last)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=400, help="synthetic photos in the patch file")
    p.add_argument("--memory-mb", type=int, default=64, help="streamed budget (MiB)")
    p.add_argument("--steps", type=int, default=300, help="training steps per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "srcnn_synthetic_photos"))
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    import numpy as np

    from srcnn_theano.network.functions import Trainer
    from srcnn_theano.network.model import SRCNN
    from srcnn_theano.patches import store

    path = patch_file(args.dir, args.images)
    model = SRCNN.from_preset("9-1-5", padding="valid", init_std=None, seed=0)
    trainer = Trainer(model, "sgd", 1e-4, 0.9, loss="mse")
    budget = args.memory_mb << 20
    times = {"memory": [], "streamed": [], "serial": []}
    real_prefetch = store._prefetched_batches
    with store.open_h5(path, check_values=False) as pf:
        if pf.nbytes <= budget:
            raise SystemExit(f"the file ({pf.nbytes >> 20} MiB) must be larger than --memory-mb")
        big = pf.nbytes * 2
        for x, y in store.iterate_minibatches(pf, args.batch, np.random.default_rng(0), big):
            trainer.train(x, y)   # warm-up: compiled, the file loaded for the memory way
            break
        load = os.getloadavg()[0]
        for r in range(args.rounds):
            ways = ["memory", "streamed", "serial"]
            for way in (ways if r % 2 == 0 else ways[::-1]):
                if way != "memory":
                    drop_cache(path)
                store._prefetched_batches = real_prefetch if way != "serial" else serial_batches
                rng = np.random.default_rng(r)
                it = store.iterate_minibatches(pf, args.batch, rng,
                                               big if way == "memory" else budget)
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    try:
                        x, y = next(it)
                    except StopIteration:
                        it = store.iterate_minibatches(pf, args.batch, rng,
                                                       big if way == "memory" else budget)
                        x, y = next(it)
                    trainer.train(x, y)
                times[way].append(args.steps / (time.perf_counter() - t0))
                it.close()
        store._prefetched_batches = real_prefetch
        info = {"file_mib": pf.nbytes >> 20, "patches": pf.count}
    med = {k: statistics.median(v) for k, v in times.items()}
    result = dict(info, memory_mb=args.memory_mb, steps=args.steps, rounds=args.rounds,
                  batch=args.batch, steps_per_s=med, rounds_steps_per_s=times,
                  streamed_vs_memory=med["streamed"] / med["memory"],
                  serial_vs_memory=med["serial"] / med["memory"], load_before=load)
    print(f"patch file {info['file_mib']} MiB ({info['patches']} patches), --memory-mb "
          f"{args.memory_mb}, {args.rounds} rounds of {args.steps} steps of {args.batch}, "
          f"page cache dropped before each streamed round; load {load:.2f} before")
    print("\n| reader | steps/s (median) | vs in memory |\n|---|---:|---:|")
    for k, label in (("memory", "whole file in memory"),
                     ("streamed", f"streamed, {args.memory_mb} MiB, next block read meanwhile"),
                     ("serial", f"streamed, {args.memory_mb} MiB, blocks read in turn")):
        print(f"| {label} | {med[k]:.1f} | {med[k] / med['memory']:.2f} |")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
