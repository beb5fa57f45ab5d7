"""Training: loss goes down, exact resume, divergence, input errors, the demo beats bicubic.

Compiled Theano functions are cached per process by
:func:`srcnn_theano.training.compiled_trainer` (and by
:mod:`srcnn_theano.network.inference` for validation), so the tests below compile
one Adam/MSE and one SGD/Caffe trainer in all.
"""
import json
import os
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest
from PIL import Image

from srcnn_theano import training
from srcnn_theano.errors import SRCNNError
from srcnn_theano.evaluation.datasets import SKIMAGE_HELD_OUT
from srcnn_theano.patches.store import DEFAULT_MEMORY_BUDGET
from srcnn_theano.patches.writer import write_h5
from srcnn_theano.network.weights import load

from conftest import ARCH_915, REPO, random_arrays

pytestmark = pytest.mark.slow  # trains (compiles two trainers, runs epochs)

CLI = os.path.join(REPO, "train.py")


def _smooth_image(shape, seed):
    """A uint8 photograph-like image: bicubic-enlarged random colour blobs plus fine texture."""
    rng = np.random.default_rng(seed)
    h, w = shape[:2]
    small = Image.fromarray(rng.integers(0, 256, (h // 6, w // 6) + shape[2:], dtype=np.uint8))
    big = np.asarray(small.resize((w, h), Image.BICUBIC), dtype=np.float64)
    return np.clip(big + rng.normal(0, 6, big.shape), 0, 255).astype(np.uint8)


def _folder(root, name, shapes, seed):
    folder = root / name
    folder.mkdir()
    for i, shape in enumerate(shapes):
        Image.fromarray(_smooth_image(shape, seed + i)).save(folder / f"img{i}.png")
    return str(folder)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny x3 patch file (81 patches), a larger one (1 600) and a 60x60 validation image."""
    root = tmp_path_factory.mktemp("training-data")
    tiny = str(root / "tiny.h5")
    write_h5(tiny, [os.path.join(_folder(root, "tiny", [(150, 150, 3)], 1), "img0.png")], 3,
             progress=False)
    imgs = _folder(root, "imgs", [(300, 300, 3), (300, 300), (300, 300, 3), (300, 300, 3)], 10)
    big = str(root / "big.h5")
    write_h5(big, [os.path.join(imgs, f"img{i}.png") for i in range(4)], 3, progress=False)
    return dict(root=root, tiny=tiny, big=big, val=_folder(root, "val", [(60, 60, 3)], 99))


def fast(**kw):
    return training.TrainConfig.from_preset("fast", scale=3, **{"batch_size": 16, **kw})


def _weights_bytes(run_dir):
    _, weights, opt = training.load_checkpoint(os.path.join(run_dir, "last.npz"))
    return b"".join(weights[k].tobytes() for k in sorted(weights)) + b"".join(a.tobytes() for a in opt)


def _interrupt_at(step):
    """A training callback that sends this process Ctrl-C after global step ``step``."""
    def callback(epoch, s, loss):
        if s == step:
            os.kill(os.getpid(), signal.SIGINT)
    return callback


# --------------------------------------------------------------------------
# Learning
# --------------------------------------------------------------------------

def test_paper_recipe_lowers_the_loss(data, tmp_path):
    """300 steps of the paper's SGD (Caffe loss, lr 1e-4, multipliers) on 1 600 patches."""
    cfg = training.TrainConfig.from_preset("paper", scale=3, batch_size=16, epochs=3)
    assert (cfg.optimizer, cfg.loss, cfg.lr_multipliers, cfg.init_std, cfg.momentum) == \
        ("sgd", "caffe", "paper", 0.001, 0.9)
    result = training.train(cfg, data["big"], data["val"], str(tmp_path), progress=False)
    losses = [row["train_loss"] for row in result.log]
    assert result.log[-1]["step"] == 300
    assert losses[2] < losses[1] < losses[0]
    assert losses[2] < 0.5 * losses[0]


# --------------------------------------------------------------------------
# Run folder, checkpoints and exact resume
# --------------------------------------------------------------------------

def test_run_folder_contents(data, tmp_path):
    result = training.train(fast(epochs=2), data["tiny"], data["val"], str(tmp_path), progress=False,
                            command="python train.py --test")
    names = set(os.listdir(tmp_path))
    assert {"last.npz", "best.npz", "log.csv", "log.json", "curves.png"} <= names
    assert not [n for n in names if n.startswith(".tmp-")]
    with open(tmp_path / "curves.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert rows[0].split(",") == list(training.LOG_FIELDS) and len(rows) == 3
    log = json.loads((tmp_path / "log.json").read_text())
    assert [r["epoch"] for r in log["epochs"]] == [1, 2] and log["config"]["optimizer"] == "adam"
    best = load(str(tmp_path / "best.npz"))
    prov = best.provenance
    assert best.scale == 3 and prov["epoch"] == result.best_epoch
    assert prov["command"] == "python train.py --test"
    assert prov["val_psnr"] == pytest.approx(result.best_psnr)
    assert len(next(iter(prov["data"]["sources_sha256"].values()))) == 64
    state, _, _ = training.load_checkpoint(str(tmp_path / "last.npz"))
    assert state.epoch == 2 and state.batch == 0
    json.dumps(state.rng_state)
    with pytest.raises(SRCNNError, match="already holds a run"):
        training.train(fast(epochs=1), data["tiny"], data["val"], str(tmp_path), progress=False)


@pytest.mark.parametrize("where", ["epoch boundary", "mid-epoch", "mid-epoch streamed"])
def test_interrupted_and_resumed_run_is_bit_identical(data, tmp_path, where):
    memory = 20_000 if "streamed" in where else DEFAULT_MEMORY_BUDGET  # ~3 patches per block
    cfg = fast(epochs=2)
    steps = -(-81 // cfg.batch_size)  # 6 steps per epoch
    straight = str(tmp_path / "straight")
    training.train(cfg, data["tiny"], data["val"], straight, progress=False, memory_budget=memory)

    run = str(tmp_path / "resumed")
    stop = steps if where == "epoch boundary" else 3
    with pytest.raises(training.TrainingInterrupted, match="--resume"):
        training.train(cfg, data["tiny"], data["val"], run, progress=False, memory_budget=memory,
                       callback=_interrupt_at(stop))
    state, _, _ = training.load_checkpoint(os.path.join(run, "last.npz"))
    assert (state.epoch, state.batch) == ((1, 0) if stop == steps else (0, 3))
    assert _weights_bytes(run) != _weights_bytes(straight)
    result = training.resume(run, progress=False, memory_budget=memory)
    assert _weights_bytes(run) == _weights_bytes(straight)
    assert [r["train_loss"] for r in result.log] == \
        [r["train_loss"] for r in training.load_checkpoint(os.path.join(straight, "last.npz"))[0].log]


def test_resume_after_kill_9_is_bit_identical(data, tmp_path):
    """SIGKILL cannot be caught: the run resumes from the last epoch's checkpoint, exactly."""
    cfg = fast(epochs=2)
    straight = str(tmp_path / "straight")
    training.train(cfg, data["tiny"], data["val"], straight, progress=False)
    run = str(tmp_path / "killed")
    code = (f"import os, signal, sys; sys.path.insert(0, {REPO!r})\n"
            "from srcnn_theano import training\n"
            "cfg = training.TrainConfig.from_preset('fast', scale=3, batch_size=16, epochs=2)\n"
            "def kill(epoch, step, loss):\n"
            "    if step == 9: os.kill(os.getpid(), signal.SIGKILL)   # mid-epoch 2 of 6 steps\n"
            f"training.train(cfg, {data['tiny']!r}, {data['val']!r}, {run!r}, progress=False, "
            "callback=kill)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    state, _, _ = training.load_checkpoint(os.path.join(run, "last.npz"))   # complete, not partial
    assert (state.epoch, state.batch) == (1, 0)
    res = subprocess.run([sys.executable, CLI, "--resume", run, "--quiet"], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert _weights_bytes(run) == _weights_bytes(straight)
    assert not [n for n in os.listdir(run) if n.startswith(".tmp-")]


def test_resume_extends_a_constant_schedule_exactly(data, tmp_path):
    cfg = fast(epochs=2, schedule="constant")
    training.train(cfg, data["tiny"], data["val"], str(tmp_path / "a"), progress=False)
    training.train(fast(epochs=1, schedule="constant"), data["tiny"], data["val"], str(tmp_path / "b"),
                   progress=False)
    training.resume(str(tmp_path / "b"), epochs=2, progress=False)
    assert _weights_bytes(str(tmp_path / "a")) == _weights_bytes(str(tmp_path / "b"))


# --------------------------------------------------------------------------
# Divergence
# --------------------------------------------------------------------------

def test_diverging_loss_stops_and_keeps_the_last_good_checkpoint(data, tmp_path, monkeypatch):
    training.train(fast(epochs=1), data["tiny"], data["val"], str(tmp_path), progress=False)
    before = _weights_bytes(str(tmp_path))
    monkeypatch.setattr(training.loop, "learning_rate_at", lambda config, step, total: 1e8)
    with pytest.raises(training.DivergedError, match=r"diverged: loss is (nan|inf) .*\(epoch 1\)$"):
        training.resume(str(tmp_path), epochs=2, progress=False)
    assert _weights_bytes(str(tmp_path)) == before
    state, _, _ = training.load_checkpoint(str(tmp_path / "last.npz"))
    assert state.epoch == 1


def test_huge_learning_rate_diverges(data, tmp_path):
    with pytest.raises(training.DivergedError, match="diverged"):
        training.train(fast(epochs=3, learning_rate=1e8, schedule="constant"), data["tiny"],
                       data["val"], str(tmp_path), progress=False)
    state, _, _ = training.load_checkpoint(str(tmp_path / "last.npz"))
    assert (state.epoch, state.batch, state.step) == (0, 0, 0)  # the initial weights


# --------------------------------------------------------------------------
# Command-line errors: one line, exit status 2, no traceback
# --------------------------------------------------------------------------

def _bad_runs(data, tmp_path):
    """``name: (train.py arguments, expected part of the error line)``."""
    def h5(name, **arrays):
        path = str(tmp_path / name)
        with h5py.File(path, "w") as f:
            for key, value in arrays.items():
                f[key] = value
            f.attrs["scale"] = 3
        return path

    ones = lambda *s: np.ones(s, np.float32)  # noqa: E731
    poisoned = ones(4, 1, 33, 33)
    poisoned[2, 0, 5, 5] = np.nan
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    runs = iter(range(100))
    val = lambda: ["--val", data["val"], "--out", str(tmp_path / f"run{next(runs)}")]  # noqa: E731
    return {   # each its own run folder: they run at once, and a run folder takes one training
        "missing": (["--train", str(tmp_path / "nope.h5")] + val(), "no such training file"),
        "no label": (["--train", h5("nolabel.h5", data=ones(4, 1, 33, 33))] + val(), "no 'label' dataset"),
        "wrong shape": (["--train", h5("shape.h5", data=ones(4, 33, 33), label=ones(4, 21, 21))] + val(),
                        "must be a 4-D float array"),
        "label size": (["--train", h5("label.h5", data=ones(4, 1, 33, 33), label=ones(4, 1, 33, 33))]
                       + val(), "but the model outputs 21x21"),
        "scale": (["--train", data["tiny"], "--scale", "2"] + val(), "patches are for scale 3, not 2"),
        "nan": (["--train", h5("nan.h5", data=poisoned, label=ones(4, 1, 21, 21))] + val(),
                "has NaN or infinite values"),
        "out folder": (["--train", data["tiny"], "--val", data["val"], "--out", str(blocker / "run")],
                       "cannot create run folder"),
        "no val": (["--train", data["tiny"]], "--val DIR is required"),
        "resume option": (["--resume", str(tmp_path), "--lr", "1"], "--lr cannot be used with --resume"),
        "no checkpoint": (["--resume", str(tmp_path)], "no checkpoint to resume from"),
        "bad option": (["--train", data["tiny"], "--epochs", "0"] + val(), "epochs out of range"),
    }


def test_command_line_errors_are_one_line(data, tmp_path):
    cases = _bad_runs(data, tmp_path)
    procs = {name: subprocess.Popen([sys.executable, CLI, "--quiet", *args], cwd=REPO, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name, (args, _) in cases.items()}  # all at once: each mostly imports Theano
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        lines = err.strip().splitlines()
        assert proc.returncode == 2, (name, err)
        assert len(lines) == 1 and lines[0].startswith("error: ") and cases[name][1] in lines[0], \
            (name, lines)


# --------------------------------------------------------------------------
# The demo (the code path of `python train.py`, with 3 epochs instead of 8)
# --------------------------------------------------------------------------

def test_demo_beats_bicubic_on_held_out_photographs(tmp_path):
    from srcnn_theano.apps.demo import demo

    result, report = demo(str(tmp_path), epochs=3, progress=False)
    assert [r["name"] for r in report["images"]] == list(SKIMAGE_HELD_OUT)
    for row in report["images"]:
        assert row["srcnn_psnr"] > row["bicubic_psnr"] + 0.1, row
    assert report["mean"]["srcnn_psnr"] > report["mean"]["bicubic_psnr"] + 0.2
    assert os.path.getsize(tmp_path / "example.png") > 10_000
    assert load(str(tmp_path / "best.npz")).provenance["epoch"] == result.best_epoch


def test_init_weights_start_from_a_given_model(data, tmp_path):
    """Fine-tuning: a run with init_weights trains from exactly the given model."""
    from srcnn_theano.files import sha256_file
    from srcnn_theano.network.weights import Weights, save

    arrays = random_arrays(ARCH_915, seed=5, std=0.01)
    path = str(tmp_path / "start.npz")
    save(path, Weights(arrays, ARCH_915, 3))
    # One epoch at a negligible learning rate: the weights stay where the run started.
    config = fast(epochs=1, optimizer="sgd", learning_rate=1e-12, schedule="constant")
    result = training.train(config, data["tiny"], data["val"], str(tmp_path / "run"),
                            progress=False, init_weights=path)
    for key, start in arrays.items():
        np.testing.assert_allclose(result.weights.arrays[key], start, rtol=0, atol=1e-6)
    assert result.log[0]["srcnn_psnr"] < result.log[0]["bicubic_psnr"]  # random model, untrained
    assert load(str(tmp_path / "run" / "best.npz")).provenance["init_weights"]["sha256"] == \
        sha256_file(path)
    other = training.TrainConfig.from_preset("fast", scale=3, arch="9-5-5")
    with pytest.raises(SRCNNError, match="9-1-5 model"):
        training.train(other, data["tiny"], data["val"], str(tmp_path / "other"), progress=False,
                       init_weights=path)
