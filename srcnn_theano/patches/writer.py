"""Writing the HDF5 patch file: images cut (:mod:`srcnn_theano.patches.cutting`), then
shuffled into the final datasets block by block, atomically.

The layout is :mod:`srcnn_theano.patches.store`'s.
"""
import contextlib
import os
import sys
from typing import NamedTuple

import h5py
import numpy as np
from tqdm import tqdm

from srcnn_theano.allocator import keep_freed_memory
from srcnn_theano.cores import usable_cores
from srcnn_theano.errors import SRCNNError
from srcnn_theano.files import atomic_output, check_outputs, scratch_file
from srcnn_theano.patches.cutting import RawPatches, extract_all, read_rows
from srcnn_theano.patches.extract import check_channels, check_geometry
from srcnn_theano.patches.store import (_LIBVER, CHUNK_ROWS, CREATOR, DEFAULT_MEMORY_BUDGET,
                                        FORMAT_VERSION)


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

    Images are cut by ``workers`` processes, at most two runs of images each in
    flight; each worker appends its images' patches to a scratch file of its
    own (no patch travels through a pipe) and the writer keeps, in image
    order, where each image's patches are. The shuffled copy into the final
    datasets then goes block by block of the final order (at most half of
    ``memory_budget`` each): gathered from the scratch files, read
    sequentially, while they fit in the page cache; beyond that through a
    bucket pass (one bucket per final block), so that time stays linear and
    I/O sequential at any size (see :func:`_shuffled_copy`).
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
    keep_freed_memory()   # before the workers fork: they inherit it
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

            raw = RawPatches(shapes, [{k: scratch(f"worker{w}-{k}") for k in shapes}
                                       for w in range(workers)])
            sources, skipped = extract_all(raw, image_paths, params, progress, workers, monitor)
            count_extracted = raw.count
            if count_extracted == 0:
                raise SRCNNError(f"no usable training image among {len(image_paths)} file(s)")
            count = _final_count(count_extracted, drop_partial_chunk)
            order = np.random.default_rng(seed).permutation(count_extracted)[:count]
            # No chunk cache: whole chunks go straight to the file.
            with h5py.File(final_path, "w", libver=_LIBVER, rdcc_nbytes=0) as final:
                _shuffled_copy(raw, final, order, memory_budget, progress,
                               {k: scratch(f"buckets-{k}") for k in shapes})
                _write_attrs(final, params, sources, count, count_extracted)
    except OSError as e:
        raise SRCNNError(f"cannot write {output}: {e}") from None
    return H5Summary(output, count, count_extracted, len(sources), skipped)


def default_workers():
    """The number of cores this process may run on (the command line's default ``--workers``)."""
    return usable_cores()


def _final_count(count_extracted, drop_partial_chunk):
    if not drop_partial_chunk:
        return count_extracted
    count = count_extracted // CHUNK_ROWS * CHUNK_ROWS
    if count == 0:
        raise SRCNNError(f"only {count_extracted} patches, fewer than one chunk of {CHUNK_ROWS}: "
                         "dropping the partial chunk would leave none")
    return count


# --------------------------------------------------------------------------
# The shuffled copy
# --------------------------------------------------------------------------

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

    A thread writes each finished block to the datasets while the next one is
    gathered (:class:`_BlockWriter`).
    """
    names = ("data", "label")
    n = len(order)
    outs = {k: final.create_dataset(k, shape=(n,) + raw.shapes[k], dtype=np.float32,
                                    chunks=(min(CHUNK_ROWS, n),) + raw.shapes[k])
            for k in names}
    row_bytes = sum(raw.row_bytes.values())
    # At most three blocks in memory (two taking turns with the writer thread, and
    # the one read from a bucket): a quarter of the budget each.
    block = max(CHUNK_ROWS, int(memory_budget) // 4 // row_bytes // CHUNK_ROWS * CHUNK_ROWS)
    block = min(block, -(-n // CHUNK_ROWS) * CHUNK_ROWS)
    # Reads go through a small buffer (16 MiB: fresh memory costs page faults,
    # reading from the page cache is cheap); page-cache blocks are only as large
    # as needed to read the shards at most 8 times.
    segment = max(1, min(int(memory_budget) // 4, 16 << 20) // row_bytes)
    bucketed = raw.count * row_bytes > _page_cache_bytes() // 2 and n > block
    if not bucketed:
        wanted_bytes = max(64 << 20, raw.count * row_bytes // 8)
        block = min(block, max(CHUNK_ROWS, wanted_bytes // row_bytes // CHUNK_ROWS * CHUNK_ROWS))
    writer = _BlockWriter(outs, raw.shapes, block)
    try:
        with tqdm(total=n, desc="shuffle", unit="patch", disable=not progress,
                  file=sys.stderr) as bar:
            if bucketed:
                reads = {k: np.empty((block,) + raw.shapes[k], np.float32) for k in names}
                _bucket_blocks(raw, order, block, segment, bucket_paths, reads, writer, bar)
            else:
                _page_cache_blocks(raw, order, block, segment, writer, bar)
        writer.close()
    finally:
        writer.abandon()


class _BlockWriter:
    """Writes blocks of the final order to the datasets from a thread (h5py releases the
    GIL while it writes), so that the next block is gathered meanwhile; two sets of
    buffers take turns."""

    def __init__(self, outs, shapes, block):
        from concurrent.futures import ThreadPoolExecutor

        self.outs = outs
        self.sets = [{k: np.empty((block,) + shapes[k], np.float32) for k in outs}
                     for _ in range(2)]
        self.pending = [None, None]
        self.turn = 0
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="srcnn-h5write")

    def buffers(self):
        """The next free set of buffers (once its previous block is written)."""
        done, self.pending[self.turn] = self.pending[self.turn], None
        if done is not None:
            done.result()
        return self.sets[self.turn]

    def write(self, start, rows):
        """Write ``rows`` (views of the set :meth:`buffers` gave) at ``start``."""
        self.pending[self.turn] = self.pool.submit(self._write, start, rows)
        self.turn ^= 1

    def _write(self, start, rows):
        for k, a in rows.items():
            self.outs[k][start:start + len(a)] = a

    def close(self):
        """Wait for the last writes; their errors are raised here."""
        for i, f in enumerate(self.pending):
            self.pending[i] = None
            if f is not None:
                f.result()

    def abandon(self):
        self.pool.shutdown(wait=True, cancel_futures=True)


def _page_cache_blocks(raw, order, block, segment, writer, bar):
    """The page-cache way of :func:`_shuffled_copy`."""
    reads = {k: np.empty((min(segment, raw.count),) + raw.shapes[k], np.float32)
             for k in raw.shapes}
    for start in range(0, len(order), block):
        wanted = order[start:start + block]
        shard, pos = raw.locate(wanted)
        buffers, rows = writer.buffers(), {}
        for k in raw.shapes:
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
            rows[k] = out
        writer.write(start, rows)
        bar.update(len(wanted))


def _bucket_blocks(raw, order, block, segment, bucket_paths, buffers, writer, bar):
    """The bucket way of :func:`_shuffled_copy`."""
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
    for start in range(0, n, block):
        stop = min(start + block, n)
        dest = arrival[start:stop] - start
        permuted, rows = writer.buffers(), {}
        for k in bucket_paths:
            got = read_rows(bucket_paths[k], raw.shapes[k], start, stop, buffers[k])
            out = permuted[k][:stop - start]
            out[dest] = got
            rows[k] = out
        writer.write(start, rows)
        bar.update(stop - start)


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


