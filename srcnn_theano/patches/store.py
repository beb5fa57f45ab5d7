"""The HDF5 patch store: writer (shuffled, streamed), validated reader, minibatch sampler.

File layout written by :func:`write_h5` (format version 1)::

    data   float32 (N, C, input_size, input_size)  chunks (128, C, ...)
    label  float32 (N, C, label_size, label_size)  chunks (128, C, ...)
    attrs  creator, format_version, scale, input_size, label_size, stride,
           channels, augment, seed, drop_partial_chunk, count,
           count_extracted, source_names, source_sha256, source_patches

``C`` is 1 for ``channels='y'`` (the paper) and 3 for ``channels='rgb'``.
Values are 0-1 floats (:mod:`srcnn_theano.patches.extract`). The patches
are shuffled (MATLAB ``randperm``) and written in chunks of 128; the
authors' MATLAB writer drops the last partial chunk
(``drop_partial_chunk=True`` here, off by default). The reader also opens
the authors' MATLAB-made files (``data``/``label`` only, no attributes).
"""
import contextlib
import os
import sys
from typing import NamedTuple

import h5py
import numpy as np
from tqdm import tqdm

from srcnn_theano.errors import SRCNNError
from srcnn_theano.files import atomic_output, check_outputs, scratch_file, sha256_file
from srcnn_theano.image.io import read_image
from srcnn_theano.patches.extract import (augment_images, check_channels, check_geometry,
                                          extract_patches, image_to_planes)

FORMAT_VERSION = 1
CREATOR = "srcnn_theano"
CHUNK_ROWS = 128
DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes
_LIBVER = ("v108", "latest")  # HDF5 >= 1.8 readers; allows attributes over 64 KiB


# --------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------

class H5Summary(NamedTuple):
    """What :func:`write_h5` wrote."""

    path: str
    count: int            #: patches in the file
    count_extracted: int  #: patches cut before the partial-chunk drop
    images: int           #: images that gave patches
    skipped: list         #: (file name, reason) of images left out


def write_h5(output, image_paths, scale, input_size=33, label_size=21, stride=14, seed=0,
             drop_partial_chunk=False, augment=False, channels="y", force=False, progress=True,
             memory_budget=DEFAULT_MEMORY_BUDGET, workers=1, monitor=None):
    """Cut training patches from images and write them, shuffled, to an HDF5 file.

    Images are cut by ``workers`` processes, at most two images each in
    flight; each worker appends its images' patches to a scratch file of its
    own (no patch travels through a pipe) and the writer keeps, in image
    order, where each image's patches are. The shuffled copy into the final
    datasets then goes block by block of the final order (about half of
    ``memory_budget`` each): from memory when everything fits in half the
    budget; from the scratch files, read sequentially, while they fit in the
    page cache; beyond that through a bucket pass (one bucket per final
    block), so that time stays linear and I/O sequential at any size.
    Memory stays under about ``memory_budget`` plus the workers' images
    however many images there are (disk needs about twice the output size
    while writing). The file is the same, byte for byte in its datasets and
    attributes, whatever ``workers`` and ``memory_budget``. The output
    appears (``os.replace``) only once complete; on any error or
    ``KeyboardInterrupt`` the workers are stopped and the temporary files
    removed.

    Parameters
    ----------
    output : str
        HDF5 file to create.
    image_paths : sequence of str
        Training images, in the order used for the unshuffled patch index.
    scale : int
        Upscaling factor.
    input_size, label_size, stride : int
        Patch geometry in pixels (paper: 33, 21, 14); see :func:`check_geometry`.
    seed : int
        Seed of ``numpy.random.default_rng`` whose permutation shuffles the patches.
    drop_partial_chunk : bool
        Keep only ``floor(count / 128) * 128`` shuffled patches, like the
        authors' MATLAB writer.
    augment : bool
        Add the :func:`augment_images` variants (40 per image) - not the paper.
    channels : {'y', 'rgb'}
        Luminance patches (C=1, the paper) or RGB patches (C=3).
    force : bool
        Overwrite an existing ``output``.
    progress : bool
        Show tqdm progress bars on stderr.
    memory_budget : int
        Bytes of patches the writer holds in memory at once.
    workers : int
        Processes cutting patches (1: this process); :func:`default_workers`
        is the command line's default.
    monitor : callable or None
        ``monitor(images_done, patches_so_far)`` after each image.

    Returns
    -------
    H5Summary

    Raises
    ------
    SRCNNError
        Bad parameters, existing output without ``force``, output folder
        missing or unwritable, or no usable image. Unreadable or too-small
        images are only reported (``warning:`` lines on stderr) and skipped.
    """
    scale, _ = check_geometry(scale, input_size, label_size, stride)
    check_channels(channels)
    image_paths = list(image_paths)
    if not image_paths:
        raise SRCNNError("no training images given")
    if int(workers) != workers or workers < 1:
        raise SRCNNError(f"workers must be a positive integer, not {workers}")
    workers = min(int(workers), len(image_paths))
    check_outputs([output], image_paths, force)
    _keep_freed_memory()   # before the workers fork: they inherit it
    params = dict(scale=scale, input_size=int(input_size), label_size=int(label_size),
                  stride=int(stride), channels=channels, augment=bool(augment), seed=int(seed),
                  drop_partial_chunk=bool(drop_partial_chunk))
    c = 1 if channels == "y" else 3
    shapes = {"data": (c, params["input_size"], params["input_size"]),
              "label": (c, params["label_size"], params["label_size"])}
    try:
        with contextlib.ExitStack() as stack:
            final_path = stack.enter_context(atomic_output(output, suffix=".h5"))

            def scratch(name):
                return stack.enter_context(scratch_file(output, f".{name}"))

            raw = _RawPatches(shapes, [{k: scratch(f"worker{w}-{k}") for k in shapes}
                                       for w in range(workers)])
            sources, skipped = _extract_all(raw, image_paths, params, progress, workers, monitor)
            count_extracted = raw.count
            if count_extracted == 0:
                raise SRCNNError(f"no usable training image among {len(image_paths)} file(s)")
            count = _final_count(count_extracted, drop_partial_chunk)
            order = np.random.default_rng(seed).permutation(count_extracted)[:count]
            with h5py.File(final_path, "w", libver=_LIBVER) as final:
                _shuffled_copy(raw, final, order, memory_budget, progress,
                               {k: scratch(f"buckets-{k}") for k in shapes})
                _write_attrs(final, params, sources, count, count_extracted)
    except OSError as e:
        raise SRCNNError(f"cannot write {output}: {e}") from None
    return H5Summary(output, count, count_extracted, len(sources), skipped)


def _keep_freed_memory(threshold=1 << 30):
    """glibc: serve and keep large blocks on the heap, as :mod:`srcnn_theano.backend` does
    for Theano (``keep_freed_memory``; not imported here, it would import Theano).

    Cutting an image allocates and frees dozens of arrays of a few hundred KB;
    by default glibc maps each from the kernel and returns it, and the page
    faults of fresh memory made up a third of the time (more on VMs).
    ``SRCNN_THEANO_MALLOPT=0`` turns it off, as for the backend.
    """
    if os.environ.get("SRCNN_THEANO_MALLOPT", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    ok = any(mallopt(m_mmap_threshold, int(t)) == 1 for t in (threshold, 32 << 20))
    return bool(mallopt(m_trim_threshold, int(threshold) * 2) == 1 and ok)


def default_workers():
    """The number of cores this process may run on (the command line's default ``--workers``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _final_count(count_extracted, drop_partial_chunk):
    if not drop_partial_chunk:
        return count_extracted
    count = count_extracted // CHUNK_ROWS * CHUNK_ROWS
    if count == 0:
        raise SRCNNError(f"only {count_extracted} patches, fewer than one chunk of {CHUNK_ROWS}: "
                         "dropping the partial chunk would leave none")
    return count


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


def _worker_cut(path):
    """In a worker: cut one image into the worker's shard; return
    ``(name, digest, shard index, first row, rows)`` or ``(name, None, reason, 0, 0)``."""
    name, digest, data, label = _cut_image(path, _WORKER["params"])
    if digest is None:
        return name, None, data, 0, 0
    first = _WORKER["shard"].append(data, label)
    return name, digest, _WORKER["index"], first, len(data)


def _cut_all(image_paths, params, shard_paths):
    """Cut every image, yielding ``(name, digest or None, shard, first row, rows | reason)``
    in image order; one worker process per shard (none for one shard), at most two
    images in flight per worker."""
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
    paths = iter(image_paths)
    try:
        for path in paths:
            pending.append(pool.submit(_worker_cut, path))
            if len(pending) >= 2 * workers:
                break
        while pending:
            result = pending.popleft().result()
            path = next(paths, None)
            if path is not None:
                pending.append(pool.submit(_worker_cut, path))
            yield result
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _extract_all(raw, image_paths, params, progress, workers=1, monitor=None):
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


class _RawPatches:
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
        return _read_rows(self.shard_paths[shard][name], self.shapes[name], start, stop, out)


# --------------------------------------------------------------------------
# The shuffled copy
# --------------------------------------------------------------------------

def _read_rows(path, shape, start, stop, out=None):
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


def _page_cache_bytes():
    """``MemAvailable`` of ``/proc/meminfo`` (bytes), or 0 where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _shuffled_copy(raw, final, order, memory_budget, progress, bucket_paths):
    """``final[name][i] = raw[name][order[i]]`` for data and label, block by block of
    the final order, each block gathered in a reused buffer and written contiguously.

    How a block's rows are found (same result either way):

    * while the shards fit in half the memory the system has available (so
      they stay in the page cache, where reading is cheap and writing is
      not), each block reads the shards sequentially, segment by segment
      into one buffer, and keeps the rows it needs;
    * beyond that, in time linear in the size and with sequential I/O only,
      a bucket pass first reads the shards once and writes each row into
      the bucket of the final block it belongs to (``bucket_paths``), with
      the row's final position; then each bucket is read and put in order.
    """
    names = ("data", "label")
    n = len(order)
    outs = {k: final.create_dataset(k, shape=(n,) + raw.shapes[k], dtype=np.float32,
                                    chunks=(min(CHUNK_ROWS, n),) + raw.shapes[k])
            for k in names}
    row_bytes = sum(raw.row_bytes.values())
    block = max(CHUNK_ROWS, int(memory_budget) // 2 // row_bytes // CHUNK_ROWS * CHUNK_ROWS)
    block = min(block, -(-n // CHUNK_ROWS) * CHUNK_ROWS)
    segment = max(1, int(memory_budget) // 4 // row_bytes)
    buffers = {k: np.empty((block,) + raw.shapes[k], np.float32) for k in names}
    with tqdm(total=n, desc="shuffle", unit="patch", disable=not progress,
              file=sys.stderr) as bar:
        if raw.count * row_bytes > _page_cache_bytes() // 2 and n > block:
            for start, rows in _bucket_blocks(raw, order, block, segment, bucket_paths, buffers):
                for k in names:
                    outs[k][start:start + len(rows[k])] = rows[k]
                bar.update(len(rows["data"]))
            return
        reads = {k: np.empty((min(segment, raw.count),) + raw.shapes[k], np.float32)
                 for k in names}
        for start in range(0, n, block):
            wanted = order[start:start + block]
            shard, pos = raw.locate(wanted)
            for k in names:
                out = buffers[k][:len(wanted)]
                for s in np.unique(shard):
                    mine = np.flatnonzero(shard == s)
                    sorter = mine[np.argsort(pos[mine])]
                    at = pos[sorter]
                    total = raw.shard_rows(int(s))
                    bounds = np.searchsorted(at, np.arange(0, total + segment, segment))
                    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
                        if hi > lo:
                            base = i * segment
                            seg = raw.read(k, int(s), base, min(base + segment, total), reads[k])
                            out[sorter[lo:hi]] = seg[at[lo:hi] - base]
                outs[k][start:start + len(wanted)] = out
            bar.update(len(wanted))


def _bucket_blocks(raw, order, block, segment, bucket_paths, buffers):
    """The bucket way of :func:`_shuffled_copy`: yield ``(start, {name: rows})`` per block."""
    n = len(order)
    final_pos = np.full(raw.count, -1, dtype=np.int64)
    final_pos[order] = np.arange(n)
    arrival = np.empty(n, dtype=np.int64)          # bucket slot -> final position
    written = np.zeros(-(-n // block), dtype=np.int64)
    reads = {k: np.empty((segment,) + raw.shapes[k], np.float32) for k in raw.shapes}
    grouped = {k: np.empty_like(b) for k, b in reads.items()}
    fds = {}
    try:
        for k, path in bucket_paths.items():
            fds[k] = os.open(path, os.O_RDWR)
            os.ftruncate(fds[k], n * raw.row_bytes[k])
        for s in range(len(raw.shard_paths)):
            total = raw.shard_rows(s)
            for start in range(0, total, segment):
                stop = min(start + segment, total)
                dest = final_pos[raw.logical(s, start, stop)]
                keep = np.flatnonzero(dest >= 0)
                by_bucket = keep[np.argsort(dest[keep] // block, kind="stable")]
                buckets = dest[by_bucket] // block
                bounds = np.concatenate([[0], np.flatnonzero(np.diff(buckets)) + 1,
                                         [len(buckets)]])
                for k in fds:
                    rows = raw.read(k, s, start, stop, reads[k])
                    g = np.take(rows, by_bucket, axis=0, out=grouped[k][:len(by_bucket)])
                    for lo, hi in zip(bounds[:-1], bounds[1:]):
                        if hi > lo:
                            b = int(buckets[lo])
                            slot = b * block + int(written[b])
                            _pwrite_all(fds[k], memoryview(g[lo:hi]).cast("B"),
                                        slot * raw.row_bytes[k])
                for lo, hi in zip(bounds[:-1], bounds[1:]):
                    if hi > lo:
                        b = int(buckets[lo])
                        slot = b * block + int(written[b])
                        arrival[slot:slot + hi - lo] = dest[by_bucket[lo:hi]]
                        written[b] += hi - lo
    finally:
        for fd in fds.values():
            os.close(fd)
    for path in raw.shard_paths:          # the rows are all in the buckets now
        for p in path.values():
            os.truncate(p, 0)
    permuted = {k: np.empty_like(b) for k, b in buffers.items()}
    for start in range(0, n, block):
        stop = min(start + block, n)
        dest = arrival[start:stop] - start
        rows = {}
        for k in bucket_paths:
            got = _read_rows(bucket_paths[k], raw.shapes[k], start, stop, buffers[k])
            out = permuted[k][:stop - start]
            out[dest] = got
            rows[k] = out
        yield start, rows


def _pwrite_all(fd, buf, offset):
    while len(buf):
        done = os.pwrite(fd, buf, offset)
        buf, offset = buf[done:], offset + done


def _write_attrs(h5, params, sources, count, count_extracted):
    attrs = h5.attrs
    attrs["creator"] = CREATOR
    attrs["format_version"] = FORMAT_VERSION
    for key, value in params.items():
        attrs[key] = value
    attrs["count"] = count
    attrs["count_extracted"] = count_extracted
    text = h5py.string_dtype()
    attrs.create("source_names", [s[0] for s in sources], dtype=text)
    attrs.create("source_sha256", [s[1] for s in sources], dtype=text)
    attrs["source_patches"] = np.array([s[2] for s in sources], dtype=np.int64)


# --------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------

class PatchFile:
    """A validated, open patch file (see :func:`open_h5`); use as a context manager.

    Attributes
    ----------
    path : str
    data, label : h5py.Dataset
        (N, C, h_in, w_in) and (N, C, h_lab, w_lab), float.
    count : int
        N.
    attrs : dict
        The file's attributes (empty for files from other tools).
    """

    def __init__(self, path, h5):
        self.path = path
        self.h5 = h5
        self.data = h5["data"]
        self.label = h5["label"]
        self.count = len(self.data)
        self.attrs = dict(h5.attrs)
        self._arrays = None

    @property
    def nbytes(self):
        """Bytes of data plus label as float32."""
        return 4 * (self.data.size + self.label.size)

    def load(self):
        """All patches as float32 arrays ``(data, label)``, read once and kept."""
        if self._arrays is None:
            self._arrays = (self.data[...].astype(np.float32, copy=False),
                            self.label[...].astype(np.float32, copy=False))
        return self._arrays

    def close(self):
        self._arrays = None
        self.h5.close()

    def __len__(self):
        return self.count

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_h5(path, scale=None, label_size=None, check_values=True):
    """Open and validate a training patch file.

    Parameters
    ----------
    path : str
        HDF5 file with ``data`` (N, C, h, w) and ``label`` (N, C, h', w')
        float datasets, from :func:`write_h5` or the authors' MATLAB code.
    scale : int, optional
        Required upscaling factor; checked against the ``scale`` attribute
        when the file has one.
    label_size : int, optional
        Side of the model's output for an input patch, in pixels; the label
        patches must have that size.
    check_values : bool
        Check that every value is finite (read block by block).

    Returns
    -------
    PatchFile

    Raises
    ------
    SRCNNError
        One-line description of the first problem found.
    """
    if not os.path.isfile(path):
        raise SRCNNError(f"no such training file: {path}")
    try:
        if not h5py.is_hdf5(path):
            raise SRCNNError(f"not an HDF5 file: {path}")
        h5 = h5py.File(path, "r")
    except OSError as e:
        raise SRCNNError(f"cannot open {path}: {e}") from None
    try:
        _validate(h5, path, scale, label_size, check_values)
        return PatchFile(path, h5)
    except SRCNNError:
        h5.close()
        raise
    except Exception as e:  # h5py and numpy raise many types on damaged files
        h5.close()
        raise SRCNNError(f"not a valid patch file: {path} ({type(e).__name__}: {e})") from None
    except BaseException:
        h5.close()
        raise


def _validate(h5, path, scale, label_size, check_values):
    for name in ("data", "label"):
        if not isinstance(h5.get(name), h5py.Dataset):
            raise SRCNNError(f"{path}: no '{name}' dataset")
        dset = h5[name]
        if dset.ndim != 4 or dset.dtype.kind != "f":
            raise SRCNNError(f"{path}: '{name}' must be a 4-D float array (N, C, H, W), "
                             f"got {dset.dtype} {dset.shape}")
    data, label = h5["data"], h5["label"]
    if data.shape[:2] != label.shape[:2]:
        raise SRCNNError(f"{path}: data {data.shape} and label {label.shape} differ in "
                         "patch count or channels")
    if data.shape[0] == 0:
        raise SRCNNError(f"{path}: no patches")
    if any(l > d or (d - l) % 2 for d, l in zip(data.shape[2:], label.shape[2:])):
        raise SRCNNError(f"{path}: label patches {label.shape[2:]} cannot be centred in input "
                         f"patches {data.shape[2:]}")
    file_scale = h5.attrs.get("scale")
    if scale is not None and file_scale is not None and int(file_scale) != int(scale):
        raise SRCNNError(f"{path}: patches are for scale {int(file_scale)}, not {scale}")
    if label_size is not None and label.shape[2:] != (label_size, label_size):
        raise SRCNNError(f"{path}: label patches are {label.shape[2]}x{label.shape[3]} but the "
                         f"model outputs {label_size}x{label_size} (regenerate with "
                         f"--label-size {label_size})")
    if check_values:
        for name in ("data", "label"):
            _check_finite(h5[name], path)


def _check_finite(dset, path, block_bytes=64 << 20):
    rows = max(1, block_bytes // max(1, dset[0].nbytes))
    for start in range(0, len(dset), rows):
        if not np.isfinite(dset[start:start + rows]).all():
            raise SRCNNError(f"{path}: '{dset.name.lstrip('/')}' has NaN or infinite values "
                             f"(patches {start}..{min(start + rows, len(dset)) - 1})")


def iterate_minibatches(patches, batch_size, rng, memory_budget=DEFAULT_MEMORY_BUDGET,
                        drop_last=False):
    """One epoch of shuffled minibatches from a :class:`PatchFile`.

    When all patches fit in ``memory_budget`` bytes (float32) they are loaded
    once (kept on ``patches`` for later epochs) and shuffled freely.
    Otherwise the file is read in contiguous blocks of about half of
    ``memory_budget`` bytes, the block order is shuffled and rows are
    shuffled within each block; since :func:`write_h5` already stored the
    patches in random order this is close to a full shuffle while reading
    the file sequentially. While the batches of one block are used, a
    background thread reads the next one (h5py releases the GIL while it
    reads), so training does not wait for the disk; the two blocks together
    stay within the budget. The batches are the same with or without the
    thread: all random draws are made here, in order.

    Parameters
    ----------
    patches : PatchFile
    batch_size : int
    rng : numpy.random.Generator
        Source of all randomness (block order and row order).
    memory_budget : int
        Bytes of patches held in memory.
    drop_last : bool
        Skip the final smaller batch (of each block, in the streamed mode).

    Yields
    ------
    inputs : ndarray, float32, shape (B, C, h_in, w_in)
    targets : ndarray, float32, shape (B, C, h_lab, w_lab)
    """
    if batch_size < 1:
        raise SRCNNError(f"batch size must be positive, not {batch_size}")
    if patches.nbytes <= memory_budget:
        yield from _batches(*patches.load(), batch_size, rng, drop_last)
        return
    row_bytes = max(1, patches.nbytes // patches.count)
    block = max(1, memory_budget // 2 // row_bytes // batch_size) * batch_size
    starts = rng.permutation(np.arange(0, patches.count, block))
    yield from _prefetched_batches(patches, starts, block, batch_size, rng, drop_last)


def _read_block(patches, start, block):
    return (patches.data[start:start + block].astype(np.float32, copy=False),
            patches.label[start:start + block].astype(np.float32, copy=False))


def _prefetched_batches(patches, starts, block, batch_size, rng, drop_last):
    """The batches of each block in ``starts``, the next block read by a thread meanwhile."""
    from concurrent.futures import ThreadPoolExecutor

    reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="srcnn-prefetch")
    try:
        pending = reader.submit(_read_block, patches, int(starts[0]), block)
        for i in range(len(starts)):
            data, label = pending.result()
            pending = (reader.submit(_read_block, patches, int(starts[i + 1]), block)
                       if i + 1 < len(starts) else None)
            yield from _batches(data, label, batch_size, rng, drop_last)
            del data, label
    finally:
        reader.shutdown(wait=True, cancel_futures=True)


def _batches(data, label, batch_size, rng, drop_last):
    order = rng.permutation(len(data))
    end = len(data) - len(data) % batch_size if drop_last else len(data)
    for start in range(0, end, batch_size):
        idx = order[start:start + batch_size]
        yield data[idx], label[idx]
