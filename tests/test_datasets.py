"""The benchmark layouts (a folder, SelfExSR's image_SRF_<s>, EDSR's HR/ + LR_bicubic/X<s>/),
built as small fixtures here; an LR file is never taken as ground truth."""
import os

import numpy as np
import pytest
from PIL import Image

from srcnn_theano.errors import SRCNNError
from srcnn_theano.evaluation.datasets import (find_datasets, hr_inputs, lr_candidates, open_dataset,
                                              split_hr_lr)


def _img(path, shape=(12, 12, 3), value=100):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full(shape, value, np.uint8)).save(path)
    return str(path)


def names(paths):
    return [os.path.basename(p) for p in paths]


def selfexsr(root, name="Set5", scales=(2, 3), n=2):
    """``root/name/image_SRF_<s>/img_00i_SRF_<s>_{HR,LR,A+}.png``, as the SelfExSR archives hold them."""
    for s in scales:
        for i in range(1, n + 1):
            for kind, size in (("HR", 12), ("LR", 12 // s), ("A+", 12)):
                _img(root / name / f"image_SRF_{s}" / f"img_{i:03d}_SRF_{s}_{kind}.png", (size, size, 3))
    return root / name


def edsr(root, name="Set14", scales=(2,), stems=("baboon", "zebra")):
    for stem in stems:
        _img(root / name / "HR" / f"{stem}.png")
        for s in scales:
            _img(root / name / "LR_bicubic" / f"X{s}" / f"{stem}x{s}.png", (12 // s, 12 // s, 3))
    return root / name


def test_selfexsr_layout(tmp_path):
    ds = open_dataset(str(selfexsr(tmp_path)))
    assert (ds.name, ds.layout, ds.scales()) == ("Set5", "selfexsr", [2, 3])
    assert names(ds.hr_paths(3)) == ["img_001_SRF_3_HR.png", "img_002_SRF_3_HR.png"]
    assert names(ds.lr_paths(3)) == ["img_001_SRF_3_LR.png", "img_002_SRF_3_LR.png"]
    assert ds.has_scale(2) and not ds.has_scale(4)
    with pytest.raises(SRCNNError, match=r"Set5: no image_SRF_4 folder .*x2, x3"):
        ds.hr_paths(4)
    one = open_dataset(str(tmp_path / "Set5" / "image_SRF_2"))   # one scale's folder, named by its set
    assert (one.name, one.scales()) == ("Set5", [2])
    assert names(one.hr_paths(2)) == ["img_001_SRF_2_HR.png", "img_002_SRF_2_HR.png"]


def test_lr_files_are_never_ground_truth(tmp_path):
    paths = ["a_HR.png", "a_LR.png", "a_A+.png", "b_HR.png"]
    assert split_hr_lr(paths) == (["a_HR.png", "b_HR.png"], ["a_LR.png"])
    assert split_hr_lr(["x.png", "x_LR.png", "y.bmp"]) == (["x.png", "y.bmp"], ["x_LR.png"])
    folder = tmp_path / "mixed"
    for n in paths:
        _img(folder / n)
    ds = open_dataset(str(folder))
    assert ds.layout == "folder" and names(ds.hr_paths(2)) == ["a_HR.png", "b_HR.png"]
    assert names(hr_inputs([str(folder)], 2)) == ["a_HR.png", "b_HR.png"]


def test_edsr_layout(tmp_path):
    root = edsr(tmp_path)
    for folder in (root, root / "HR"):
        ds = open_dataset(str(folder))
        assert (ds.name, ds.layout, ds.scales()) == ("Set14", "edsr", None)
        assert names(ds.hr_paths(4)) == ["baboon.png", "zebra.png"]      # HR serve every scale
        assert names(ds.lr_paths(2)) == ["baboonx2.png", "zebrax2.png"]
        assert ds.lr_paths(3) is None
    assert names(lr_candidates(str(root), 2)) == ["baboonx2.png", "zebrax2.png"]
    with pytest.raises(SRCNNError, match="no x3 LR images"):
        lr_candidates(str(root), 3)


def test_plain_folder_and_lr_candidates(tmp_path):
    _img(tmp_path / "Set5" / "baby_GT.bmp")
    ds = open_dataset(str(tmp_path / "Set5"))
    assert (ds.layout, ds.lr_paths(3)) == ("folder", None)
    assert names(lr_candidates(str(selfexsr(tmp_path, "B100", (3,))), 3)) == \
        ["img_001_SRF_3_LR.png", "img_002_SRF_3_LR.png"]
    assert names(lr_candidates(str(tmp_path / "B100" / "image_SRF_3"), 3))[0] == "img_001_SRF_3_LR.png"
    os.makedirs(tmp_path / "empty")
    with pytest.raises(SRCNNError, match="no images"):
        open_dataset(str(tmp_path / "empty"))


def test_find_datasets_orders_sets_like_the_papers(tmp_path):
    root = tmp_path / "benchmark"
    selfexsr(root, "Urban100", (2, 4))
    edsr(root, "Set14")
    _img(root / "Set5" / "baby_GT.bmp")
    _img(root / "Abc" / "x.png")
    os.makedirs(root / "notes")
    found = find_datasets(str(root))
    assert [(d.name, d.layout) for d in found] == [("Set5", "folder"), ("Set14", "edsr"),
                                                   ("Urban100", "selfexsr"), ("Abc", "folder")]
    assert [d.name for d in find_datasets(str(root / "Set14"))] == ["Set14"]
    with pytest.raises(SRCNNError, match="no images"):
        find_datasets(str(root / "notes"))


def test_basicsr_gtmod12_layout(tmp_path):
    for stem in ("baby", "bird"):
        _img(tmp_path / "Set5" / "GTmod12" / f"{stem}.png")
        _img(tmp_path / "Set5" / "LRbicx3" / f"{stem}.png", (4, 4, 3))
        _img(tmp_path / "Set5" / "original" / f"{stem}.png", (13, 13, 3))
    for folder in (tmp_path / "Set5", tmp_path / "Set5" / "GTmod12"):
        ds = open_dataset(str(folder))
        assert (ds.name, ds.layout) == ("Set5", "basicsr")
        assert [os.path.relpath(p, tmp_path) for p in ds.hr_paths(3)] == \
            [os.path.join("Set5", "GTmod12", "baby.png"), os.path.join("Set5", "GTmod12", "bird.png")]
        assert names(ds.lr_paths(3)) == ["baby.png", "bird.png"] and ds.lr_paths(2) is None
    assert os.path.basename(os.path.dirname(lr_candidates(str(tmp_path / "Set5"), 3)[0])) == "LRbicx3"
