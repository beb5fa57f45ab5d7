"""The TPAMI ablation networks in training: any f1-f2-f3 with any n1,n2 (``train.py --arch --filters``)."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from srcnn_theano import training
from srcnn_theano.errors import SRCNNError
from srcnn_theano.training.config import TrainConfig

from conftest import REPO


def test_config_takes_any_architecture_and_filters():
    cfg = TrainConfig.from_preset("paper", arch="11-1-7", filters=(128, 64), scale=3)
    assert cfg.architecture() == dict(f1=11, f2=1, f3=7, n1=128, n2=64)
    assert "  filters        = (128, 64)\n" in cfg.describe("paper")
    assert TrainConfig.from_preset("fast").architecture() == dict(f1=9, f2=1, f3=5, n1=64, n2=32)
    for arch, filters in (("11-2-7", (64, 32)), ("9-1-5", (64, 0)), ("nine", (64, 32))):
        with pytest.raises(SRCNNError):
            TrainConfig.from_preset("paper", arch=arch, filters=filters)


def test_config_round_trips_through_json_and_reads_old_checkpoints():
    cfg = TrainConfig.from_preset("fast", arch="9-5-5", filters=(32, 16))
    back = TrainConfig(**json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert back == cfg and back.filters == (32, 16)
    old = dataclasses.asdict(TrainConfig())
    del old["filters"]                                # a checkpoint from before --filters
    assert TrainConfig(**old).architecture()["n1"] == 64


def test_label_size_follows_the_architecture():
    cfg = TrainConfig.from_preset("paper", arch="11-1-7", filters=(8, 4))
    assert training.data.label_size(cfg, 33) == 33 - 2 * 8


def test_init_weights_must_have_the_runs_filters(tmp_path):
    from srcnn_theano.network.weights import Weights, save

    from conftest import ARCH_915, random_arrays

    path = str(tmp_path / "w.npz")
    save(path, Weights(random_arrays(ARCH_915), ARCH_915, 3))
    val = tmp_path / "val"
    val.mkdir()
    Image.fromarray(np.full((30, 30), 90, np.uint8)).save(val / "v.png")
    cfg = TrainConfig.from_preset("fast", filters=(16, 8), scale=3)
    with pytest.raises(SRCNNError, match="64,32 filters; this run trains 9-1-5 with 16,8"):
        training.train(cfg, str(tmp_path / "none.h5"), str(val), str(tmp_path / "run"),
                       init_weights=path, progress=False)


@pytest.mark.slow
def test_train_py_trains_an_ablation_network(tmp_path):
    """``train.py --arch 11-1-7 --filters 8,4``: patches, one epoch, best.npz of that shape."""
    rng = np.random.default_rng(0)
    images, val = tmp_path / "imgs", tmp_path / "val"
    for folder, n in ((images, 2), (val, 1)):
        folder.mkdir()
        for i in range(n):
            small = Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
            Image.fromarray(np.asarray(small.resize((72, 72), Image.BICUBIC))).save(folder / f"{i}.png")
    run = tmp_path / "run"
    res = subprocess.run([sys.executable, os.path.join(REPO, "train.py"), "--images", str(images),
                          "--val", str(val), "--arch", "11-1-7", "--filters", "8,4", "--preset", "fast",
                          "--epochs", "1", "--out", str(run), "--quiet"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    from srcnn_theano.network.weights import load

    w = load(str(run / "best.npz"))
    assert w.architecture == dict(f1=11, f2=1, f3=7, n1=8, n2=4, channels=1) and w.scale == 3
