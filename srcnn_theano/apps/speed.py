"""Speed benchmark: ``python -m srcnn_theano speed [--arch F1-F2-F3] [--filters N1,N2] [--json]``
(``bench`` is its other name).

Two measurements, each the median of several timed runs after warm-up, of
any architecture (default 9-1-5, 64/32 filters):

``predict``
    :class:`~srcnn_theano.network.inference.Predictor` (the library's own path, with
    its default tiling: tiles of 512, so 512x512 is one call) on one
    ``size x size`` single-channel image, ``same`` padding.
``train_step``
    One :class:`~srcnn_theano.network.functions.Trainer` step (SGD with momentum 0.9,
    MSE loss) on 64 patches of 33x33, ``same`` padding.

Both report GFLOP/s: the multiply-adds of the convolutions (x 2), for
prediction ``2 * H * W * sum(O * C * f * f)`` and for a training step the
forward pass, the weight gradients of all three layers and the input
gradients of layers 2 and 3 (3 + 3 + 2 passes), over the median time. The
tile margins recomputed by tiling are not counted: the figure is useful
work per second. Each is also given as a fraction of the machine's float32
matrix-product rate through the BLAS Theano links, measured in the same
process (:func:`sgemm_gflops`): the share carries from one CPU to another.
``peak_gflops_est`` is the machine's nominal float32 peak (cores x clock x
FMA lanes) as read from ``/proc/cpuinfo``; see :func:`cpu_info`.

With ``--json`` the last line printed is one JSON object::

    {"predict_s": ..., "train_step_s": ..., "predict_gflops": ..., "sgemm_gflops": ...,
     "predict_sgemm_fraction": ..., "train_sgemm_fraction": ..., ...}

:func:`build_predict`, :func:`build_train` and :func:`build_sgemm` are also
what ``benchmarks/theano_worker.py`` (the Theano timing server of
``benchmarks/compare_pytorch.py``) times.
"""
import json
import os
import platform
import statistics
import time

from srcnn_theano.cores import usable_cores

ARCH = "9-1-5"
PATCHES = 64
PATCH = 33


# ------------------------------------------------------------------ machine

def cpu_info():
    """CPU model, cores this process may use, clock and a nominal float32 peak.

    The peak is ``cores * MHz * flops_per_cycle`` with flops_per_cycle =
    2 (FMA) x float32 lanes x FMA units: 32 for AVX2+FMA (two 256-bit FMA
    units) and for AMD's AVX-512 (Zen 4 runs 512-bit FMAs on its two 256-bit
    units), 64 for Intel AVX-512 (two 512-bit units on server parts), 16
    for AVX, 8 otherwise. The clock is ``cpu MHz`` (nominal; turbo is not
    counted), so the figure is an estimate, not a measurement.
    """
    info = {"machine": platform.machine(), "model": None, "mhz": None, "flags": []}
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        text = ""
    vendor = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and info["model"] is None:
            info["model"] = value
        elif key == "cpu MHz" and info["mhz"] is None:
            info["mhz"] = float(value)
        elif key == "vendor_id" and not vendor:
            vendor = value
        elif key == "flags" and not info["flags"]:
            info["flags"] = value.split()
    flags = set(info.pop("flags"))
    cores = usable_cores()
    if "avx512f" in flags:
        per_cycle, simd = (32 if vendor == "AuthenticAMD" else 64), "avx512"
    elif "avx2" in flags and "fma" in flags:
        per_cycle, simd = 32, "avx2+fma"
    elif "avx" in flags:
        per_cycle, simd = 16, "avx"
    else:
        per_cycle, simd = 8, "sse"
    info.update(vendor=vendor, cores=cores, simd=simd, flops_per_cycle=per_cycle)
    if info["mhz"]:
        info["peak_gflops_est"] = round(cores * info["mhz"] * 1e6 * per_cycle / 1e9, 1)
    return info


def thread_settings():
    """Thread-count environment variables in force (None when unset)."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")
    return {k: os.environ.get(k) for k in names}


def blas_runtime():
    """Core type (OpenBLAS) or version (MKL) and thread count of the BLAS Theano links."""
    import ctypes

    from srcnn_theano.backend import blas_info

    info = blas_info()
    path = info.get("path")
    out = {}
    if not path:
        return out
    try:
        lib = ctypes.CDLL(path)  # already loaded by Theano's modules: same handle
    except OSError:
        return out
    prefix = info.get("symbol_prefix", "")
    for name, key in (("openblas_get_corename", "openblas_core"),
                      ("openblas_get_config", "openblas_config")):
        fn = getattr(lib, prefix + name, None)
        if fn is not None:
            fn.restype = ctypes.c_char_p
            out[key] = fn().decode()
    fn = getattr(lib, prefix + "openblas_get_num_threads", None)
    if fn is not None:
        out["openblas_threads"] = int(fn())
    if info.get("library") == "mkl":
        buf = ctypes.create_string_buffer(256)
        lib.MKL_Get_Version_String(buf, len(buf))
        out["mkl_version"] = buf.value.decode().strip()
        out["mkl_threads"] = int(lib.MKL_Get_Max_Threads())
    return out


# ------------------------------------------------------------------ FLOPs

def layer_macs(arch):
    """Multiply-adds per output pixel of each layer: [conv1, conv2, conv3]."""
    c, n1, n2 = arch["channels"], arch["n1"], arch["n2"]
    return [n1 * c * arch["f1"] ** 2, n2 * n1 * arch["f2"] ** 2, c * n2 * arch["f3"] ** 2]


def predict_flops(arch, h, w):
    """FLOPs of one ``same``-padded forward pass on an h x w image."""
    return 2 * h * w * sum(layer_macs(arch))


def train_step_flops(arch, n, h, w):
    """FLOPs of one ``same``-padded training step: forward, dW of every layer,
    dX of layers 2 and 3 (the input needs no gradient)."""
    m1, m2, m3 = layer_macs(arch)
    return 2 * n * h * w * (2 * m1 + 3 * m2 + 3 * m3)


# ------------------------------------------------------------------ workloads

def _architecture(arch=ARCH, filters=None, channels=1):
    """``'f1-f2-f3'`` and ``'n1,n2'`` (None: 64,32) -> the model's architecture dict."""
    from srcnn_theano.network.model import parse_architecture

    return dict(parse_architecture(arch, filters), channels=channels)


SGEMM_N = 2048  #: side of the square float32 product that measures the machine's rate


def build_sgemm(n=SGEMM_N):
    """A no-argument callable running one ``n x n`` float32 product of a compiled ``T.dot``
    (the BLAS Theano links), and its FLOPs (``2 n^3``)."""
    import numpy as np

    from srcnn_theano.backend import T, theano

    a, b = T.matrix("a", dtype="float32"), T.matrix("b", dtype="float32")
    fn = theano.function([a, b], T.dot(a, b), name="srcnn_sgemm_probe")
    rng = np.random.RandomState(0)
    x, y = rng.rand(n, n).astype(np.float32), rng.rand(n, n).astype(np.float32)
    fn(x, y)
    return (lambda: fn(x, y)), 2.0 * n ** 3


def sgemm_gflops(n=SGEMM_N, repeats=5):
    """This machine's float32 matrix-product rate through the BLAS Theano links (GFLOP/s).

    The best of ``repeats`` products of :func:`build_sgemm`: the reference the
    network's own GFLOP/s are given as a fraction of.
    """
    fn, flops = build_sgemm(n)
    return flops / min(time_runs(fn, repeats, 1)) / 1e9


def build_predict(size, impl="gemm", tile="default", seed=0, arch=ARCH, filters=None):
    """A no-argument callable running one prediction, and facts about it.

    ``tile``: ``'default'`` (the library's), None (no tiling) or an int.
    """
    import numpy as np

    from srcnn_theano.network import inference
    from srcnn_theano.network.model import SRCNN
    from srcnn_theano.network.weights import Weights

    arch = _architecture(arch, filters)
    if tile == "default":
        tile = inference.PREDICT_TILE
    model = SRCNN(**arch, padding="same", init_std=None, seed=seed)
    weights = Weights(model.get_weights(), arch)
    t0 = time.perf_counter()
    predictor = inference.Predictor(weights, padding="same", tile=tile, impl=impl)
    image = np.random.RandomState(seed).rand(size, size).astype(np.float32)
    predictor(image[:8, :8])  # compiles (or loads from the cache) now
    compile_s = time.perf_counter() - t0
    facts = {"size": size, "tile": tile, "impl": impl, "predict_compile_s": compile_s,
             "predict_gflop": predict_flops(arch, size, size) / 1e9}
    return (lambda: predictor(image)), facts


def build_train(batch=PATCHES, patch=PATCH, impl="gemm", seed=0, arch=ARCH, filters=None):
    """A no-argument callable running one SGD-momentum step, and facts about it."""
    import numpy as np

    from srcnn_theano.network.functions import Trainer
    from srcnn_theano.network.model import SRCNN

    arch = _architecture(arch, filters)
    model = SRCNN(**arch, padding="same", init_std=None, seed=seed, impl=impl)
    t0 = time.perf_counter()
    trainer = Trainer(model, optimizer="sgd", learning_rate=1e-4, momentum=0.9, loss="mse")
    compile_s = time.perf_counter() - t0
    rng = np.random.RandomState(seed + 1)
    x = rng.rand(batch, 1, patch, patch).astype(np.float32)
    y = np.clip(x + 0.05 * rng.randn(*x.shape), 0, 1).astype(np.float32)
    facts = {"batch": batch, "patch": patch, "train_compile_s": compile_s,
             "train_step_gflop": train_step_flops(arch, batch, patch, patch) / 1e9}
    return (lambda: trainer.train(x, y)), facts


def time_runs(fn, repeats, warmup):
    """Seconds of each of ``repeats`` runs of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def environment():
    """Versions, BLAS, threads, CPU: what a timing depends on."""
    import numpy as np

    from srcnn_theano.backend import theano
    from srcnn_theano.backend import blas_info

    env = {"theano": theano.__version__, "numpy": np.__version__,
           "python": platform.python_version(), "blas": blas_info(),
           "openmp": bool(theano.config.openmp), "threads": thread_settings(),
           "cpu": cpu_info()}
    env["blas"].update(blas_runtime())
    return env


def run_bench(size=512, batch=PATCHES, patch=PATCH, repeats=7, warmup=2, impl="gemm",
              tile="default", what=("predict", "train"), arch=ARCH, filters=None):
    """Time prediction and/or a training step; return a flat dict of results.

    Keys: ``predict_s`` / ``train_step_s`` (medians, seconds), ``*_min_s``,
    ``*_times_s`` (every run), ``predict_gflops`` / ``train_gflops``,
    ``peak_gflops_est``, compile times, and :func:`environment`'s facts.
    """
    spec = _architecture(arch, filters)
    out = {"architecture": arch, "filters": f"{spec['n1']},{spec['n2']}", "padding": "same"}
    if "predict" in what:
        fn, facts = build_predict(size, impl=impl, tile=tile, arch=arch, filters=filters)
        out.update(facts)
        times = time_runs(fn, repeats, warmup)
        out.update(predict_s=statistics.median(times), predict_min_s=min(times),
                   predict_times_s=[round(t, 5) for t in times])
        out["predict_gflops"] = round(out["predict_gflop"] / out["predict_s"], 2)
    if "train" in what:
        fn, facts = build_train(batch, patch, impl=impl, arch=arch, filters=filters)
        out.update(facts)
        times = time_runs(fn, repeats, warmup)
        out.update(train_step_s=statistics.median(times), train_step_min_s=min(times),
                   train_step_times_s=[round(t, 5) for t in times])
        out["train_gflops"] = round(out["train_step_gflop"] / out["train_step_s"], 2)
    out["sgemm_gflops"] = round(sgemm_gflops(), 1)
    for key in ("predict_gflops", "train_gflops"):
        if key in out:
            out[key.replace("gflops", "sgemm_fraction")] = round(out[key] / out["sgemm_gflops"], 3)
    env = environment()
    out["peak_gflops_est"] = env["cpu"].get("peak_gflops_est")
    out.update(env)
    return out


def format_text(res):
    lines = [f"SRCNN {res['architecture']} ({res['filters']} filters, {res['padding']} padding), Theano {res['theano']}, "
             f"BLAS: {res['blas']['library']}"
             + (f" ({res['blas'].get('openblas_core')}, {res['blas'].get('openblas_threads')} "
                f"threads)" if res["blas"].get("openblas_core") else "")
             + (f" ({res['blas']['mkl_version']}, {res['blas']['mkl_threads']} threads)"
                if res["blas"].get("mkl_version") else "")
             + f", openmp={res['openmp']}"]
    cpu = res["cpu"]
    lines.append(f"CPU: {cpu.get('model')}, {cpu['cores']} cores, {cpu.get('mhz')} MHz, "
                 f"{cpu['simd']}; nominal float32 peak ~{res.get('peak_gflops_est')} GFLOP/s; "
                 f"measured sgemm 2048^2 {res['sgemm_gflops']:.0f} GFLOP/s")
    if "predict_s" in res:
        lines.append(f"predict {res['size']}x{res['size']} (tile {res['tile']}): "
                     f"median {res['predict_s'] * 1e3:.1f} ms, min {res['predict_min_s'] * 1e3:.1f}"
                     f" ms, {res['predict_gflops']:.1f} GFLOP/s "
                 f"({100 * res['predict_sgemm_fraction']:.0f}% of sgemm) "
                     f"(compile/load {res['predict_compile_s']:.1f} s)")
    if "train_step_s" in res:
        lines.append(f"train step {res['batch']}x{res['patch']}x{res['patch']}: "
                     f"median {res['train_step_s'] * 1e3:.1f} ms, "
                     f"min {res['train_step_min_s'] * 1e3:.1f} ms, "
                     f"{res['train_gflops']:.1f} GFLOP/s "
                     f"({100 * res['train_sgemm_fraction']:.0f}% of sgemm) "
                     f"(compile/load {res['train_compile_s']:.1f} s)")
    return "\n".join(lines)


def tile_arg(value):
    """``--tile``: 'default', 'none' / '0' (no tiling) or a side in pixels."""
    if value == "default":
        return value
    if value.lower() in ("none", "0"):
        return None
    return int(value)


def add_graph_arguments(p):
    """What to build and time (shared with ``benchmarks/theano_worker.py``); returns ``p``."""
    p.add_argument("--arch", default=ARCH, help=f"network f1-f2-f3, any odd sizes ({ARCH})")
    p.add_argument("--filters", default=None, help="n1,n2 filters of layers 1 and 2 (64,32)")
    p.add_argument("--size", type=int, default=512, help="predict on a SIZE x SIZE image (512)")
    p.add_argument("--batch", type=int, default=PATCHES, help="patches per training step (64)")
    p.add_argument("--patch", type=int, default=PATCH, help="training patch side (33)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs first")
    p.add_argument("--impl", choices=("gemm", "corrmm"), default="gemm",
                   help="convolution graph (corrmm: Theano's CorrMM, the slow reference)")
    p.add_argument("--tile", type=tile_arg, default="default",
                   help="Predictor tile side, 'none' for no tiling (default: the library's)")
    p.add_argument("--only", choices=("predict", "train"), help="run one of the two")
    return p


def add_arguments(p):
    """Add the ``bench`` options to ``p`` (the CLI's ``bench`` sub-parser); return it."""
    add_graph_arguments(p)
    p.add_argument("--repeats", type=int, default=7, help="timed runs; the median is reported")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    return p


def run_from_args(args):
    """Run what parsed ``bench`` arguments ask for; print; return the exit status."""
    what = (args.only,) if args.only else ("predict", "train")
    res = run_bench(size=args.size, batch=args.batch, patch=args.patch, repeats=args.repeats,
                    warmup=args.warmup, impl=args.impl, tile=args.tile, what=what,
                    arch=args.arch, filters=args.filters)
    if args.json:
        print(json.dumps(res))
    else:
        print(format_text(res))
    return 0
