#!/usr/bin/env python
"""Theano SRCNN against PyTorch on the CPU: same shapes, same machine, same run.

Measures what ``python -m srcnn_theano bench --arch A`` measures (one ``same``
prediction on a SIZE x SIZE image; one SGD-momentum training step on 64
patches of 33x33) in PyTorch and in Theano, *interleaved*: each framework
runs in its own process, a timing server that has built and warmed up both
functions, and this script asks them in turn for one timed run at a time
(alternating which goes first), so a busy machine slows both alike. Between
them the Theano server also times one 2048x2048 float32 product through the
BLAS Theano links: the machine's matrix-product rate in the same run, of
which each timing's GFLOP/s is given as a fraction (the figure that carries
from one CPU to another; a ratio to PyTorch does not). It prints, per
architecture, the medians, GFLOP/s, % of that rate and the Theano / PyTorch
ratio (below 1: Theano is faster); ``--out FILE`` writes them as the speed
file that ``make figures`` turns into README's and docs/speed.md's tables.
The Theano server is ``benchmarks/theano_worker.py``; the PyTorch one is this
script run with ``--torch-worker``.

    .venv/bin/python benchmarks/compare_pytorch.py --torch-python /tmp/torchvenv/bin/python \
        --arch 9-1-5 9-3-5 9-5-5 --out benchmarks/results/speed.json

PyTorch is not a dependency of the project; install it anywhere, e.g.::

    python3.11 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch numpy
    .venv/bin/python benchmarks/compare_pytorch.py --torch-python /tmp/torchvenv/bin/python

Without ``--torch-python`` the current interpreter is used for PyTorch when
it can import torch; otherwise only Theano is timed and no ratio is given.

Extra Theano configurations can be timed in the same run: ``--naive-baseline``
(none of the fast path: CorrMM graph, numpy's BLAS via its C API, stock
malloc), or any ``IMPL:THEANO_FLAGS`` with ``--theano`` (repeatable),
e.g. ``--theano corrmm:`` or ``--theano 'gemm:blas__ldflags='`` (the
no-OpenBLAS fallback) or ``--theano 'gemm:openmp=True'``.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------ PyTorch side

def torch_worker(args):
    """The PyTorch timing server (runs under the PyTorch interpreter)."""
    import numpy as np
    import torch

    torch.manual_seed(0)
    f1, f2, f3 = (int(v) for v in args.arch.split("-"))
    n1, n2 = (int(v) for v in (args.filters or "64,32").split(","))
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, n1, f1, padding=f1 // 2), torch.nn.ReLU(),
        torch.nn.Conv2d(n1, n2, f2, padding=f2 // 2), torch.nn.ReLU(),
        torch.nn.Conv2d(n2, 1, f3, padding=f3 // 2))
    image = torch.from_numpy(np.random.RandomState(0).rand(1, 1, args.size, args.size)
                             .astype(np.float32))
    rng = np.random.RandomState(1)
    x = rng.rand(args.batch, 1, args.patch, args.patch).astype(np.float32)
    y = np.clip(x + 0.05 * rng.randn(*x.shape), 0, 1).astype(np.float32)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)

    def predict():
        with torch.inference_mode():
            return net(image).numpy()

    def train():
        opt.zero_grad(set_to_none=True)
        loss = torch.mean((net(x) - y) ** 2)
        loss.backward()
        opt.step()
        return loss.item()

    fns = {"predict": predict, "train": train}
    for fn in fns.values():
        for _ in range(args.warmup):
            fn()
    facts = {"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads(),
             "mkldnn": bool(torch.backends.mkldnn.is_available()),
             "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}}
    sys.stdout.write(json.dumps(facts) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit" or not cmd:
            break
        t0 = time.perf_counter()
        fns[cmd]()
        sys.stdout.write(json.dumps({"t": time.perf_counter() - t0}) + "\n")
        sys.stdout.flush()
    return 0


# ------------------------------------------------------------------ coordinator

class Worker:
    def __init__(self, label, cmd, env=None):
        self.label, self.cmd = label, cmd
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=REPO, bufsize=1)
        self.facts = None
        self.times = {}

    def wait_ready(self):
        for line in self.proc.stdout:
            line = line.strip()
            if line.startswith("{"):
                msg = json.loads(line)
                if msg.get("ready"):
                    self.facts = msg
                    return msg
        raise RuntimeError(f"{self.label}: worker exited before it was ready "
                           f"(status {self.proc.wait()}): {' '.join(self.cmd)}")

    def run(self, what):
        self.proc.stdin.write(what + "\n")
        self.proc.stdin.flush()
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.label}: worker died")
            if line.startswith("{"):
                t = json.loads(line)["t"]
                self.times.setdefault(what, []).append(t)
                return t

    def close(self):
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass
        self.proc.wait(timeout=60)


def _torch_python(requested):
    if requested:
        return requested
    try:
        import torch  # noqa: F401
        return sys.executable
    except ImportError:
        return None


def _shape_args(args, arch):
    return (["--arch", arch, "--size", str(args.size), "--batch", str(args.batch),
             "--patch", str(args.patch), "--warmup", str(args.warmup)]
            + (["--filters", args.filters] if args.filters else []))


def theano_worker_cmd(python, args, impl, repo=REPO, arch="9-1-5"):
    return ([python, os.path.join(repo, "benchmarks", "theano_worker.py")] + _shape_args(args, arch)
            + ["--impl", impl] + (["--tile", str(args.tile)] if args.tile else []))


def compare(args, arch="9-1-5"):
    """Start every worker for one architecture, time them interleaved; the workers."""
    workers = []
    theano_python = args.theano_python or sys.executable
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    configs = [("gemm", "", None)] + [tuple((c + ":").split(":", 1)) + (None,)
                                      for c in args.theano]
    if args.naive_baseline:
        # What the project did before: CorrMM, numpy's BLAS through its C API, stock malloc.
        configs.append(("corrmm", "blas__ldflags=", "naive"))
    for impl, flags, label in configs:
        flags = flags.rstrip(":")
        wenv = dict(env)
        if flags:
            wenv["THEANO_FLAGS"] = ",".join(x for x in (env.get("THEANO_FLAGS"), flags) if x)
        if label == "naive":
            wenv["SRCNN_THEANO_MALLOPT"] = "0"
            label = "theano-naive(corrmm,numpy-blas,no-mallopt)"
        else:
            label = f"theano-{impl}" + (f"[{flags}]" if flags else "")
        workers.append(Worker(label, theano_worker_cmd(theano_python, args, impl, arch=arch), wenv))
    for repo in getattr(args, "baseline_repo", None) or []:
        # Another checkout of the project (e.g. `git worktree add /tmp/base <commit>`),
        # timed in the same run: a regression check of the network's speed.
        benv = dict(os.environ)
        benv["PYTHONPATH"] = os.path.abspath(repo) + os.pathsep + os.environ.get("PYTHONPATH", "")
        workers.append(Worker(f"theano-gemm[{os.path.basename(os.path.abspath(repo))}]",
                              theano_worker_cmd(theano_python, args, "gemm",
                                                os.path.abspath(repo), arch), benv))
    tp = _torch_python(args.torch_python)
    if tp:
        tenv = dict(os.environ)
        workers.append(Worker("pytorch", [tp, os.path.abspath(__file__), "--torch-worker"]
                              + _shape_args(args, arch), tenv))
    else:
        print("PyTorch not found (use --torch-python): timing Theano only", file=sys.stderr)
    try:
        for w in workers:  # one at a time, so that compiling does not disturb the others
            w.wait_ready()
        for r in range(args.repeats):
            order = workers if r % 2 == 0 else workers[::-1]
            for what in ("predict", "train"):
                for w in order:
                    time.sleep(args.gap)  # let the other process's spinning threads sleep
                    w.run(what)
            time.sleep(args.gap)
            workers[0].run("sgemm")
    finally:
        for w in workers:
            w.close()
    return workers


def sgemm_rate(workers):
    """GFLOP/s of the median float32 product the first (Theano) worker timed."""
    w = workers[0]
    return w.facts["sgemm_flop"] / statistics.median(w.times["sgemm"]) / 1e9


def summarize(workers, args, arch="9-1-5"):
    """One row per task and worker: medians, GFLOP/s, % of the sgemm rate, ratio to PyTorch."""
    rows = []
    rate = sgemm_rate(workers)
    flop = {"predict": workers[0].facts["predict_gflop"], "train": workers[0].facts["train_step_gflop"]}
    torch_w = next((w for w in workers if w.label == "pytorch"), None)
    for what in ("predict", "train"):
        ref = statistics.median(torch_w.times[what]) if torch_w else None
        for w in workers:
            ts = w.times[what]
            med = statistics.median(ts)
            rows.append({"arch": arch, "what": what, "impl": w.label, "median_s": med,
                         "min_s": min(ts), "runs": len(ts),
                         "gflops": flop[what] / med, "sgemm_fraction": flop[what] / med / rate,
                         "ratio_vs_pytorch": (med / ref) if ref else None})
    return rows


def format_table(rows, rate, args, arch="9-1-5"):
    out = [f"{arch}: predict 1x1x{args.size}x{args.size} same; "
           f"train {args.batch}x1x{args.patch}x{args.patch} SGD momentum; "
           f"{args.repeats} interleaved runs each, medians; sgemm {rate:.0f} GFLOP/s", "",
           "| what | implementation | median ms | min ms | GFLOP/s | % of sgemm | ratio vs PyTorch |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = f"{r['ratio_vs_pytorch']:.2f}" if r["ratio_vs_pytorch"] is not None else "-"
        out.append(f"| {r['what']} | {r['impl']} | {r['median_s'] * 1e3:.1f} | "
                   f"{r['min_s'] * 1e3:.1f} | {r['gflops']:.0f} | {100 * r['sgemm_fraction']:.0f}% "
                   f"| {ratio} |")
    return "\n".join(out)


def cpu_name(cpu):
    """``2-core Intel(R) Xeon(R) Processor (avx512, 2.6 GHz)`` from a worker's ``cpu`` facts."""
    ghz = f", {cpu['mhz'] / 1000:.1f} GHz" if cpu.get("mhz") else ""
    return f"{cpu.get('cores')}-core {cpu.get('model')} ({cpu.get('simd')}{ghz})"


def speed_file(results, args):
    """The speed file (schema: :func:`srcnn_theano.apps.plots.read_speed`) of a run."""
    def med_ms(rows, what, label):
        return round(next(r["median_s"] for r in rows if r["what"] == what and r["impl"] == label) * 1e3, 2)

    out_rows, rates, facts = [], [], {}
    for arch, (rows, rate, workers) in results.items():
        facts = {w.label: w.facts for w in workers}
        rates.append(rate)
        g = {r["what"]: r["gflops"] for r in rows if r["impl"] == "theano-gemm"}
        out_rows.append({"arch": arch, "predict_ms": med_ms(rows, "predict", "theano-gemm"),
                         "pytorch_predict_ms": med_ms(rows, "predict", "pytorch"),
                         "train_step_ms": med_ms(rows, "train", "theano-gemm"),
                         "pytorch_train_step_ms": med_ms(rows, "train", "pytorch"),
                         "predict_gflops": round(g["predict"], 1), "train_gflops": round(g["train"], 1),
                         "sgemm_gflops": round(rate, 1)})
    torch_facts = facts.get("pytorch", {})
    theano_facts = facts.get("theano-gemm", {})
    return {"cpu": args.cpu or cpu_name(theano_facts.get("cpu", {})),
            "sgemm_gflops": round(statistics.median(rates), 1),
            "pytorch": f"PyTorch {torch_facts.get('torch')} CPU ({torch_facts.get('threads')} threads)",
            "blas": (theano_facts.get("blas") or {}).get("library"),
            "measured": (f"Medians of {args.repeats} runs interleaved with PyTorch's and with a "
                         f"2048x2048 sgemm through the BLAS Theano links "
                         f"({(theano_facts.get('blas') or {}).get('library')}), "
                         f"{time.strftime('%Y-%m-%d')}; predict: one {args.size}x{args.size} image, "
                         f"same padding; training step: {args.batch} patches {args.patch}x{args.patch}, "
                         f"SGD momentum"),
            "command": (f"python benchmarks/compare_pytorch.py --arch {' '.join(results)} "
                        f"--repeats {args.repeats} --out {args.out}"),
            "rows": out_rows}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", nargs="+", default=["9-1-5"], metavar="F1-F2-F3",
                   help="architectures, each timed in turn (9-1-5)")
    p.add_argument("--filters", help="n1,n2 filters of layers 1 and 2 (64,32)")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--patch", type=int, default=33)
    p.add_argument("--repeats", type=int, default=15, help="timed runs per framework and task")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--gap", type=float, default=0.2,
                   help="seconds of pause before each timed run (idle thread pools go to sleep)")
    p.add_argument("--tile", help="Theano Predictor tile side (default: the library's)")
    p.add_argument("--torch-python", help="interpreter that has torch (default: this one, if)")
    p.add_argument("--theano-python", help="interpreter for Theano (default: this one)")
    p.add_argument("--theano", action="append", default=[], metavar="IMPL:FLAGS",
                   help="another Theano configuration to time alongside (repeatable)")
    p.add_argument("--naive-baseline", action="store_true",
                   help="also time the unoptimised configuration (CorrMM graph, numpy's BLAS "
                        "through its C API, stock malloc)")
    p.add_argument("--baseline-repo", action="append", default=[], metavar="DIR",
                   help="also time the worker of another checkout of the project (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--out", metavar="FILE",
                   help="write the speed file (e.g. benchmarks/results/speed.json; needs PyTorch)")
    p.add_argument("--cpu", help="how the speed file names the CPU (default: from /proc/cpuinfo)")
    p.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.torch_worker:
        args.arch = args.arch[0]
        return torch_worker(args)
    results, dump = {}, []
    for arch in args.arch:
        workers = compare(args, arch)
        rows, rate = summarize(workers, args, arch), sgemm_rate(workers)
        results[arch] = (rows, rate, workers)
        print(format_table(rows, rate, args, arch) + "\n", flush=True)
        dump.append({"arch": arch, "rows": rows, "sgemm_gflops": rate,
                     "workers": {w.label: {k: v for k, v in w.facts.items() if k != "ready"}
                                 for w in workers}})
    t = results[args.arch[0]][2][0].facts
    print(f"Theano: BLAS {t.get('blas', {}).get('library')}, tile {t.get('tile')}; "
          f"CPU: {args.cpu or cpu_name(t.get('cpu', {}))}")
    if args.out:
        if not all(any(w.label == "pytorch" for w in res[2]) for res in results.values()):
            print("error: --out needs PyTorch (--torch-python)", file=sys.stderr)
            return 2
        from srcnn_theano.files import atomic_write_bytes

        atomic_write_bytes(args.out, (json.dumps(speed_file(results, args), indent=1) + "\n").encode())
        print(f"wrote {args.out}")
    if args.json:
        print(json.dumps({"archs": dump, "size": args.size, "batch": args.batch,
                          "patch": args.patch, "repeats": args.repeats,
                          "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
