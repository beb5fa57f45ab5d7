#!/usr/bin/env python
"""The Theano timing server of ``benchmarks/compare_pytorch.py``.

It builds what ``python -m srcnn_theano bench`` times
(:func:`srcnn_theano.apps.speed.build_predict` / ``build_train``), runs each
``--warmup`` times, prints one JSON line ``{"ready": true, ...facts}`` and
then reads commands from stdin, one per line: ``predict``, ``train`` or
``sgemm`` (one float32 product of :func:`srcnn_theano.apps.speed.build_sgemm`,
the machine's matrix-product rate in the same run) times one run and prints
``{"t": seconds}``; ``quit`` (or an empty line, or end of
input) stops it; any other line is an error (exit status 2). The coordinator
asks each framework's server in turn, so that both are measured interleaved
on the same machine.

By hand::

    printf 'predict\\nquit\\n' | \\
        .venv/bin/python benchmarks/theano_worker.py --size 128 --only predict
"""
import argparse
import json
import sys
import time

import common  # noqa: F401  (this checkout first on sys.path)
from srcnn_theano.apps.speed import (add_graph_arguments, build_predict,  # noqa: E402
                                     build_sgemm, build_train, environment)


def serve(args, stdin=sys.stdin, stdout=sys.stdout):
    """Build, warm up, answer ``ready``, then time one run per command read."""
    what = (args.only,) if args.only else ("predict", "train")
    fns, facts = {}, {}
    if "predict" in what:
        fns["predict"], f = build_predict(args.size, impl=args.impl, tile=args.tile,
                                          arch=args.arch, filters=args.filters)
        facts.update(f)
    if "train" in what:
        fns["train"], f = build_train(args.batch, args.patch, impl=args.impl,
                                        arch=args.arch, filters=args.filters)
        facts.update(f)
    fns["sgemm"], facts["sgemm_flop"] = build_sgemm()
    for fn in fns.values():
        for _ in range(args.warmup):
            fn()
    facts.update(environment())
    stdout.write(json.dumps({"ready": True, **facts}) + "\n")
    stdout.flush()
    for line in stdin:
        cmd = line.strip()
        if cmd == "quit" or not cmd:
            break
        if cmd not in fns:
            print(f"theano_worker: unknown command {cmd!r}; expected one of "
                  f"{', '.join(sorted(fns))} or quit", file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        fns[cmd]()
        stdout.write(json.dumps({"t": time.perf_counter() - t0}) + "\n")
        stdout.flush()
    return 0


def build_parser():
    p = argparse.ArgumentParser(prog="benchmarks/theano_worker.py",
                                description=__doc__.splitlines()[0])
    return add_graph_arguments(p)


def main(argv=None):
    return serve(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
