"""The fast paths compute what the reference computes.

* :func:`srcnn_theano.network.model.corr2d_nhwc` (every strategy, every padding, gradients)
  against scipy's float64 correlation;
* the ``gemm`` SRCNN graph against the ``corrmm`` one (Theano's CorrMM):
  forward for every padding, gradients and SGD updates, tiled prediction;
* the BLAS choice of :mod:`srcnn_theano.backend` (scipy's bundled OpenBLAS,
  or numpy's C API fallback) and Theano's OpenMP give the same numbers;
* ``python -m srcnn_theano bench`` prints its JSON as the last line;
* ``benchmarks/compare_pytorch.py`` starts ``benchmarks/theano_worker.py``
  and gets timings from it.

Tests that compile whole graphs or start Python processes are marked
``slow`` (``pytest -m 'not slow'`` skips them).
"""
import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import zlib

import numpy as np
import pytest
import scipy.ndimage as ndi

from srcnn_theano import backend, blas
from srcnn_theano.backend import T, theano
from srcnn_theano.network.functions import Trainer, compile_predict
from srcnn_theano.network.inference import Predictor
from srcnn_theano.network.model import ARCHITECTURES, SRCNN, corr2d_nhwc
from srcnn_theano.network.weights import Weights

from conftest import REPO, random_arrays as shared_random_arrays



def scipy_corr(x, w, pad):
    """x (N, C, H, W), w (O, C, f, f) -> (N, O, H', W') float64 correlation."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    r = w.shape[2] // 2
    out = []
    for n in range(x.shape[0]):
        planes = []
        for o in range(w.shape[0]):
            acc = sum(ndi.correlate(x[n, c], w[o, c], mode="constant") for c in range(x.shape[1]))
            if pad == "valid":
                acc = acc[r:acc.shape[0] - r, r:acc.shape[1] - r]
            planes.append(acc)
        out.append(np.stack(planes))
    return np.stack(out)


@pytest.mark.parametrize("strategy,shape", [
    ("dot", (4, 3, 1, 1)),
    ("im2col", (4, 1, 3, 3)),
    ("im2col", (3, 2, 5, 5)),
    ("im2col", (3, 9, 3, 3)),
    ("tapsum", (1, 5, 5, 5)),
    ("tapsum", (2, 3, 3, 3)),
    ("direct", (1, 32, 5, 5)),     # conv3: 16-lane sums only, groups of 8 pixels and fewer
    ("direct", (2, 20, 3, 3)),     # k*C = 60: lanes and a scalar tail
    ("shift", (9, 10, 3, 3)),
    ("shift", (2, 3, 5, 5)),
    ("auto", (16, 12, 5, 5)),
])
@pytest.mark.parametrize("pad,edge", [("same", False), ("valid", False), ("same", True)])
def test_corr2d_nhwc_equals_scipy_and_its_gradients(strategy, shape, pad, edge):
    # A seed of its own per case, the same in every run (hash() of a str is not).
    rng = np.random.RandomState(zlib.crc32(repr((strategy, shape, pad, edge)).encode()))
    o, c, f, _ = shape
    x = rng.rand(2, c, 11, 8).astype("float32")
    w = rng.randn(*shape).astype("float32")
    xv, wv = T.tensor4(), T.tensor4()
    y = corr2d_nhwc(xv.dimshuffle(0, 2, 3, 1), wv, shape, pad, edge=edge,
                    strategy=strategy).dimshuffle(0, 3, 1, 2)
    got = theano.function([xv, wv], y)(x, w)
    r = f // 2
    xr = np.pad(x, ((0, 0), (0, 0), (r, r), (r, r)), mode="edge") if edge else x
    ref = scipy_corr(xr, w, "valid" if edge else pad)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    # gradients of sum(y * g) with respect to x and W, against the same sums in numpy
    g = rng.randn(*ref.shape).astype("float32")
    gx, gw = theano.function([xv, wv], theano.grad(T.sum(y * g), [xv, wv]))(x, w)
    eps = 1e-2
    for arr, grad, idx in ((x, gx, (1, c - 1, 5, 0)), (w, gw, (o - 1, 0, f - 1, f // 2))):
        up, down = arr.copy(), arr.copy()
        up[idx] += eps
        down[idx] -= eps
        args = (up, w) if arr is x else (x, up)
        args_d = (down, w) if arr is x else (x, down)
        def loss(a, b):
            ar = np.pad(a, ((0, 0), (0, 0), (r, r), (r, r)), mode="edge") if edge else a
            return float((scipy_corr(ar, b, "valid" if edge else pad) * g).sum())
        numeric = (loss(*args) - loss(*args_d)) / (2 * eps)
        assert grad[idx] == pytest.approx(numeric, rel=1e-2, abs=1e-2)


def random_arrays(arch, seed=0, scale=0.3):
    return shared_random_arrays(arch, seed, std=scale, fan_in=True)


def both_models(arch, padding, arrays):
    fast = SRCNN(**arch, padding=padding)
    ref = SRCNN(**arch, padding=padding, impl="corrmm")
    assert fast.impl == "gemm" and all(layer.impl == "gemm" for layer in fast.layers)
    fast.set_weights(arrays)
    ref.set_weights(arrays)
    return fast, ref


@pytest.mark.parametrize("padding", ["same", "valid", "replicate"])
@pytest.mark.parametrize("arch", [dict(ARCHITECTURES["9-1-5"], channels=1),
                                  dict(ARCHITECTURES["9-3-5"], n1=8, n2=6, channels=3)],
                         ids=["9-1-5", "9-3-5-rgb"])
def test_gemm_graph_equals_corrmm_forward(arch, padding):
    arrays = random_arrays(arch, seed=1)
    fast, ref = both_models(arch, padding, arrays)
    x = np.random.RandomState(2).rand(2, arch["channels"], 29, 24).astype("float32")
    a, b = compile_predict(fast)(x), compile_predict(ref)(x)
    side = (29 - 2 * fast.border, 24 - 2 * fast.border) if padding == "valid" else (29, 24)
    assert a.shape == b.shape == (2, arch["channels"]) + side
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6)
    assert np.abs(b).max() > 0.01  # not comparing zeros


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_gemm_graph_equals_corrmm_training(padding):
    arch = dict(ARCHITECTURES["9-1-5"], n1=16, n2=8, channels=1)
    arrays = random_arrays(arch, seed=3, scale=1.0)
    fast, ref = both_models(arch, padding, arrays)
    rng = np.random.RandomState(4)
    x = rng.rand(5, 1, 21, 21).astype("float32")
    y = rng.rand(5, 1, 21 - 2 * fast.border * (padding == "valid"),
                 21 - 2 * fast.border * (padding == "valid")).astype("float32")
    losses = {}
    for name, model in (("fast", fast), ("ref", ref)):
        tr = Trainer(model, optimizer="sgd", learning_rate=0.002, momentum=0.9)
        losses[name] = [float(tr.train(x, y)) for _ in range(3)] + [float(tr.val(x, y))]
    np.testing.assert_allclose(losses["fast"], losses["ref"], rtol=1e-5)
    assert losses["fast"][-1] < losses["fast"][0]  # the updates did something
    wf, wr = fast.get_weights(), ref.get_weights()
    for k in wr:
        assert not np.array_equal(wr[k], arrays[k]), k  # every parameter moved
        np.testing.assert_allclose(wf[k], wr[k], rtol=1e-4, atol=1e-6, err_msg=k)


def _op_names(fn):
    return [type(node.op).__name__ for node in fn.maker.fgraph.toposort()]


@pytest.mark.parametrize("arch_name,masked,backdot", [("9-1-5", 1, 1), ("9-3-5", 2, 0)])
def test_training_graph_fuses_relu_gradients_and_the_1x1_layer(arch_name, masked, backdot):
    """Each hidden ReLU's gradient is applied inside the next layer's input-gradient op
    (BandedCorrMasked), not by a separate pass over the activation; with a 1x1 middle
    layer that op, its kernel gradient and conv1's are one BandedBackDot, and its
    forward pass runs on conv1's bands (BandedCorrDot, keeping conv1's output). The numbers
    are those of Theano's CorrMM graph (test_gemm_graph_equals_corrmm_training)."""
    arch = dict(ARCHITECTURES[arch_name], n1=16, n2=8, channels=1)
    fast, _ = both_models(arch, "same", random_arrays(arch, seed=3))
    train = Trainer(fast, optimizer="sgd", learning_rate=0.002, momentum=0.9).train
    nodes = train.maker.fgraph.toposort()
    names = [type(node.op).__name__ for node in nodes]
    assert names.count("BandedCorrMasked") == masked, names
    assert names.count("BandedBackDot") == backdot, names
    assert names.count("BandedCorrGradW") == 3 - 2 * backdot, names
    # a 1x1 layer's forward pass is made from each band of conv1's output, which is kept
    assert names.count("BandedCorrDot") == backdot, names
    switches = [n for n in nodes if isinstance(n.op, T.Elemwise) and "Switch" in str(n.op)]
    assert not switches, switches


FUSING_REWRITES = ("srcnn_fuse_banded_dot", "srcnn_fuse_relu_mask", "srcnn_fuse_backward_dot")


@pytest.mark.parametrize("arch_name,padding,fused", [
    ("9-1-5", "same", True), ("9-1-5", "valid", True), ("9-1-5", "replicate", True),
    ("9-3-5", "same", True),
    ("9-3-5", "replicate", False),   # the edge padding's gradient sits between: nothing to fuse
])
def test_fused_training_graph_equals_the_separate_ops_over_several_bands(arch_name, padding, fused):
    """The loss and every gradient of the fused graph (BandedCorrDot keeping conv1's output,
    BandedCorrMasked, BandedBackDot) equal those of the graph without the fusing rewrites,
    on images of several bands each, to float32 rounding."""
    arch = dict(ARCHITECTURES[arch_name], n1=16, n2=8, channels=1)
    model = SRCNN(**arch, padding=padding)
    model.set_weights(random_arrays(arch, seed=9))
    x = np.random.RandomState(10).rand(2, 1, 160, 70).astype("float32")
    loss = T.sum(T.sqr(model.get_output()))
    outs = [loss] + theano.grad(loss, model.params)
    plain = theano.compile.mode.get_default_mode().excluding(*FUSING_REWRITES)
    fused_fn = theano.function([model.input_var], outs)
    plain_fn = theano.function([model.input_var], outs, mode=plain)
    fused_ops = {type(n.op).__name__ for n in fused_fn.maker.fgraph.toposort()}
    plain_ops = {type(n.op).__name__ for n in plain_fn.maker.fgraph.toposort()}
    fused_kinds = {"BandedCorrDot", "BandedCorrMasked", "BandedBackDot"}
    assert not plain_ops & fused_kinds and bool(fused_ops & fused_kinds) == fused, fused_ops
    for a, b in zip(fused_fn(x), plain_fn(x)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())
        assert np.abs(b).max() > 0


def _numpy_srcnn(x, arrays):
    """float64 forward of a 'same'-padded SRCNN (x (N, C, H, W)), correlations by scipy."""
    h = x
    for i in (1, 2, 3):
        w, b = arrays[f"conv{i}.W"].astype(np.float64), arrays[f"conv{i}.b"].astype(np.float64)
        h = scipy_corr(h, w, "same") + b[None, :, None, None]
        if i < 3:
            h = np.maximum(h, 0)
    return h


@pytest.mark.parametrize("arch_name", ["9-1-5", "9-3-5", "9-5-5"])
def test_training_gradients_match_finite_differences(arch_name):
    """The compiled training graph's gradients (every fusing rewrite on) against central
    differences of a float64 numpy forward, for a weight of every layer and conv1's bias."""
    arch = dict(ARCHITECTURES[arch_name], n1=6, n2=5, channels=1)
    arrays = random_arrays(arch, seed=11, scale=1.0)
    model = SRCNN(**arch, padding="same")
    model.set_weights(arrays)
    rng = np.random.RandomState(12)
    x = rng.rand(2, 1, 14, 13).astype("float32")
    g = rng.randn(2, 1, 14, 13)
    loss = T.sum(model.get_output() * g.astype("float32"))
    grads = dict(zip([p.name for p in model.params],
                     theano.function([model.input_var], theano.grad(loss, model.params))(x)))
    eps = 1e-6   # float64 differences; small enough that no ReLU changes side
    for key, idx in (("conv1.W", (2, 0, 4, 3)), ("conv1.b", (1,)), ("conv2.W", (3, 2, 0, 0)),
                     ("conv3.W", (0, 4, 1, 2))):
        up, down = dict(arrays), dict(arrays)
        up[key], down[key] = arrays[key].astype(np.float64), arrays[key].astype(np.float64)
        up[key][idx] += eps
        down[key][idx] -= eps
        numeric = ((_numpy_srcnn(x, up) * g).sum() - (_numpy_srcnn(x, down) * g).sum()) / (2 * eps)
        assert grads[key][idx] == pytest.approx(numeric, rel=2e-3, abs=2e-3), key


def test_gradients_equal_for_every_parameter():
    arch = dict(ARCHITECTURES["9-5-5"], n1=6, n2=5, channels=2)
    arrays = random_arrays(arch, seed=5)
    fast, ref = both_models(arch, "same", arrays)
    x = np.random.RandomState(6).rand(3, 2, 13, 15).astype("float32")
    grads = []
    for model in (fast, ref):
        loss = T.sum(T.sqr(model.get_output()))
        grads.append(theano.function([model.input_var], theano.grad(loss, model.params))(x))
    for gf, gr in zip(*grads):
        np.testing.assert_allclose(gf, gr, rtol=1e-4, atol=1e-5)


def test_tiled_gemm_prediction_equals_whole_corrmm():
    arch = dict(ARCHITECTURES["9-1-5"], channels=1)
    arrays = random_arrays(arch, seed=7)
    w = Weights(arrays, arch)
    x = np.random.RandomState(8).rand(75, 61).astype("float32")
    _, ref = both_models(arch, "replicate", arrays)
    want = compile_predict(ref)(x[None, None])[0, 0]
    for tile in (None, 16, 40):
        np.testing.assert_allclose(Predictor(w, tile=tile)(x), want, rtol=1e-5, atol=2e-6)


def test_backend_links_the_best_pip_installed_blas():
    """scipy-openblas32 (a requirement) first, else the OpenBLAS scipy's wheel bundles; MKL
    (a requirement on x86-64) instead where the probe times it faster."""
    if "ldflags" in getattr(backend, "user_theano_flags", ""):
        pytest.skip("THEANO_FLAGS chooses the BLAS")
    pypi, bundled, mkl = blas.pypi_openblas(), blas.bundled_openblas(), blas.mkl_rt()
    if mkl is not None and theano.config.blas__ldflags == blas.file_ldflags(mkl):
        assert backend.blas_info()["library"] == "mkl"
    elif pypi is not None:
        assert theano.config.blas__ldflags == blas.pypi_openblas_ldflags(pypi)
        assert "-Dsgemm_=scipy_sgemm_" in theano.config.blas__ldflags.split()
        assert backend.blas_info()["library"] == "scipy-openblas32"
    elif bundled is not None:
        assert os.path.basename(bundled).startswith("libopenblas")
        assert theano.config.blas__ldflags == blas.file_ldflags(bundled)
        assert backend.blas_info()["library"] == "scipy-bundled-openblas"
    else:
        pytest.skip("no pip-installed BLAS here")
    a = np.random.RandomState(0).rand(70, 90).astype("float32")
    b = np.random.RandomState(1).rand(90, 50).astype("float32")
    x, y = T.fmatrix(), T.fmatrix()
    f = theano.function([x, y], T.dot(x, y))
    assert any(type(n.op).__name__ in ("Dot22", "Gemm") for n in f.maker.fgraph.toposort())
    np.testing.assert_allclose(f(a, b), a.astype(np.float64) @ b, rtol=1e-5)


_SUBPROCESS_CHECK = """
import numpy as np, json
from srcnn_theano.backend import theano
from srcnn_theano.backend import blas_info
from srcnn_theano.network.functions import compile_predict
from srcnn_theano.network.model import SRCNN
out = {}
x = np.random.RandomState(0).rand(1, 1, 300, 280).astype('float32')
for impl in ('gemm', 'corrmm'):
    m = SRCNN.from_preset('9-1-5', padding='same', init_std=None, seed=0,
                          impl=None if impl == 'gemm' else impl)
    out[impl] = compile_predict(m)(x)
print(json.dumps({'diff': float(np.abs(out['gemm'] - out['corrmm']).max()),
                  'scale': float(np.abs(out['corrmm']).max()),
                  'openmp': bool(theano.config.openmp), 'blas': blas_info()['library']}))
"""


def _bundled_flags():
    path = blas.bundled_openblas()
    return "blas__ldflags=" + blas.file_ldflags(path) if path else None


def _pypi_flags():
    path = blas.pypi_openblas()
    return "blas__ldflags=" + blas.pypi_openblas_ldflags(path) if path else None


def _mkl_flags():
    path = blas.mkl_rt()
    return "blas__ldflags=" + blas.file_ldflags(path) if path else None


@pytest.mark.slow
@pytest.mark.parametrize("flags,blas,openmp", [
    ("blas__ldflags=", "numpy-c-api", False),                    # the no-BLAS fallback
    (_bundled_flags(), "scipy-bundled-openblas", False),         # without scipy-openblas32
    (_pypi_flags(), "scipy-openblas32", False),                  # where MKL is slower
    (_mkl_flags(), "mkl", False),                                # where MKL is faster
    ("openmp=True,openmp_elemwise_minsize=1000", None, True),    # OpenMP (pragma fix) on
], ids=["numpy-c-api", "scipy-bundled", "scipy-openblas32", "mkl", "openmp"])
def test_fallback_blas_and_openmp_give_the_same_numbers(flags, blas, openmp):
    if flags is None:
        pytest.skip("that BLAS is not installed here")
    env = dict(os.environ, THEANO_FLAGS=flags, PYTHONPATH=REPO)
    res = subprocess.run([sys.executable, "-c", _SUBPROCESS_CHECK], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["openmp"] is openmp
    if blas:
        assert got["blas"] == blas
    assert got["scale"] > 0.01
    assert got["diff"] < 1e-5 * max(1.0, got["scale"])


@pytest.mark.slow
def test_bench_json_is_the_last_line():
    env = dict(os.environ, PYTHONPATH=REPO)
    res = subprocess.run([sys.executable, "-m", "srcnn_theano", "bench", "--size", "40",
                          "--batch", "4", "--patch", "17", "--repeats", "2", "--warmup", "1",
                          "--json"], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for key in ("predict_s", "train_step_s", "predict_gflops", "train_gflops", "blas", "cpu"):
        assert key in out, key
    assert out["predict_s"] > 0 and out["train_step_s"] > 0
    assert out["size"] == 40 and out["batch"] == 4 and out["patch"] == 17
    assert out["predict_gflop"] == pytest.approx(2 * 40 * 40 * (64 * 81 + 32 * 64 + 32 * 25) / 1e9)
    assert out["sgemm_gflops"] > 0
    assert out["predict_sgemm_fraction"] == pytest.approx(
        out["predict_gflops"] / out["sgemm_gflops"], abs=1e-3)


@pytest.mark.slow
def test_bench_any_architecture():
    env = dict(os.environ, PYTHONPATH=REPO)
    res = subprocess.run([sys.executable, "-m", "srcnn_theano", "bench", "--arch", "9-3-5",
                          "--filters", "16,8", "--size", "24", "--batch", "2", "--patch", "13",
                          "--repeats", "1", "--warmup", "0", "--json"], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["architecture"] == "9-3-5" and out["filters"] == "16,8"
    macs = 16 * 81 + 8 * 16 * 9 + 8 * 25
    assert out["predict_gflop"] == pytest.approx(2 * 24 * 24 * macs / 1e9)
    assert out["train_step_gflop"] == pytest.approx(
        2 * 2 * 13 * 13 * (2 * 16 * 81 + 3 * 8 * 16 * 9 + 3 * 8 * 25) / 1e9)


def _load_compare_pytorch():
    path = os.path.join(REPO, "benchmarks", "compare_pytorch.py")
    spec = importlib.util.spec_from_file_location("compare_pytorch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_pytorch_rates_and_speed_file():
    """GFLOP/s are the worker's FLOPs over the median time, each a fraction of the sgemm
    rate timed in the same run; the speed file it writes is one read_speed accepts."""
    from srcnn_theano.apps.plots import read_speed
    from srcnn_theano.apps.tables import speed_markdown

    cp = _load_compare_pytorch()

    class FakeWorker:
        def __init__(self, label, times, facts):
            self.label, self.times, self.facts = label, times, facts

    theano_w = FakeWorker("theano-gemm", {"predict": [0.02, 0.03, 0.025], "train": [0.01, 0.012, 0.011],
                                          "sgemm": [0.05, 0.04, 0.06]},
                          {"predict_gflop": 5.0, "train_step_gflop": 2.2, "sgemm_flop": 20e9,
                           "cpu": {"cores": 2, "model": "Some CPU", "simd": "avx2+fma", "mhz": 3000.0},
                           "blas": {"library": "openblas"}, "tile": 512})
    torch_w = FakeWorker("pytorch", {"predict": [0.05] * 3, "train": [0.022] * 3},
                         {"torch": "2.13.0", "threads": 2})
    workers = [theano_w, torch_w]
    assert cp.sgemm_rate(workers) == pytest.approx(400.0)
    rows = cp.summarize(workers, None, "9-5-5")
    predict = next(r for r in rows if r["what"] == "predict" and r["impl"] == "theano-gemm")
    assert predict["gflops"] == pytest.approx(200.0)
    assert predict["sgemm_fraction"] == pytest.approx(0.5)
    assert predict["ratio_vs_pytorch"] == pytest.approx(0.5)
    args = argparse.Namespace(repeats=3, size=512, batch=64, patch=33, cpu=None, out="speed.json")
    data = cp.speed_file({"9-5-5": (rows, cp.sgemm_rate(workers), workers)}, args)
    assert data["cpu"] == "2-core Some CPU (avx2+fma, 3.0 GHz)"
    (row,) = data["rows"]
    assert row["predict_ms"] == 25.0 and row["pytorch_train_step_ms"] == 22.0
    assert row["train_gflops"] == pytest.approx(200.0)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "speed.json")
        with open(path, "w") as f:
            json.dump(data, f)
        table = speed_markdown(read_speed(path))
    assert "| 9-5-5 | 25.0 ms | 50.0 ms | 0.50 | 200 | 50% | 11.0 ms | 22.0 ms | 0.50 | 200 | 50% |" in table


@pytest.mark.slow
def test_compare_pytorch_runs_the_theano_worker():
    """The coordinator's command starts benchmarks/theano_worker.py, which answers
    ``ready`` with its facts, one timing per command, and exits on ``quit``."""
    cp = _load_compare_pytorch()
    args = argparse.Namespace(size=40, batch=4, patch=17, warmup=1, tile="24", filters="8,6")
    env = dict(os.environ, PYTHONPATH=REPO)
    w = cp.Worker("theano-gemm", cp.theano_worker_cmd(sys.executable, args, "gemm", arch="9-3-5"),
                  env)
    watchdog = threading.Timer(600, w.proc.kill)  # a silent worker fails, not hangs, the test
    watchdog.daemon = True
    watchdog.start()
    try:
        facts = w.wait_ready()
        times = [w.run("predict"), w.run("train"), w.run("predict"), w.run("sgemm")]
    finally:
        w.close()
        watchdog.cancel()
    assert w.proc.returncode == 0
    assert facts["size"] == 40 and facts["tile"] == 24 and facts["impl"] == "gemm"
    assert facts["predict_gflop"] == pytest.approx(2 * 40 * 40 * (8 * 81 + 6 * 8 * 9 + 6 * 25) / 1e9)
    assert facts["sgemm_flop"] == 2 * 2048 ** 3
    assert facts["batch"] == 4 and facts["patch"] == 17
    assert facts["blas"]["library"] and facts["cpu"]["cores"] >= 1
    assert all(t > 0 for t in times)
    assert len(w.times["predict"]) == 2 and len(w.times["train"]) == 1


def test_malloc_tuning_is_on_by_default_and_can_be_turned_off():
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    assert backend.malloc_tuned is True
    env = dict(os.environ, SRCNN_THEANO_MALLOPT="0", PYTHONPATH=REPO)
    res = subprocess.run([sys.executable, "-c", "import srcnn_theano.backend as b; "
                          "print(b.malloc_tuned)"], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split()[-1] == "False"


def test_bias_gradient_comes_out_of_the_weight_gradient_op():
    """conv1's bias is added inside the banded op, and its gradient is summed by the
    weight-gradient op while each band is in the cache (no separate sum over pixels)."""
    model = SRCNN(**dict(ARCHITECTURES["9-1-5"], channels=1), padding="same")
    loss = T.sum(model.get_output())
    g_b1 = theano.grad(loss, model.layers[0].b)
    f = theano.function([model.input_var], g_b1)
    ops = [type(n.op).__name__ for n in f.maker.fgraph.toposort()]
    assert "Sum" not in ops and "BandedCorrGradW" in ops
    x = np.random.RandomState(0).rand(2, 1, 12, 10).astype("float32")
    ref = SRCNN(**dict(ARCHITECTURES["9-1-5"], channels=1), padding="same", impl="corrmm")
    ref.set_weights(model.get_weights())
    g_ref = theano.function([ref.input_var], theano.grad(T.sum(ref.get_output()),
                                                         ref.layers[0].b))(x)
    np.testing.assert_allclose(f(x), g_ref, rtol=1e-4, atol=1e-6)


def test_fast_graph_is_small():
    """One node per shift: few nodes, so compiling and loading from the cache is quick."""
    model = SRCNN(**dict(ARCHITECTURES["9-1-5"], channels=1), padding="same")
    f = compile_predict(model)
    assert len(f.maker.fgraph.apply_nodes) < 40
    tr = Trainer(model)
    assert len(tr.train.maker.fgraph.apply_nodes) < 150


def test_band_loops_run_without_the_gil():
    """The banded ops run their bands (plain memory work and BLAS calls) between
    Py_BEGIN/END_ALLOW_THREADS, with no Python API call inside, so that upscale's
    helper thread prepares and finishes tiles meanwhile."""
    from srcnn_theano.network.banded_corr import BandedCorr, BandedCorrGradW

    x, w, b = T.tensor4(dtype="float32"), T.matrix(dtype="float32"), T.vector(dtype="float32")
    for op, args in ((BandedCorr(9, 4, relu=True), (x, w, b)), (BandedCorrGradW(5, 2), (x, x))):
        node = op.make_node(*args)
        outs = ["o%d" % i for i in range(len(node.outputs))]
        code = op.c_code(node, "n", ["i%d" % i for i in range(len(args))], outs, {"fail": "FAIL;"})
        before, rest = code.split("Py_BEGIN_ALLOW_THREADS")
        inside, after = rest.split("Py_END_ALLOW_THREADS")
        assert "_run(" in inside
        assert not re.search(r"\bPy[A-Z_]", inside) and "FAIL" not in inside
