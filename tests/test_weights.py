"""Weight files: the project's .npz and the authors' column-major .mat layout."""
import numpy as np
import pytest
import scipy.io

from srcnn_theano.network import weights as W
from srcnn_theano.errors import SRCNNError

from conftest import authors_model


def synthetic_mat(f1=9, f2=3, f3=5, n1=4, n2=2):
    rng = np.random.RandomState(0)
    return {"weights_conv1": rng.rand(f1 * f1, n1), "biases_conv1": rng.rand(n1, 1),
            "weights_conv2": rng.rand(n1, f2 * f2, n2), "biases_conv2": rng.rand(n2, 1),
            "weights_conv3": rng.rand(n2, f3 * f3), "biases_conv3": rng.rand(1, 1)}


def test_mat_kernels_are_column_major_reshapes():
    mat = synthetic_mat()
    a = W.mat_to_arrays(mat)
    # MATLAB: reshape(weights_conv1(:, i), 9, 9) -> element (r, c) is entry c * 9 + r.
    for i in range(4):
        k = a["conv1.W"][i, 0]
        for r, c in [(0, 1), (2, 7), (8, 0)]:
            assert k[r, c] == np.float32(mat["weights_conv1"][c * 9 + r, i])
    # reshape(weights_conv2(j, :, i), 3, 3) is the kernel from input j to output i.
    assert np.array_equal(a["conv2.W"][1, 3], np.float32(mat["weights_conv2"][3, :, 1].reshape(3, 3, order="F")))
    assert np.array_equal(a["conv3.W"][0, 1], np.float32(mat["weights_conv3"][1].reshape(5, 5, order="F")))
    assert a["conv3.b"].shape == (1,) and a["conv1.b"].shape == (4,)
    assert W.architecture_of(a) == dict(f1=9, f2=3, f3=5, n1=4, n2=2, channels=1)


def test_mat_with_squeezed_1x1_layer():
    mat = synthetic_mat(f2=1)
    mat["weights_conv2"] = mat["weights_conv2"][:, 0, :]      # (n1, n2), as MATLAB may save it
    assert W.mat_to_arrays(mat)["conv2.W"].shape == (2, 4, 1, 1)


@pytest.mark.parametrize("breakage", ["missing", "not_square", "inconsistent"])
def test_mat_of_wrong_shape_is_a_user_error(tmp_path, breakage):
    mat = synthetic_mat()
    if breakage == "missing":
        del mat["biases_conv2"]
    elif breakage == "not_square":
        mat["weights_conv1"] = mat["weights_conv1"][:80]
    else:
        mat["weights_conv3"] = mat["weights_conv3"][:1]
    path = tmp_path / "x3.mat"
    scipy.io.savemat(path, mat)
    with pytest.raises(SRCNNError):
        W.load(str(path))


def test_authors_model_loads_with_scale_from_file_name():
    w = W.load(authors_model("9-1-5(91 images)", 3))
    assert w.architecture == dict(f1=9, f2=1, f3=5, n1=64, n2=32, channels=1) and w.scale == 3
    w.check_scale(3)
    with pytest.raises(SRCNNError, match="x3, not x2"):
        w.check_scale(2)


def test_npz_round_trip_keeps_arrays_and_metadata(tmp_path):
    arrays = W.mat_to_arrays(synthetic_mat())
    path = str(tmp_path / "w.npz")
    W.save(path, W.Weights(arrays, W.architecture_of(arrays), 3, {"how": "test"}))
    back = W.load(path)
    assert back.scale == 3 and back.provenance == {"how": "test"} and back.name == "9-3-5"
    for k in arrays:
        assert np.array_equal(back.arrays[k], arrays[k])
    assert not list(tmp_path.glob(".tmp-*"))


def test_bad_weights_files_are_user_errors(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(SRCNNError):
        W.load(str(junk))
    with pytest.raises(SRCNNError, match="no such"):
        W.load(str(tmp_path / "missing.npz"))
    arrays = W.mat_to_arrays(synthetic_mat())
    arrays["conv2.b"] = arrays["conv2.b"][:1]
    with pytest.raises(SRCNNError, match="inconsistent"):
        W.architecture_of(arrays)
