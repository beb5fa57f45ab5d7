"""export: the ONNX file in onnxruntime and the safetensors file by an independent correlation,
both against the Theano predictor on real images (Set5 Y, bicubic-enlarged, odd sizes), for the
shipped models, every authors' model and a training run's weights; the command line; the docs
example (docs/export.md), run as it is written.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file
from scipy.signal import correlate2d

from srcnn_theano.apps.export import export, format_of, metadata, onnx_model
from srcnn_theano.errors import SRCNNError
from srcnn_theano.image.imresize import degrade, imresize
from srcnn_theano.image.io import read_image, write_image
from srcnn_theano.image.units import from_float, to_float
from srcnn_theano.image.ycbcr import y_channel
from srcnn_theano.network import weights as W
from srcnn_theano.network.inference import Predictor

from conftest import ARCH_915, REPO, authors_model, random_arrays, require_data

TOLERANCE = 1e-5
#: Every model in SRCNN_v1/model of the authors' release: (folder, scale).
AUTHORS = [("9-1-5(91 images)", 2), ("9-1-5(91 images)", 3), ("9-1-5(91 images)", 4),
           ("9-1-5(ImageNet)", 3), ("9-3-5(ImageNet)", 3),
           ("9-5-5(ImageNet)", 2), ("9-5-5(ImageNet)", 3), ("9-5-5(ImageNet)", 4)]
MODELS = [("ours", s) for s in (2, 3, 4)] + AUTHORS
PADDINGS = ("replicate", "same")
#: Crops of Set5 (file, top, left, height, width): odd sizes; the first two share theirs (a batch).
CROPS = [("butterfly_GT.bmp", 100, 50, 61, 47), ("head_GT.bmp", 90, 120, 61, 47),
         ("woman_GT.bmp", 40, 60, 33, 53)]


def model_id(model):
    return f"{model[0]}-x{model[1]}"


def load_model(model):
    folder, scale = model
    return W.load_default(scale) if folder == "ours" else W.load(authors_model(folder, scale))


@pytest.fixture(scope="session")
def set5_y():
    """The Y channel (MATLAB rgb2ycbcr, float64 in [0, 1]) of each crop of :data:`CROPS`."""
    out = []
    for name, top, left, h, w in CROPS:
        y = y_channel(read_image(require_data("Set5", name)))
        out.append(y[top:top + h, left:left + w])
    return out


def network_inputs(set5_y, scale):
    """The crops degraded at ``scale`` (MATLAB bicubic down, then up to the crop's size): float32."""
    return [degrade(y, scale).astype(np.float32) for y in set5_y]


@pytest.fixture(scope="session")
def predictors():
    """``get(weights, padding)``: one Predictor per model and padding for the whole session."""
    cache = {}

    def get(key, weights, padding):
        if (key, padding) not in cache:
            cache[key, padding] = Predictor(weights, padding)
        return cache[key, padding]

    return get


def run_onnx(path, images):
    """onnxruntime on (H, W) images: the first two as one batch of two, the others alone."""
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    batch = session.run(None, {"input": np.stack(images[:2])[:, None]})[0]
    assert batch.shape == (2, 1) + images[0].shape and batch.dtype == np.float32
    rest = [session.run(None, {"input": x[None, None]})[0][0, 0] for x in images[2:]]
    return [batch[0, 0], batch[1, 0]] + rest


def correlate_network(state, image, padding):
    """The SRCNN forward pass in float64 from PyTorch-layout tensors, with scipy's correlate2d."""
    x = np.asarray(image, np.float64)[None]                   # (C, H, W)
    for i in (1, 2, 3):
        w, b = state[f"conv{i}.weight"].astype(np.float64), state[f"conv{i}.bias"].astype(np.float64)
        r = w.shape[-1] // 2
        padded = np.pad(x, ((0, 0), (r, r), (r, r)), mode="edge" if padding == "replicate" else "constant")
        x = np.stack([sum(correlate2d(padded[c], w[o, c], mode="valid") for c in range(w.shape[1])) + b[o]
                      for o in range(w.shape[0])])
        if i < 3:
            x = np.maximum(x, 0)
    return x[0]


def check_files(weights, scale, padding, tmp_path, images, predictor):
    """Export both formats; compare each with the predictor; return the safetensors metadata."""
    want = [predictor(x) for x in images]
    onnx_path, st_path = str(tmp_path / "m.onnx"), str(tmp_path / "m.safetensors")
    assert export(weights, onnx_path, scale, padding=padding) == "onnx"
    assert export(weights, st_path, scale, padding=padding) == "safetensors"
    for got, ref in zip(run_onnx(onnx_path, images), want):
        assert got.shape == ref.shape and np.abs(got - ref).max() <= TOLERANCE
    state = load_file(st_path)
    a = weights.architecture
    f32 = np.float32
    assert {k: (v.dtype, v.shape) for k, v in state.items()} == {
        "conv1.weight": (f32, (a["n1"], a["channels"], a["f1"], a["f1"])), "conv1.bias": (f32, (a["n1"],)),
        "conv2.weight": (f32, (a["n2"], a["n1"], a["f2"], a["f2"])), "conv2.bias": (f32, (a["n2"],)),
        "conv3.weight": (f32, (a["channels"], a["n2"], a["f3"], a["f3"])), "conv3.bias": (f32, (a["channels"],))}
    for x, ref in zip(images[2:], want[2:]):   # one image: the float64 loops are the slow part
        assert np.abs(correlate_network(state, x, padding) - ref).max() <= TOLERANCE
    with safe_open(st_path, "np") as f:
        st_meta = f.metadata()
    onnx_meta = {p.key: p.value for p in onnx.load(onnx_path).metadata_props}
    assert st_meta == onnx_meta == metadata(weights, scale, padding)
    return st_meta


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("model", [m if m == ("ours", 3) else pytest.param(m, marks=pytest.mark.slow)
                                   for m in MODELS], ids=model_id)
def test_exported_files_compute_what_the_predictor_computes(model, padding, set5_y, predictors, tmp_path):
    weights = load_model(model)
    scale = model[1]
    meta = check_files(weights, scale, padding, tmp_path, network_inputs(set5_y, scale),
                       predictors(model, weights, padding))
    a = weights.architecture
    assert meta["name"] == f"SRCNN {a['f1']}-{a['f2']}-{a['f3']} x{scale}" and meta["scale"] == str(scale)
    assert json.loads(meta["architecture"]) == a and meta["padding"] == padding
    assert json.loads(meta["provenance"]) == weights.provenance
    if model[0] == "ours":
        assert meta["source"].startswith("srcnn-theano's own training on T91")
    else:
        assert meta["source"] == (f"authors' released SRCNN_v1 model (academic use only), "
                                  f"{model[0]}/x{scale}.mat")


def test_a_training_runs_weights(set5_y, predictors, tmp_path):
    """best.npz of a run: its own arrays and provenance (random weights here, any values)."""
    run = W.Weights(random_arrays(ARCH_915, seed=5, fan_in=True), dict(ARCH_915), 2,
                    {"command": "python train.py --scale 2 --out runs/a", "epoch": 3})
    W.save(str(tmp_path / "best.npz"), run)
    weights = W.load(str(tmp_path / "best.npz"))
    meta = check_files(weights, 2, "replicate", tmp_path, network_inputs(set5_y, 2),
                       predictors("run", weights, "replicate"))
    assert meta["source"] == "srcnn-theano training run: python train.py --scale 2 --out runs/a"


def test_onnx_graph_is_opset_13_with_any_input_size():
    model = onnx.load_from_string(onnx_model(W.load_default(3), 3).SerializeToString())
    assert model.ir_version == 7 and [(o.domain, o.version) for o in model.opset_import] == [("", 13)]
    assert [n.op_type for n in model.graph.node] == ["Pad", "Conv", "Relu", "Conv", "Relu", "Pad", "Conv"]
    assert all(a.s == b"edge" for n in model.graph.node if n.op_type == "Pad" for a in n.attribute)
    (inp,), (out,) = model.graph.input, model.graph.output
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert (inp.name, dims(inp)) == ("input", ["N", 1, "H", "W"]) and (out.name, dims(out)) == (
        "output", ["N", 1, "H", "W"])


def test_format_comes_from_the_extension_or_the_option():
    assert format_of("a/m.ONNX") == "onnx" and format_of("m.safetensors") == "safetensors"
    assert format_of("m.bin", "onnx") == "onnx"
    with pytest.raises(SRCNNError, match=r"m\.pt from its extension"):
        format_of("m.pt")
    with pytest.raises(SRCNNError, match="unknown export format"):
        format_of("m.onnx", "tflite")


def run_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "srcnn_theano", *args], cwd=cwd, capture_output=True,
                          text=True)


def test_export_command_and_its_errors(tmp_path):
    out = tmp_path / "x2.onnx"
    res = run_cli("export", "--scale", "2", "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert "SRCNN 9-1-5 x2" in res.stderr and onnx.load(str(out)).metadata_props
    before = out.read_bytes()
    for args, message in [
            (("--scale", "2", "-o", str(out)), "already exists"),
            (("-o", str(tmp_path / "a.onnx")), "give --scale"),
            (("--scale", "3", "-o", str(tmp_path / "a.pt")), "from its extension"),
            (("--weights", W.pretrained_path(2), "-o", str(tmp_path / "b.onnx"), "--scale", "3"),
             "trained for x2, not x3"),
            (("--weights", str(tmp_path / "none.npz"), "-o", str(tmp_path / "b.onnx")), "no such weights")]:
        res = run_cli("export", *args)
        assert res.returncode == 2 and res.stderr.count("\n") == 1 and message in res.stderr, res.stderr
    assert out.read_bytes() == before
    copy = tmp_path / "w.npz"
    shutil.copy(W.pretrained_path(3), copy)
    res = run_cli("export", "--weights", str(copy), "-o", str(copy), "--format", "safetensors", "--force")
    assert res.returncode == 2 and "is the input" in res.stderr
    assert copy.read_bytes() == open(W.pretrained_path(3), "rb").read()
    res = run_cli("export", "--weights", str(copy), "-o", str(out), "--format", "safetensors", "--force",
                  "--padding", "same")
    assert res.returncode == 0, res.stderr
    with safe_open(str(out), "np") as f:
        assert f.metadata()["padding"] == "same" and f.metadata()["scale"] == "3"
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]


def test_onnx_and_safetensors_are_imported_by_export_only_and_it_needs_no_theano():
    """Importing the modules (export included) loads none of them; export's functions do."""
    code = ("import sys, srcnn_theano.cli, srcnn_theano.network.weights, srcnn_theano.evaluation.score, "
            "srcnn_theano.apps.export; "
            "print([m for m in ('onnx', 'onnxruntime', 'safetensors', 'theano') if m in sys.modules])")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stderr


# --------------------------------------------------------------------------
# docs/export.md, as written
# --------------------------------------------------------------------------

def doc_blocks(language):
    with open(os.path.join(REPO, "docs", "export.md")) as f:
        return re.findall(rf"^```{language}\n(.*?)^```", f.read(), flags=re.S | re.M)


def test_docs_example_runs_and_gives_upscales_result(tmp_path, monkeypatch):
    """The ONNX export command and the onnxruntime code of docs/export.md, run in a folder with an LR
    image: its SR image is what ``upscale`` (the Theano predictor) writes, to a level in a few pixels."""
    from srcnn_theano.apps.upscale import upscale_image

    commands = [line for block in doc_blocks("bash") for line in block.splitlines()
                if line.startswith("python -m srcnn_theano export --scale 3 -o srcnn_x3.onnx")]
    (code,) = [b for b in doc_blocks("python") if "import onnxruntime" in b]
    hr = read_image(require_data("Set5", "butterfly_GT.bmp"))[:153, :99]
    lr = from_float(imresize(to_float(hr), scale=1 / 3))          # 51x33, odd
    write_image(str(tmp_path / "lr.png"), lr)
    (command,) = commands
    res = subprocess.run([sys.executable] + command.split()[1:], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/export.md", "exec"), {"__name__": "docs_example"})
    sr = read_image(str(tmp_path / "sr.png")).astype(int)
    want = upscale_image(lr, 3, Predictor(W.load_default(3))).astype(int)
    assert sr.shape == want.shape == (153, 99, 3)
    diff = np.abs(sr - want)
    assert diff.max() <= 1 and np.count_nonzero(diff) <= 0.001 * diff.size
