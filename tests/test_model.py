"""The Lasagne SRCNN against a direct scipy correlation of the same weights."""
import numpy as np
import pytest
import scipy.ndimage as ndi

from srcnn_theano.network.functions import compile_predict
from srcnn_theano.network.inference import Predictor, compiled_model
from srcnn_theano.network.model import ARCHITECTURES, SRCNN
from srcnn_theano.network.weights import Weights

from conftest import random_arrays

ARCH_935 = dict(ARCHITECTURES["9-3-5"], n1=6, n2=4, channels=1)


def reference_forward(x, arrays, mode):
    """(C, H, W) float64 -> (C', H', W'): scipy correlation layer by layer.

    ``mode`` is scipy's: 'nearest' = replicate, 'constant' = zeros, None = valid.
    """
    h = x.astype(np.float64)
    for i in (1, 2, 3):
        W, b = arrays[f"conv{i}.W"].astype(np.float64), arrays[f"conv{i}.b"].astype(np.float64)
        out = []
        for o in range(W.shape[0]):
            acc = sum(ndi.correlate(h[j], W[o, j], mode=mode or "constant") for j in range(W.shape[1]))
            if mode is None:  # valid: crop what the zero padding touched
                r = W.shape[2] // 2
                acc = acc[r:acc.shape[0] - r, r:acc.shape[1] - r]
            out.append(acc + b[o])
        h = np.stack(out)
        if i < 3:
            h = np.maximum(h, 0)
    return h


@pytest.mark.parametrize("padding,mode", [("replicate", "nearest"), ("same", "constant"), ("valid", None)])
def test_theano_equals_scipy_correlation(padding, mode):
    arrays = random_arrays(ARCH_935)
    model = SRCNN(**ARCH_935, padding=padding)
    model.set_weights(arrays)
    x = np.random.RandomState(1).rand(2, 1, 23, 19).astype("float32")
    y = compile_predict(model)(x)
    for n in range(2):
        ref = reference_forward(x[n], arrays, mode)
        assert y[n].shape == ref.shape
        np.testing.assert_allclose(y[n], ref, atol=2e-5, rtol=1e-5)


@pytest.mark.slow
def test_kernels_are_not_flipped():
    """An off-centre 1 in the first kernel must shift the image as a correlation does."""
    arch = dict(f1=3, f2=1, f3=1, n1=1, n2=1, channels=1)
    arrays = {"conv1.W": np.zeros((1, 1, 3, 3), "float32"), "conv1.b": np.zeros(1, "float32"),
              "conv2.W": np.ones((1, 1, 1, 1), "float32"), "conv2.b": np.zeros(1, "float32"),
              "conv3.W": np.ones((1, 1, 1, 1), "float32"), "conv3.b": np.zeros(1, "float32")}
    arrays["conv1.W"][0, 0, 0, 2] = 1.0   # top-right tap: out[i, j] = x[i - 1, j + 1]
    model = SRCNN(**arch, padding="valid")
    model.set_weights(arrays)
    x = np.arange(25, dtype="float32").reshape(1, 1, 5, 5)
    y = compile_predict(model)(x)[0, 0]
    assert np.array_equal(y, x[0, 0, 0:3, 2:5])


def test_output_layer_is_linear_and_shapes_follow_padding():
    model = SRCNN(**ARCHITECTURES["9-1-5"], padding="valid")
    assert model.border == 6 and model.output_size(33) == 21
    assert model.layers[-1].nonlinearity is not model.layers[0].nonlinearity
    arrays = random_arrays(dict(ARCHITECTURES["9-1-5"], channels=1))
    arrays["conv3.b"][:] = -5.0       # a linear output can go negative, a ReLU cannot
    model.set_weights(arrays)
    y = compile_predict(model)(np.zeros((1, 1, 33, 33), "float32"))
    assert y.shape == (1, 1, 21, 21) and (y < 0).all()


def test_presets_and_validation():
    for name, cfg in ARCHITECTURES.items():
        assert SRCNN.from_preset(name, padding="same").name == name
        assert cfg["n1"] == 64 and cfg["n2"] == 32
    with pytest.raises(ValueError):
        SRCNN(f1=8)
    with pytest.raises(ValueError):
        SRCNN(padding="reflect")
    with pytest.raises(ValueError):
        SRCNN.from_preset("9-9-9")


def test_init_std_and_he_init():
    paper = SRCNN(**ARCHITECTURES["9-1-5"], init_std=0.001, seed=0).get_weights()
    assert abs(paper["conv1.W"].std() - 0.001) < 1e-4 and not paper["conv1.b"].any()
    he = SRCNN(**ARCHITECTURES["9-1-5"], init_std=None, seed=0).get_weights()
    assert abs(he["conv1.W"].std() - np.sqrt(2 / 81)) < 0.01


def test_set_weights_rejects_wrong_shapes():
    model = SRCNN(**ARCH_935)
    arrays = random_arrays(ARCH_935)
    arrays["conv2.W"] = arrays["conv2.W"][:, :, :1, :1]
    with pytest.raises(ValueError, match="conv2.W"):
        model.set_weights(arrays)


def test_tiled_prediction_equals_untiled():
    arch = dict(ARCHITECTURES["9-1-5"], channels=1)
    w = Weights(random_arrays(arch, seed=3), arch)
    x = np.random.RandomState(2).rand(70, 53).astype("float32")
    whole = Predictor(w, tile=None)(x)
    tiled = Predictor(w, tile=16)(x)
    assert tiled.shape == (70, 53)
    np.testing.assert_allclose(tiled, whole, rtol=1e-5, atol=1e-5)
    assert compiled_model(arch)[1] is compiled_model(arch)[1]   # compiled once, shared


def test_gpu_devices_use_theano_conv2d_for_cudnn(monkeypatch):
    """On device=cuda the layers use conv2d (which Theano maps to GpuDnnConv); gemm on the CPU."""
    import srcnn_theano.network.model as M

    assert SRCNN(**ARCH_935).impl == "gemm"
    monkeypatch.setattr(M, "on_gpu", lambda: True)
    model = SRCNN(**ARCH_935)
    assert model.impl == "corrmm" and all(layer.impl == "corrmm" for layer in model.layers)


# --------------------------------------------------------------------------
# The TPAMI ablation networks: any f1-f2-f3 with any n1, n2
# --------------------------------------------------------------------------

def test_parse_architecture_any_kernels_and_filters():
    from srcnn_theano.network.model import parse_architecture

    assert parse_architecture("11-1-7", "128,64") == dict(f1=11, f2=1, f3=7, n1=128, n2=64)
    assert parse_architecture("9-5-5") == dict(f1=9, f2=5, f3=5, n1=64, n2=32)
    assert parse_architecture("13-3-9", (32, 16)) == dict(f1=13, f2=3, f3=9, n1=32, n2=16)
    for bad, filters in (("9-2-5", None), ("9-1", None), ("a-b-c", None), ("9-1-5", "64"),
                         ("9-1-5", "64,0"), ("9-1-5", "x,y"), ("-1-1-5", None)):
        with pytest.raises(ValueError):
            parse_architecture(bad, filters)


def test_ablation_network_builds_and_equals_scipy():
    """11-1-7 with 5,3 filters: the Theano graph against the scipy correlation, every padding."""
    arch = dict(f1=11, f2=1, f3=7, n1=5, n2=3, channels=1)
    model = SRCNN.from_spec("11-1-7", "5,3", padding="valid")
    assert model.name == "11-1-7" and model.border == 8 and model.output_size(33) == 17
    assert model.get_weights()["conv1.W"].shape == (5, 1, 11, 11)
    assert model.get_weights()["conv3.W"].shape == (1, 3, 7, 7)
    arrays = random_arrays(arch, seed=4)
    model.set_weights(arrays)
    x = np.random.RandomState(5).rand(1, 1, 25, 22).astype("float32")
    y = compile_predict(model)(x)
    np.testing.assert_allclose(y[0], reference_forward(x[0], arrays, None), atol=2e-5, rtol=1e-5)


def test_ablation_mat_import(tmp_path):
    """An authors'-format .mat of 11-1-7 with 128/64 filters loads as that network."""
    import scipy.io

    from srcnn_theano.network.weights import load

    rng = np.random.RandomState(0)
    mat = {"weights_conv1": rng.rand(121, 128), "biases_conv1": rng.rand(128, 1),
           "weights_conv2": rng.rand(128, 64), "biases_conv2": rng.rand(64, 1),   # 1x1, squeezed
           "weights_conv3": rng.rand(64, 49), "biases_conv3": rng.rand(1, 1)}
    path = str(tmp_path / "x3.mat")
    scipy.io.savemat(path, mat)
    w = load(path)
    assert w.architecture == dict(f1=11, f2=1, f3=7, n1=128, n2=64, channels=1) and w.scale == 3
    assert w.name == "11-1-7"
    k = w.arrays["conv3.W"][0, 5]
    assert np.array_equal(k, np.float32(mat["weights_conv3"][5].reshape(7, 7, order="F")))
