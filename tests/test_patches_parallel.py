"""Patch files cut by several worker processes, and the shuffle through buckets.

* ``--workers 2`` writes the same datasets and attributes as ``--workers 1``
  (with augmentation, skipped images and the partial-chunk drop), through the
  library and the command line;
* any number of buckets, any stage size gives the same file;
* every patch's place comes from the images' headers: the counts they
  promise are the ones cut, and an image whose header lies is cut again;
* at most two runs of images per worker are in flight (memory bounded by the
  workers' buffers, not by the number of images);
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

from hypothesis import given, strategies as st

from srcnn_theano.errors import SRCNNError
from srcnn_theano.image.io import image_size, list_images, read_image
from srcnn_theano.patches import buckets, cutting
from srcnn_theano.patches import extract as E
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


def test_any_block_size_gives_the_same_file(photos, tmp_path):
    paths = list_images(photos)
    ref = str(tmp_path / "ref.h5")
    s = W.write_h5(ref, paths, 3, seed=2, progress=False)          # one bucket
    record = 8 + 4 * (33 * 33 + 21 * 21)
    assert s.count > 3 * P.CHUNK_ROWS
    for workers, drop in ((1, False), (2, False), (2, True)):
        small = 2 * workers * record * P.CHUNK_ROWS + 1            # buckets of 128 patches
        out = str(tmp_path / f"small{workers}{drop}.h5")
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


def test_chunks_are_allocated_unfilled(photos, tmp_path):
    """Every row is written once: the chunks are not filled with zeros first (h5py's
    create_dataset would: 3 GB of zeros written for a 3 GB file)."""
    out = str(tmp_path / "t.h5")
    W.write_h5(out, list_images(photos), 3, progress=False)
    with h5py.File(out, "r") as f:
        for k in ("data", "label"):
            plist = f[k].id.get_create_plist()
            assert plist.get_fill_time() == h5py.h5d.FILL_TIME_NEVER
            assert plist.get_alloc_time() == h5py.h5d.ALLOC_TIME_EARLY
            # where the workers write each chunk: the same found either way
            assert np.array_equal(W._chunk_offsets(f[k]), W._chunk_offsets(f[k], iterate=False))
            assert len(W._chunk_offsets(f[k])) == -(-len(f[k]) // P.CHUNK_ROWS)


def test_a_small_stage_gives_the_same_file(photos, tmp_path, monkeypatch):
    """Stages of 5 patches: flushed when full, images larger than the stage."""
    paths = list_images(photos)
    ref = str(tmp_path / "ref.h5")
    W.write_h5(ref, paths, 3, seed=2, progress=False)
    record = 8 + 4 * (33 * 33 + 21 * 21)
    monkeypatch.setattr(buckets, "STAGE_BYTES", 2 * 5 * record)
    for workers in (1, 2):
        out = str(tmp_path / f"stage{workers}.h5")
        W.write_h5(out, paths, 3, seed=2, progress=False, workers=workers,
                   memory_budget=2 * workers * record * P.CHUNK_ROWS * 2)
        _assert_same(ref, out)


def test_a_bucket_never_takes_more_rows_than_it_holds(tmp_path):
    """Rows beyond a full bucket (an image that gave more patches than its header
    promised) are not written over the next bucket's rows, and the bucket says so."""
    from srcnn_theano.patches import workers

    shapes = {"data": (1, 2, 2), "label": (1, 1, 1)}
    path, slots = str(tmp_path / "f.h5"), tmp_path / "slots"
    slots.write_bytes(b"")
    with h5py.File(path, "w") as f:
        offsets = {k: W._chunk_offsets(d) for k, d in W._create_datasets(f, shapes, 256).items()}
    b = buckets.Buckets(np.arange(256), 128, shapes, path, offsets, 128, str(slots),
                        workers.shared_counters(2))
    data = np.arange(256 * 4, dtype=np.float32).reshape(256, 1, 2, 2)
    label = np.arange(256, dtype=np.float32).reshape(256, 1, 1, 1)
    b.put(data, label, 0)
    b.flush()
    b.put(data[:64] + 1000, label[:64] + 1000, 0)     # 64 more for the full bucket 0
    b.flush()
    with h5py.File(path, "r") as f:
        assert np.array_equal(f["data"][...], data) and np.array_equal(f["label"][...], label)
    assert b.taken[0] == 192
    with pytest.raises(OSError, match="holds 192 rows, not 128"):
        b.assemble(0)
    assert b.assemble(1) == 128


# --------------------------------------------------------------------------
# Every patch's place, from the images' headers
# --------------------------------------------------------------------------

@given(st.integers(1, 120), st.integers(1, 120), st.integers(2, 4), st.integers(1, 30),
       st.sampled_from([(33, 21), (33, 33), (20, 10)]))
def test_patch_count_is_what_extract_patches_cuts(h, w, scale, stride, sizes):
    y = np.zeros((h, w))
    data, _ = E.extract_patches(y, scale, *sizes, stride=stride)
    assert E.patch_count((h, w), scale, *sizes, stride=stride) == len(data)


@pytest.mark.parametrize("shape", [(40, 57), (57, 40, 3), (33, 33)])
@pytest.mark.parametrize("flags", [{}, {"flips": False}, {"rotations": False},
                                   {"downscales": (1.0, 0.55)}])
def test_augmented_shapes_are_those_augment_images_yields(shape, flags):
    y = np.zeros(shape)
    assert list(E.augmented_shapes(shape, **flags)) == [v.shape[:2]
                                                        for v in E.augment_images(y, **flags)]


def test_image_size_is_the_shape_read_image_gives(tmp_path):
    from PIL import Image as PILImage

    rgb = _image((30, 50, 3), 1)
    files = {"gray.png": PILImage.fromarray(_image((30, 50), 2)),
             "rgba.png": PILImage.fromarray(_image((30, 50, 4), 3)),
             "16bit.png": PILImage.fromarray(_image((30, 50), 4).astype(np.uint16) * 200),
             "palette.png": PILImage.fromarray(rgb).convert("P")}
    for name, im in files.items():
        im.save(tmp_path / name)
    for orientation in (1, 3, 6, 8):       # 6 and 8 turn the image a quarter
        exif = PILImage.Exif()
        exif[0x0112] = orientation
        PILImage.fromarray(rgb).save(tmp_path / f"o{orientation}.jpg", exif=exif.tobytes())
    for name in sorted(os.listdir(tmp_path)):
        path = str(tmp_path / name)
        assert image_size(path) == read_image(path).shape[:2], name
    assert image_size(str(tmp_path / "o6.jpg")) == (50, 30)
    (tmp_path / "bad.png").write_bytes(b"broken")
    with pytest.raises(SRCNNError, match="bad.png"):
        image_size(str(tmp_path / "bad.png"))


def test_what_read_image_refuses_from_the_header_image_size_refuses(tmp_path):
    """Else every run over such a folder would cut all images twice."""
    from PIL import Image as PILImage

    from srcnn_theano.image import io

    PILImage.fromarray(np.zeros((20, 30), np.float32)).save(tmp_path / "float.tif")
    PILImage.fromarray(_image((40, 50, 3), 1)).save(tmp_path / "big.png")
    with pytest.raises(SRCNNError, match="floating-point"):
        image_size(str(tmp_path / "float.tif"))
    old = io._pixel_limit
    try:
        io.set_pixel_limit(1000)
        for f in (image_size, read_image):
            with pytest.raises(SRCNNError, match="big.png: 50x40 is 0.0 million pixels"):
                f(str(tmp_path / "big.png"))
    finally:
        io.set_pixel_limit(old)


def test_expected_counts_are_the_counts_cut(photos):
    paths = list_images(photos)
    for options in ({}, {"augment": True}):
        params = dict(PARAMS, **options)
        counts = []
        for p in paths:
            _, digest, data, _ = cutting._cut_image(p, params)
            counts.append(0 if digest is None else len(data))
        assert cutting.expected_counts(paths, params) == counts
        assert counts[3] == counts[8] == 0 and min(counts[:3]) > 0   # too small, broken


def test_an_image_whose_header_lies_is_cut_again(photos, tmp_path, monkeypatch, capsys):
    paths = list_images(photos)
    ref = str(tmp_path / "ref.h5")
    W.write_h5(ref, paths, 3, seed=1, progress=False)
    real = cutting.image_size
    lies = {"p1.png": (300, 300), "p2.png": (60, 60)}     # more patches, fewer
    monkeypatch.setattr(cutting, "image_size",
                        lambda p: lies.get(os.path.basename(p)) or real(p))
    capsys.readouterr()
    for workers in (1, 2):
        out = str(tmp_path / f"lie{workers}.h5")
        W.write_h5(out, paths, 3, seed=1, progress=False, workers=workers)
        _assert_same(ref, out)
        err = capsys.readouterr().err
        assert "cutting again" in err and err.count("skipping p3.png") == 1   # warned once


def test_images_that_change_while_cut_are_an_error(photos, tmp_path, monkeypatch):
    real, calls = cutting._cut_image, []

    def changing(path, params):     # p1 loses a patch on every cut
        name, digest, data, label = real(path, params)
        if path.endswith("p1.png"):
            calls.append(1)
            return name, digest, data[:-len(calls)], label[:-len(calls)]
        return name, digest, data, label

    monkeypatch.setattr(cutting, "_cut_image", changing)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(SRCNNError, match="changed while"):
        W.write_h5(str(out / "t.h5"), list_images(photos), 3, progress=False)
    assert len(calls) == 2 and os.listdir(out) == []


PARAMS = dict(scale=3, input_size=33, label_size=21, stride=14, channels="y", augment=False)


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


def test_at_most_two_runs_per_worker_in_flight(photos, tmp_path, monkeypatch):
    submitted, in_flight = [], []

    class Counting(concurrent.futures.ProcessPoolExecutor):
        def submit(self, fn, *args, **kwargs):
            if args[0] is cutting._cut_run:           # (fn, run): images in the run
                submitted.append(len(args[1]))
            return super().submit(fn, *args, **kwargs)

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Counting)
    monkeypatch.setattr(cutting, "_runs", lambda p, w: [p[i:i + 2] for i in range(0, len(p), 2)])
    paths = list_images(photos) * 3
    seen = []

    def monitor(done, patches):
        seen.append(done)
        in_flight.append(sum(submitted) - done)

    W.write_h5(str(tmp_path / "t.h5"), paths, 3, progress=False, workers=2, monitor=monitor)
    assert seen == list(range(1, len(paths) + 1))                   # in order
    assert max(in_flight) <= (2 * 2 + 1) * 2    # two runs of two per worker + the one read


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
    from srcnn_theano.patches import buckets

    def failing(fd, buf, offset):    # in the forked workers too
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(buckets, "pwrite_all", failing)
    with pytest.raises(SRCNNError, match="cannot write .*No space left"):
        W.write_h5(str(tmp_path / "t.h5"), list_images(photos), 3, progress=False, workers=2)
    assert os.listdir(tmp_path) == []
