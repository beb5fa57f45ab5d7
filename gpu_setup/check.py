"""SRCNN on the GPU against the CPU: same results, and how much faster.

Run by ``gpu_setup/check.sh run`` on a GPU machine, with Python 3.11,
numpy 1.23.5, Theano-PyMC, Lasagne and pygpu importable and the environment
of ``python -m gpu_setup.env env`` in force. It never imports Theano
itself: each configuration runs in a child process (Theano's device is fixed
when it is imported)::

    cuda-dnn      device=cuda, T.nnet.conv2d -> GpuDnnConv (the patched cuDNN
                  _v7 algorithm choice, dnn__conv__algo_*=guess_on_shape_change)
    cuda-corrmm   device=cuda, dnn__enabled=False -> GpuCorrMM (cuBLAS)
    cpu           device=cpu, the reference for both
    cuda-project  device=cuda, the project's srcnn_theano.model/functions, with
                  whatever convolution graph they build (im2col + dot today)
    cpu-project   device=cpu, its reference

All build the same SRCNN (9-5-5, He initialisation, seed 0), then

* predict 4 random 256x256 images ('same' padding) and
* train 20 SGD steps (momentum 0.9) on fixed random 33x33 patches (batch 64,
  'valid', mean squared error),

saving outputs, losses and final weights; the parent compares each GPU run
with its CPU reference (TF32 off) and writes ``gpu_check_result.json``.
Timed work: prediction throughput on 512x512 images (8 per call on the GPU,
1 on the CPU; Mpixel/s) and training throughput on batches of 128 33x33
patches (patches/s), medians of repeats.

The children start together, so that their C compilations overlap, do the
untimed work, then wait; the parent lets them time their work one at a time,
so that timings do not disturb each other.

Usage::

    python -m gpu_setup.check orchestrate --out DIR [--deadline EPOCH] [--configs a,b]
    python -m gpu_setup.check child NAME WORKDIR      # internal
"""
import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: name -> (device, implementation, CPU reference it is compared with)
CONFIGS = {
    "cuda-dnn": ("cuda", "conv2d", "cpu"),         # cuDNN (the patched _v7 path)
    "cuda-corrmm": ("cuda", "conv2d", "cpu"),      # dnn__enabled=False: GpuCorrMM
    "cpu": ("cpu", "conv2d", None),
    "cuda-project": ("cuda", "project", "cpu-project"),
    "cpu-project": ("cpu", "project", None),
}
ARCH = "9-5-5"
SEED = 0
PRED_SHAPE = (4, 1, 256, 256)
TRAIN_STEPS, TRAIN_BATCH, PATCH = 20, 64, 33
TIMED_PRED_SHAPE = {"cuda": (8, 1, 512, 512), "cpu": (1, 1, 512, 512)}
TIMED_TRAIN_BATCH = 128
LEARNING_RATE = 1e-3
# With TF32 off, GPU and CPU differ by summation order only (~1e-6 relative);
# cuDNN's FFT and Winograd algorithms, which guess_on_shape_change may pick,
# are less exact (up to ~1e-4). A wrong convolution is off by O(1).
FLOAT32_REL = 1e-5   # reported: "within_float32"
PRED_REL = 1e-3      # pass/fail: relative L2 error of the predictions
TRAIN_REL = 1e-2     # pass/fail: losses and weights after 20 SGD steps, relative


def _import_package():
    """``srcnn_theano`` without running its ``__init__`` if that fails here."""
    try:
        return importlib.import_module("srcnn_theano")
    except Exception:  # pragma: no cover - a package __init__ needing more than numpy/Theano
        pkg = types.ModuleType("srcnn_theano")
        pkg.__path__ = [os.path.join(ROOT, "srcnn_theano")]
        sys.modules["srcnn_theano"] = pkg
        return pkg


# --------------------------------------------------------------- child

def _median_time(fn, repeats, budget):
    times, start = [], time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget:
            break
    times.sort()
    return times[len(times) // 2], len(times)


def _project_impl():
    """Predict and train functions from the project's ``model`` and ``functions``
    modules, with whatever convolution graph they build."""
    from srcnn_theano.network import model as model_mod
    from srcnn_theano.network.functions import Trainer, compile_predict

    preset = model_mod.PRESETS[ARCH]
    predict = compile_predict(model_mod.SRCNN(**preset, padding="same", init_std=None, seed=SEED))
    net = model_mod.SRCNN(**preset, padding="valid", init_std=None, seed=SEED)
    trainer = Trainer(net, optimizer="sgd", learning_rate=LEARNING_RATE, momentum=0.9, loss="mse")

    def set_lr(value):
        trainer.learning_rate = value
    return predict, trainer.train, set_lr, net.get_weights


def _conv2d_impl():
    """The same network and SGD with ``T.nnet.conv2d``, which Theano maps to
    GpuDnnConv (or GpuCorrMM) on the GPU and CorrMM on the CPU."""
    import numpy as np
    from srcnn_theano.backend import T, theano

    def network(padding):
        rng = np.random.RandomState(SEED)
        x = T.tensor4("x")
        h, params, channels = x, [], 1
        for i, (f, n) in enumerate(((9, 64), (5, 32), (5, 1)), start=1):
            std = np.sqrt((2.0 if i < 3 else 1.0) / (channels * f * f))
            w = theano.shared(rng.normal(0, std, (n, channels, f, f)).astype("float32"),
                              name=f"conv{i}.W")
            b = theano.shared(np.zeros(n, "float32"), name=f"conv{i}.b")
            h = T.nnet.conv2d(h, w, border_mode="half" if padding == "same" else "valid",
                              filter_flip=False) + b.dimshuffle("x", 0, "x", "x")
            h = T.nnet.relu(h) if i < 3 else h
            params += [w, b]
            channels = n
        return x, h, params

    x, out, _ = network("same")
    predict = theano.function([x], out)
    x, out, params = network("valid")
    y = T.tensor4("y")
    loss = T.mean(T.sqr(out - y))
    lr = theano.shared(np.float32(LEARNING_RATE))
    updates = []
    for p, g in zip(params, theano.grad(loss, params)):
        v = theano.shared(np.zeros(p.get_value().shape, "float32"))
        updates += [(v, np.float32(0.9) * v - lr * g), (p, p + np.float32(0.9) * v - lr * g)]
    train = theano.function([x, y], loss, updates=updates)
    return (predict, train, lambda value: lr.set_value(np.float32(value)),
            lambda: {p.name: p.get_value() for p in params})


def run_child(name, work):
    """One configuration; writes ``WORK/NAME.json`` and ``WORK/NAME.npz``."""
    result = {"name": name, "ok": False, "stage": "import"}
    out_json = os.path.join(work, f"{name}.json")

    def save():
        with open(out_json, "w") as f:
            json.dump(result, f, indent=1, default=str)

    try:
        _import_package()
        from srcnn_theano import gpu
        gpu.prepare_environment()
        t0 = time.perf_counter()
        from srcnn_theano.backend import theano
        import numpy as np
        status = gpu.configure(theano)
        result["import_s"] = time.perf_counter() - t0
        result["status"] = vars(status)
        result["theano_flags"] = os.environ.get("THEANO_FLAGS")
        result["device"] = theano.config.device
        result["versions"] = {"python": platform.python_version(), "numpy": np.__version__,
                              "theano": theano.__version__}
        if name.startswith("cuda"):
            if not status.gpu:
                raise RuntimeError("the GPU did not start (see this child's log)")
            from theano.gpuarray import dnn
            import pygpu
            ctx = list(theano.gpuarray.init_dev.devmap.values())[0]
            result["versions"].update(pygpu=pygpu.__version__, cudnn=dnn.version(raises=False),
                                      gpuarray_api=list(pygpu.gpuarray.api_version()))
            result["gpu"] = {"name": ctx.devname, "bin_id": ctx.bin_id,
                             "total_gmem_mib": ctx.total_gmem // 2**20}
            if name == "cuda-dnn" and not status.cudnn:
                raise RuntimeError(f"cuDNN is not used: {status.reason}")

        rng = np.random.RandomState(1234)
        images = rng.uniform(0, 1, PRED_SHAPE).astype("float32")
        border = 8  # (9 + 5 + 5 - 3) / 2 for 9-5-5 'valid'
        patches = rng.uniform(0, 1, (TRAIN_STEPS, TRAIN_BATCH, 1, PATCH, PATCH)).astype("float32")
        labels = rng.uniform(0, 1, (TRAIN_STEPS, TRAIN_BATCH, 1, PATCH - 2 * border,
                                    PATCH - 2 * border)).astype("float32")

        result["stage"] = "compile"
        t0 = time.perf_counter()
        result["impl"] = CONFIGS[name][1]
        impl = _project_impl if result["impl"] == "project" else _conv2d_impl
        predict, train, set_lr, get_weights = impl()
        result["compile_s"] = time.perf_counter() - t0
        ops = sorted({type(n.op).__name__ for fn in (predict, train)
                      for n in fn.maker.fgraph.toposort()})
        result["ops"] = ops
        result["conv_ops"] = [o for o in ops if "Conv" in o or "Corr" in o]
        result["conv_ops"] += [o for o in ops if "Gemm" in o or "Dot" in o]
        if name == "cuda-dnn" and "GpuDnnConv" not in ops:
            raise RuntimeError(f"no GpuDnnConv in the compiled graph: {result['conv_ops']}")

        result["stage"] = "correctness"
        t0 = time.perf_counter()
        prediction = np.asarray(predict(images))
        losses = [float(train(patches[i], labels[i])) for i in range(TRAIN_STEPS)]
        weights = get_weights()
        np.savez(os.path.join(work, f"{name}.npz"), prediction=prediction,
                 losses=np.asarray(losses), **weights)
        result["correctness_s"] = time.perf_counter() - t0
        result["losses"] = losses

        result["stage"] = "waiting"
        save()
        open(os.path.join(work, f"{name}.ready"), "w").close()
        go = os.path.join(work, f"{name}.go")
        while not os.path.exists(go):
            time.sleep(0.2)
        with open(go) as f:
            budget = float(f.read().strip() or 30)

        result["stage"] = "timing"
        timed_shape = TIMED_PRED_SHAPE["cuda" if name.startswith("cuda") else "cpu"]
        big = rng.uniform(0, 1, timed_shape).astype("float32")
        xb = rng.uniform(0, 1, (TIMED_TRAIN_BATCH, 1, PATCH, PATCH)).astype("float32")
        yb = rng.uniform(0, 1, (TIMED_TRAIN_BATCH, 1, PATCH - 2 * border,
                                PATCH - 2 * border)).astype("float32")
        t0 = time.perf_counter()
        set_lr(0.0)  # keep the weights fixed while timing
        predict(big)  # warm-up: first call of a new shape chooses algorithms
        train(xb, yb)
        result["warmup_s"] = time.perf_counter() - t0
        pred_s, n_pred = _median_time(lambda: np.asarray(predict(big)), 10, budget / 2)
        train_s, n_train = _median_time(lambda: train(xb, yb), 20, budget / 2)
        pixels = timed_shape[0] * timed_shape[2] * timed_shape[3]
        result["timing"] = {
            "predict_batch": list(timed_shape), "predict_s": pred_s, "predict_repeats": n_pred,
            "predict_mpix_per_s": pixels / pred_s / 1e6,
            "train_batch": [TIMED_TRAIN_BATCH, 1, PATCH, PATCH], "train_step_s": train_s,
            "train_repeats": n_train, "train_patches_per_s": TIMED_TRAIN_BATCH / train_s}
        result["ok"] = True
        result["stage"] = "done"
    except BaseException as exc:  # report everything, KeyboardInterrupt included
        import traceback
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()[-4000:]
    save()
    open(os.path.join(work, f"{name}.done"), "w").close()
    return 0 if result["ok"] else 1


# --------------------------------------------------------------- parent

def _library_versions(links):
    """cuDNN, nvrtc and driver versions through ctypes, in a subprocess (a broken
    library can abort the process that loads it)."""
    code = r"""
import ctypes, json, sys
libs = json.loads(sys.argv[1]); out = {}
def load(name):
    return ctypes.CDLL(libs[name]) if name in libs else None
try:
    cuda = load("cuda")
    if cuda is not None:
        v = ctypes.c_int(); cuda.cuDriverGetVersion(ctypes.byref(v)); out["cuda_driver_api"] = v.value
    nvrtc = load("nvrtc")
    if nvrtc is not None:
        a, b = ctypes.c_int(), ctypes.c_int(); nvrtc.nvrtcVersion(ctypes.byref(a), ctypes.byref(b))
        out["nvrtc"] = [a.value, b.value]
    cublas = load("cublas")
    if cublas is not None:
        v = ctypes.c_int(); cublas.cublasGetVersion_v2(None, ctypes.byref(v)); out["cublas"] = v.value
    cudnn = load("cudnn")
    if cudnn is not None:
        cudnn.cudnnGetVersion.restype = ctypes.c_size_t; out["cudnn_library"] = cudnn.cudnnGetVersion()
except Exception as exc:
    out["error"] = repr(exc)
print(json.dumps(out))
"""
    try:
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(links.libraries)],
                              capture_output=True, text=True, timeout=60)
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except Exception as exc:
        return {"error": repr(exc)}


def _rel(a, b):
    import numpy as np
    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _compare(work, name, reference):
    import numpy as np
    gpu_data, cpu_data = np.load(os.path.join(work, f"{name}.npz")), np.load(
        os.path.join(work, f"{reference}.npz"))
    pred, ref = gpu_data["prediction"], cpu_data["prediction"]
    out = {"prediction_rel_l2": _rel(pred, ref),
           "prediction_max_abs": float(np.max(np.abs(pred - ref))),
           "prediction_ref_max_abs": float(np.max(np.abs(ref))),
           "loss_rel": max(abs(a - b) / max(abs(b), 1e-30)
                           for a, b in zip(gpu_data["losses"], cpu_data["losses"])),
           "weights_rel_l2": {k: _rel(gpu_data[k], cpu_data[k]) for k in cpu_data.files
                              if k not in ("prediction", "losses")}}
    worst = max([out["prediction_rel_l2"], out["loss_rel"]] + list(out["weights_rel_l2"].values()))
    out["within_float32"] = worst < FLOAT32_REL
    out["prediction_ok"] = out["prediction_rel_l2"] < PRED_REL
    out["training_ok"] = out["loss_rel"] < TRAIN_REL and max(
        out["weights_rel_l2"].values()) < TRAIN_REL
    out["ok"] = out["prediction_ok"] and out["training_ok"]
    return out


def orchestrate(out_dir, deadline, configs=CONFIGS):
    _import_package()
    from gpu_setup import env as gpu_env
    from srcnn_theano import gpu

    started = time.time()
    work = os.environ.get("SRCNN_GPU_CHECK_WORK") or os.path.join(out_dir, "work")
    os.makedirs(work, exist_ok=True)
    report = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "ok": False,
              "tolerances": {"within_float32": FLOAT32_REL, "prediction_rel_l2": PRED_REL,
                             "training_rel": TRAIN_REL},
              "workload": {"arch": ARCH, "predict": list(PRED_SHAPE),
                           "train": [TRAIN_STEPS, TRAIN_BATCH, 1, PATCH, PATCH],
                           "timed_predict": {k: list(v) for k, v in TIMED_PRED_SHAPE.items()},
                           "timed_train_batch": TIMED_TRAIN_BATCH},
              "environment": {k: os.environ.get(k) for k in (
                  "THEANO_FLAGS", "LD_LIBRARY_PATH", "LIBRARY_PATH", "CPATH", "PYTHONPATH",
                  "NVIDIA_TF32_OVERRIDE")}}
    links_dir = os.environ.get("SRCNN_GPU_LINKS_DIR") or os.path.join(work, "links")
    links = gpu_env.make_library_links(links_dir)
    report["libraries"] = {"links": links.libraries, "missing": links.missing,
                           "cudnn_include": links.cudnn_include,
                           "cuda_include": links.cuda_include,
                           "cudnn_header_version": links.cudnn_version,
                           "cudnn_file_version": links.cudnn_file_version,
                           "versions": _library_versions(links)}
    lib_cudnn = report["libraries"]["versions"].get("cudnn_library")
    cudnn_ok = links.cudnn_usable and (lib_cudnn is None or lib_cudnn == links.cudnn_version)
    if not cudnn_ok:
        report["cudnn_problem"] = (f"cuDNN unusable: library {lib_cudnn}, headers "
                                   f"{links.cudnn_version} in {links.cudnn_include}")
    nvrtc, driver = (report["libraries"]["versions"].get(k) for k in ("nvrtc", "cuda_driver_api"))
    if nvrtc and driver and nvrtc[0] * 1000 + nvrtc[1] * 10 > driver:
        report["warning_ptx"] = (f"nvrtc {nvrtc} is newer than the driver's CUDA {driver}: "
                                 "the driver may reject its PTX (CUDA_ERROR_UNSUPPORTED_PTX_VERSION)")

    flags = {
        "cuda-dnn": gpu.flags_for("cuda", links if cudnn_ok else None),
        "cuda-corrmm": gpu.flags_for("cuda", None),
        "cpu": gpu.flags_for("cpu"),
        "cuda-project": gpu.flags_for("cuda", links if cudnn_ok else None),
        "cpu-project": gpu.flags_for("cpu"),
    }
    procs, logs = {}, {}
    for name in configs:
        env = dict(os.environ)
        compiledir = os.path.join(work, f"theano-{name}")
        env["THEANO_FLAGS"] = f"{flags[name]},base_compiledir={compiledir}"
        env["PYTHONUNBUFFERED"] = "1"
        for suffix in (".ready", ".go", ".done", ".json", ".npz"):
            path = os.path.join(work, name + suffix)
            if os.path.exists(path):
                os.remove(path)
        logs[name] = open(os.path.join(work, f"{name}.log"), "w")
        procs[name] = subprocess.Popen([sys.executable, "-m", "gpu_setup.check", "child", name,
                                        work], env=env, stdout=logs[name],
                                       stderr=subprocess.STDOUT, cwd=ROOT)
        print(f"[gpu_check] started {name}: THEANO_FLAGS={env['THEANO_FLAGS']}", flush=True)

    def state(name):
        if os.path.exists(os.path.join(work, f"{name}.done")) or procs[name].poll() is not None:
            return "done"
        if os.path.exists(os.path.join(work, f"{name}.ready")):
            return "ready"
        return "running"

    # Phase 1: compile and correctness, all together.
    reserve = 20.0 * len(configs)  # seconds kept for the timed phase
    while any(state(n) == "running" for n in configs) and time.time() < deadline - reserve:
        time.sleep(1)
    print("[gpu_check] phase 1 done after %.0f s: %s" % (
        time.time() - started, {n: state(n) for n in configs}), flush=True)
    # Phase 2: timing, one at a time (GPU first).
    for name in configs:
        if state(name) != "ready":
            continue
        left = deadline - time.time() - 10
        if left < 8:
            break
        waiting = sum(1 for n in configs if state(n) == "ready")
        budget = min(20.0, left / max(waiting, 1) - 5)
        with open(os.path.join(work, f"{name}.go"), "w") as f:
            f.write(str(budget))
        while state(name) != "done" and time.time() < deadline - 5:
            time.sleep(0.2)
    for name, proc in procs.items():
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        logs[name].close()

    results = {}
    for name in configs:
        path = os.path.join(work, f"{name}.json")
        if os.path.exists(path):
            with open(path) as f:
                results[name] = json.load(f)
        else:
            results[name] = {"name": name, "ok": False, "error": "no result (killed or crashed)"}
        with open(os.path.join(work, f"{name}.log")) as f:
            results[name]["log_tail"] = f.read()[-3000:]
    report["configs"] = results

    comparisons, speedups = {}, {}
    for name in configs:
        reference = CONFIGS[name][2]
        if reference is None:
            continue
        if not all(os.path.exists(os.path.join(work, f"{n}.npz")) for n in (name, reference)):
            comparisons[name] = {"ok": False, "reference": reference,
                                 "error": f"{name} or {reference} has no results"}
            continue
        comparisons[name] = dict(_compare(work, name, reference), reference=reference)
        t, ref_t = (results.get(n, {}).get("timing") for n in (name, reference))
        if t and ref_t:
            speedups[name] = {"vs": reference,
                              "predict": t["predict_mpix_per_s"] / ref_t["predict_mpix_per_s"],
                              "train": t["train_patches_per_s"] / ref_t["train_patches_per_s"]}
    report["comparison_vs_cpu"] = comparisons
    report["speedup_vs_cpu"] = speedups
    core = [n for n in configs if CONFIGS[n][1] == "conv2d"]
    project = [n for n in configs if CONFIGS[n][1] == "project"]

    def all_ok(names):
        return bool(names) and all(results[n].get("ok") for n in names) and all(
            comparisons[n]["ok"] for n in names if n in comparisons)
    report["ok"] = all_ok(core)
    report["project_ok"] = all_ok(project)
    report["elapsed_s"] = time.time() - started
    summary = [f"{n}: {'ok' if results[n].get('ok') else 'FAILED ' + str(results[n].get('error'))}"
               for n in configs]
    for name, c in comparisons.items():
        if "error" in c:
            summary.append(f"{name} vs {c['reference']}: {c['error']}")
            continue
        summary.append(f"{name} vs {c['reference']}: prediction rel {c['prediction_rel_l2']:.2e}, "
                       f"loss rel {c['loss_rel']:.2e}, within float32: {c['within_float32']} "
                       f"-> {'ok' if c['ok'] else 'MISMATCH'}")
    for name, s in speedups.items():
        summary.append(f"{name}: predict x{s['predict']:.1f}, train x{s['train']:.1f} vs {s['vs']}")
    report["summary"] = summary
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "gpu_check_result.json"), "w") as f:
        json.dump(report, f, indent=1, default=str)
    print("\n".join("[gpu_check] " + line for line in summary), flush=True)
    return 0 if report["ok"] else 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("orchestrate")
    p.add_argument("--out", required=True)
    p.add_argument("--deadline", type=float, help="epoch seconds to finish by")
    p.add_argument("--configs", default=",".join(CONFIGS))
    c = sub.add_parser("child")
    c.add_argument("name", choices=list(CONFIGS))
    c.add_argument("work")
    args = parser.parse_args(argv)
    if args.command == "child":
        return run_child(args.name, args.work)
    deadline = args.deadline or time.time() + 480
    configs = tuple(args.configs.split(","))
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown configurations {unknown}; known: {', '.join(CONFIGS)}")
    return orchestrate(args.out, deadline, configs)


if __name__ == "__main__":
    sys.exit(main())
