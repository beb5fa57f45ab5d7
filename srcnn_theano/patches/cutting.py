"""Cutting patches from images into scratch files, in this process or in worker processes.

Each worker appends the patches of the images it is given to its own
scratch file (a shard); the writer (:mod:`srcnn_theano.patches.writer`)
then reads them back in the images' order, so the result is the same for
any number of workers.
"""
import os
import sys

import numpy as np
from tqdm import tqdm

from srcnn_theano.errors import SRCNNError
from srcnn_theano.files import sha256_file
from srcnn_theano.image.io import read_image
from srcnn_theano.patches.extract import augment_images, extract_patches, image_to_planes


# --------------------------------------------------------------------------
# Cutting: in this process or in worker processes, each with its scratch files
# --------------------------------------------------------------------------

def _cut_image(path, params):
    """One image's patches: ``(name, digest, data, label)``, or ``(name, None, reason, None)``
    for an image to skip."""
    name = os.path.basename(path)
    geometry = {k: params[k] for k in ("scale", "input_size", "label_size", "stride")}
    try:
        digest = sha256_file(path)
        planes = image_to_planes(read_image(path), params["channels"])
    except SRCNNError as e:
        return name, None, str(e), None
    variants = augment_images(planes) if params["augment"] else (planes,)
    cuts = [extract_patches(v, **geometry) for v in variants]
    data = cuts[0][0] if len(cuts) == 1 else np.concatenate([d for d, _ in cuts])
    label = cuts[0][1] if len(cuts) == 1 else np.concatenate([l for _, l in cuts])
    if len(data) == 0:
        return name, None, (f"too small ({planes.shape[1]}x{planes.shape[0]}) for "
                            f"{params['input_size']}-pixel patches at scale {params['scale']}"), None
    return name, digest, data, label


class _Shard:
    """A worker's scratch files (one per kind, data and label): patches appended in the
    order the worker cut them."""

    def __init__(self, paths):
        self.files = {k: open(p, "ab", buffering=0) for k, p in paths.items()}
        self.rows = 0

    def append(self, data, label):
        """Append; return the row offset of the first row."""
        first = self.rows
        for k, a in (("data", data), ("label", label)):
            _write_all(self.files[k], np.ascontiguousarray(a, np.float32))
        self.rows += len(data)
        return first

    def close(self):
        for f in self.files.values():
            f.close()


def _write_all(f, array):
    view = memoryview(array).cast("B")
    while len(view):
        view = view[f.write(view):]


_WORKER = {}  # in a worker process: its shard and parameters


def _worker_init(counter, shard_paths, params):
    # Ctrl-C reaches the whole process group: the parent alone handles it (and stops us).
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    _WORKER.update(index=index, shard=_Shard(shard_paths[index]), params=params)


def _worker_cut(paths):
    """In a worker: cut a run of images into the worker's shard; return for each
    ``(name, digest, shard index, first row, rows)`` or ``(name, None, reason, 0, 0)``."""
    results = []
    for path in paths:
        name, digest, data, label = _cut_image(path, _WORKER["params"])
        if digest is None:
            results.append((name, None, data, 0, 0))
        else:
            first = _WORKER["shard"].append(data, label)
            results.append((name, digest, _WORKER["index"], first, len(data)))
    return results


def _runs(image_paths, workers, most=8):
    """The images in runs of consecutive ones, one run per task: up to ``most`` images,
    fewer for short lists (at least 16 runs per worker), so that the parent's work per
    task (a few hundred microseconds) is spread over several images."""
    size = max(1, min(most, len(image_paths) // (16 * workers)))
    return [image_paths[i:i + size] for i in range(0, len(image_paths), size)]


def _cut_all(image_paths, params, shard_paths):
    """Cut every image, yielding ``(name, digest or None, shard, first row, rows | reason)``
    in image order; one worker process per shard (none for one shard), at most two
    runs of images (:func:`_runs`) in flight per worker."""
    if len(shard_paths) == 1:
        shard = _Shard(shard_paths[0])
        try:
            for path in image_paths:
                name, digest, data, label = _cut_image(path, params)
                if digest is None:
                    yield name, None, data, 0, 0
                else:
                    yield name, digest, 0, shard.append(data, label), len(data)
        finally:
            shard.close()
        return
    import collections
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # fork: the workers start in milliseconds with everything imported (no Theano
    # here, and no HDF5 file is open yet); spawn where fork is not the safe default.
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    counter = ctx.Value("i", 0)
    workers = len(shard_paths)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                               initargs=(counter, shard_paths, params))
    pending = collections.deque()
    runs = iter(_runs(list(image_paths), workers))
    try:
        for run in runs:
            pending.append(pool.submit(_worker_cut, run))
            if len(pending) >= 2 * workers:
                break
        while pending:
            results = pending.popleft().result()
            run = next(runs, None)
            if run is not None:
                pending.append(pool.submit(_worker_cut, run))
            yield from results
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def extract_all(raw, image_paths, params, progress, workers=1, monitor=None):
    """Cut every image into ``raw``'s shards, in image order; return (sources, skipped)."""
    sources, skipped = [], []
    cut = _cut_all(image_paths, params, raw.shard_paths[:workers])
    try:
        for done, (name, digest, shard, first, rows) in enumerate(
                tqdm(cut, total=len(image_paths), desc="patches", unit="img",
                     disable=not progress, file=sys.stderr), start=1):
            if digest is None:
                _skip(skipped, name, shard)
            else:
                raw.add(shard, first, rows)
                sources.append((name, digest, rows))
            if monitor is not None:
                monitor(done, raw.count)
    finally:
        cut.close()
    return sources, skipped


def _skip(skipped, name, reason):
    tqdm.write(f"warning: skipping {name}: {reason}", file=sys.stderr)
    skipped.append((name, reason))


class RawPatches:
    """Where the unshuffled patches are: image by image (in image order) a run of
    rows in one of the shards' files. A shard holds its images in image order."""

    def __init__(self, shapes, shard_paths):
        self.shapes, self.shard_paths = shapes, shard_paths
        self.row_bytes = {k: 4 * int(np.prod(v)) for k, v in shapes.items()}
        self.runs = []  # (shard, first row in shard, rows), in image order
        self.count = 0
        self._index = None

    def add(self, shard, first, rows):
        self.runs.append((shard, first, rows))
        self.count += rows
        self._index = None

    def _runs(self):
        if self._index is None:
            runs = np.array(self.runs, dtype=np.int64).reshape(-1, 3)
            base = np.concatenate([[0], np.cumsum(runs[:, 2])[:-1]])  # first unshuffled index
            per_shard = {}
            for s in range(len(self.shard_paths)):
                mine = np.flatnonzero(runs[:, 0] == s)
                per_shard[s] = (runs[mine, 1], runs[mine, 2], base[mine])
            self._index = (runs, base, per_shard)
        return self._index

    def locate(self, rows):
        """Unshuffled row indices -> (shard, row in shard) arrays."""
        runs, base, _ = self._runs()
        image = np.searchsorted(base, rows, side="right") - 1
        return runs[image, 0], runs[image, 1] + (rows - base[image])

    def shard_rows(self, shard):
        """Rows in ``shard`` (what its files hold)."""
        _, lengths, _ = self._runs()[2][shard]
        return int(lengths.sum())

    def logical(self, shard, start, stop):
        """Unshuffled indices of the rows ``start:stop`` of ``shard`` (increasing)."""
        firsts, _, base = self._runs()[2][shard]
        rows = np.arange(start, stop)
        image = np.searchsorted(firsts, rows, side="right") - 1
        return base[image] + (rows - firsts[image])

    def read(self, name, shard, start, stop, out=None):
        return read_rows(self.shard_paths[shard][name], self.shapes[name], start, stop, out)




def read_rows(path, shape, start, stop, out=None):
    """Rows ``start:stop`` of a flat float32 file of rows of ``shape`` (into ``out`` if given:
    reusing one buffer spares the page faults of fresh memory, a large cost on VMs)."""
    n = stop - start
    if out is None:
        out = np.empty((n,) + tuple(shape), np.float32)
    view = memoryview(out[:n]).cast("B")
    with open(path, "rb", buffering=0) as f:
        f.seek(start * 4 * int(np.prod(shape)))
        got = 0
        while got < view.nbytes:
            k = f.readinto(view[got:])
            if not k:
                raise OSError(f"{path}: file shorter than expected")
            got += k
    return out[:n]
