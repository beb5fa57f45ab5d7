"""Patch files cut by several worker processes, and the shuffled copy at any size.

* ``--workers 2`` writes the same datasets and attributes as ``--workers 1``
  (with augmentation, skipped images and the partial-chunk drop), through the
  library and the command line;
* the three ways of the shuffled copy (in one block, block by block from the
  page cache, through buckets) give the same file;
* at most two images per worker are in flight (memory bounded by the workers'
  buffers, not by the number of images);
* errors and interruptions in a worker leave nothing behind.
"""
import concurrent.futures
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from PIL import Image

from srcnn_theano.errors import SRCNNError
from srcnn_theano.image.io import list_images
from srcnn_theano.patches import cutting
from srcnn_theano.patches import store as P
from srcnn_theano.patches import writer as W

from conftest import REPO

CLI = os.path.join(REPO, "data_prep", "generate_h5.py")


def _image(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Nine small images of different sizes (one too small, one not an image)."""
    folder = tmp_path_factory.mktemp("photos")
    sizes = [(140, 160, 3), (128, 128), (180, 122, 3), (20, 20, 3), (150, 150, 3), (132, 196),
             (160, 140, 3), (200, 100, 3)]
    for i, shape in enumerate(sizes):
        Image.fromarray(_image(shape, i)).save(folder / f"p{i}.png")
    (folder / "p8.png").write_bytes(b"broken")
    return str(folder)


def _contents(path):
    with h5py.File(path, "r") as f:
        return ({k: f[k][...] for k in ("data", "label")},
                {k: np.asarray(v).tolist() for k, v in f.attrs.items()},
                {k: (f[k].shape, f[k].chunks, f[k].dtype) for k in ("data", "label")})


def _assert_same(a, b):
    (da, aa, la), (db, ab, lb) = _contents(a), _contents(b)
    assert la == lb and aa == ab
    for k in da:
        assert np.array_equal(da[k], db[k]), k
    assert len(da["data"]) > 0


@pytest.mark.parametrize("options", [{}, {"augment": True}, {"drop_partial_chunk": True},
                                     {"channels": "rgb", "stride": 20}],
                         ids=["plain", "augment", "drop-partial-chunk", "rgb"])
def test_two_workers_write_the_same_file_as_one(photos, tmp_path, options):
    paths = list_images(photos)
    one, two = str(tmp_path / "w1.h5"), str(tmp_path / "w2.h5")
    s1 = W.write_h5(one, paths, 3, seed=5, progress=False, workers=1, **options)
    s2 = W.write_h5(two, paths, 3, seed=5, progress=False, workers=2, **options)
    assert s1 == s2._replace(path=one)
    assert [n for n, _ in s1.skipped] == ["p3.png", "p8.png"]
    _assert_same(one, two)
    assert sorted(os.listdir(tmp_path)) == ["w1.h5", "w2.h5"]     # no scratch left


def test_every_way_of_shuffling_gives_the_same_file(photos, tmp_path, monkeypatch):
    paths = list_images(photos)
    ref = str(tmp_path / "ref.h5")
    s = W.write_h5(ref, paths, 3, seed=2, progress=False)          # one block
    row = 4 * (33 * 33 + 21 * 21)
    small = 2 * row * P.CHUNK_ROWS + 1                               # blocks of 128 patches
    assert s.count > 3 * P.CHUNK_ROWS
    out = str(tmp_path / "pagecache.h5")
    W.write_h5(out, paths, 3, seed=2, progress=False, memory_budget=small, workers=2)
    _assert_same(ref, out)
    monkeypatch.setattr(W, "_page_cache_bytes", lambda: 0)          # as if far larger than RAM
    for workers, drop in ((1, False), (2, False), (2, True)):
        out = str(tmp_path / f"buckets{workers}{drop}.h5")
        W.write_h5(out, paths, 3, seed=2, progress=False, memory_budget=small, workers=workers,
                   drop_partial_chunk=drop)
        if not drop:
            _assert_same(ref, out)
        else:
            with h5py.File(ref, "r") as f, h5py.File(out, "r") as g:
                n = len(g["data"])
                assert n == s.count // 128 * 128
                assert np.array_equal(f["data"][:n], g["data"][...])
                assert np.array_equal(f["label"][:n], g["label"][...])
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith(".tmp")) == []


def test_runs_cover_the_images_in_order():
    paths = [f"{i}.png" for i in range(1000)]
    for workers in (1, 2, 3):
        runs = cutting._runs(paths, workers)
        assert sum(runs, []) == paths
        assert {len(r) for r in runs[:-1]} == {min(8, max(1, 1000 // (16 * workers)))}
    assert cutting._runs(paths[:20], 2) == [[p] for p in paths[:20]]   # short lists: one each


def test_runs_of_several_images_write_the_same_file(photos, tmp_path, monkeypatch):
    paths = list_images(photos) * 2
    one, three = str(tmp_path / "one.h5"), str(tmp_path / "three.h5")
    W.write_h5(one, paths, 3, seed=4, progress=False, workers=1)
    monkeypatch.setattr(cutting, "_runs", lambda p, w: [p[i:i + 3] for i in range(0, len(p), 3)])
    W.write_h5(three, paths, 3, seed=4, progress=False, workers=2)
    _assert_same(one, three)


def test_at_most_two_runs_per_worker_in_flight(photos, monkeypatch):
    submitted, consumed = [], []

    class Counting(concurrent.futures.ProcessPoolExecutor):
        def submit(self, fn, *args, **kwargs):
            submitted.append(args)
            return super().submit(fn, *args, **kwargs)

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Counting)
    paths = list_images(photos) * 3
    raw = cutting.RawPatches(P_SHAPES, [])
    folder = os.path.dirname(paths[0])
    shards = [{k: os.path.join(folder, f".tmp-test-{w}-{k}") for k in P_SHAPES} for w in range(2)]
    try:
        monkeypatch.setattr(cutting, "_runs",
                            lambda p, w: [p[i:i + 2] for i in range(0, len(p), 2)])
        cut = cutting._cut_all(paths, PARAMS, shards)
        for result in cut:
            consumed.append(result)
            in_flight = sum(len(a[0]) for a in submitted) - len(consumed)
            assert in_flight <= (2 * 2 + 1) * 2    # two runs of two per worker + the one read
        assert len(consumed) == len(paths) == sum(len(a[0]) for a in submitted)
        assert [r[0] for r in consumed] == [os.path.basename(p) for p in paths]   # in order
    finally:
        for shard in shards:
            for p in shard.values():
                if os.path.exists(p):
                    os.remove(p)
    del raw


P_SHAPES = {"data": (1, 33, 33), "label": (1, 21, 21)}
PARAMS = dict(scale=3, input_size=33, label_size=21, stride=14, channels="y", augment=False)


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_a_failing_worker_leaves_nothing(photos, tmp_path, monkeypatch, exc):
    real, calls = cutting.extract_patches, []

    def failing(*args, **kwargs):   # runs in the forked workers too
        calls.append(1)
        if len(calls) == 2:
            raise exc("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(cutting, "extract_patches", failing)
    out = tmp_path / "t.h5"
    with pytest.raises(exc):
        W.write_h5(str(out), list_images(photos), 3, progress=False, workers=2)
    assert os.listdir(tmp_path) == []
    assert not any(n.startswith(".tmp") for n in os.listdir(photos))


def test_monitor_sees_every_image(photos, tmp_path):
    seen = []
    s = W.write_h5(str(tmp_path / "m.h5"), list_images(photos), 3, progress=False, workers=2,
                   monitor=lambda done, patches: seen.append((done, patches)))
    assert [d for d, _ in seen] == list(range(1, 10))
    assert seen[-1][1] == s.count and all(a[1] <= b[1] for a, b in zip(seen, seen[1:]))


def test_bad_worker_count(photos, tmp_path):
    with pytest.raises(SRCNNError, match="workers"):
        W.write_h5(str(tmp_path / "x.h5"), list_images(photos), 3, progress=False, workers=0)


def test_cli_workers_option_gives_the_same_file(photos, tmp_path):
    outs = []
    for w in ("1", "2"):
        out = str(tmp_path / f"cli{w}.h5")
        r = subprocess.run([sys.executable, CLI, "--images", photos, "--scale", "3", "--output",
                            out, "--workers", w, "--quiet", "--augment"],
                           capture_output=True, text=True, cwd=REPO)
        assert r.returncode == 0, r.stderr
        outs.append(out)
    _assert_same(*outs)
    r = subprocess.run([sys.executable, CLI, "--help"], capture_output=True, text=True, cwd=REPO)
    assert "--workers" in r.stdout and "number of cores" in " ".join(r.stdout.split())


# --------------------------------------------------------------------------
# Streamed minibatches: the next block is read by a thread meanwhile
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def patch_file(photos, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("pf") / "train.h5")
    W.write_h5(out, list_images(photos), 3, progress=False)
    return out


def _serial_batches(pf, batch_size, rng, budget):
    """What the streamed reader must yield: the same draws, blocks read in turn."""
    row = pf.nbytes // pf.count
    block = max(1, budget // 2 // row // batch_size) * batch_size
    for start in rng.permutation(np.arange(0, pf.count, block)):
        data = pf.data[start:start + block]
        label = pf.label[start:start + block]
        order = rng.permutation(len(data))
        for s in range(0, len(data), batch_size):
            yield data[order[s:s + batch_size]], label[order[s:s + batch_size]]


def test_streamed_batches_with_prefetch_are_the_serial_ones(patch_file):
    import threading

    with P.open_h5(patch_file) as pf:
        budget = pf.nbytes // 5            # streamed, several blocks
        got = list(P.iterate_minibatches(pf, 16, np.random.default_rng(3), budget))
        want = list(_serial_batches(pf, 16, np.random.default_rng(3), budget))
        assert len(got) == len(want) > 10
        for (x, y), (u, v) in zip(got, want):
            assert np.array_equal(x, u) and np.array_equal(y, v)
        # two blocks (the one in use and the one being read) fit in the budget
        block_rows = max(1, budget // 2 // (pf.nbytes // pf.count) // 16) * 16
        assert 2 * block_rows * (pf.nbytes // pf.count) <= budget
        # stopping early stops the reader thread
        it = P.iterate_minibatches(pf, 16, np.random.default_rng(3), budget)
        next(it)
        it.close()
        assert not any(t.name.startswith("srcnn-prefetch") for t in threading.enumerate())


def test_a_failing_block_write_is_an_error_and_leaves_nothing(photos, tmp_path, monkeypatch):
    def failing(self, start, rows):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(W._BlockWriter, "_write", failing)
    with pytest.raises(SRCNNError, match="cannot write .*No space left"):
        W.write_h5(str(tmp_path / "t.h5"), list_images(photos), 3, progress=False, workers=2)
    assert os.listdir(tmp_path) == []
    assert not any(t.name.startswith("srcnn-h5write") for t in __import__("threading").enumerate())
