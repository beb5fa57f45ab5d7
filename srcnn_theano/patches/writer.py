"""Writing the HDF5 patch file, atomically: every patch's final row from the images'
headers, the patches cut by the workers straight into their block (bucket) of the
output's rows, then each bucket sorted in place (:mod:`srcnn_theano.patches.buckets`).

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
from srcnn_theano.patches.buckets import Buckets
from srcnn_theano.patches.cutting import cut_images, expected_counts
from srcnn_theano.patches.extract import check_channels, check_geometry
from srcnn_theano.patches.store import (_LIBVER, CHUNK_ROWS, CREATOR, DEFAULT_MEMORY_BUDGET,
                                        FORMAT_VERSION)
from srcnn_theano.patches.workers import ordered_map, shared_counters


BLOCK_BYTES = 64 << 20   # a bucket's rows, unless the file is huge (see _block_rows)
MAX_BUCKETS = 512


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

    The images' sizes, read from their headers first, give every patch its
    final row before it is cut. Images are then cut by ``workers`` processes,
    at most two runs of images each in flight, each patch written to the next
    free row of its block (bucket) of the output's rows; then the workers
    sort each bucket in place (:mod:`srcnn_theano.patches.buckets`). No patch
    travels through a pipe and none is copied to scratch files (8 bytes a
    patch are); the I/O is in large runs, in time linear in the size. Memory
    stays under about ``memory_budget`` plus the workers' images and stages
    (32 MiB each) however many images there are, plus 8 bytes a patch (the
    final row of every patch, shared with the workers; 16 while the
    permutation is drawn). The file is the same, byte for byte in its
    datasets and attributes, whatever ``workers`` and ``memory_budget``. The
    output appears (:func:`srcnn_theano.files.publish`: exclusively unless
    ``force``) only once complete; on any error or
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
        Bytes of patches all workers hold at once while sorting the buckets (a
        bucket and its rows in order, per worker).
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
        Bad parameters, existing output without ``force`` (also one another
        process wrote meanwhile: :class:`~srcnn_theano.errors.OutputExistsError`), output folder
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
            final_path = stack.enter_context(atomic_output(output, suffix=".h5", replace=force))

            def scratch(name):
                return stack.enter_context(scratch_file(output, f".{name}"))

            sources, skipped, count_extracted = _cut_and_shuffle(
                final_path, scratch, image_paths, params, shapes, memory_budget, progress,
                workers, monitor)
            count = _final_count(count_extracted, drop_partial_chunk)
            with h5py.File(final_path, "r+", libver=_LIBVER) as final:
                _write_attrs(final, params, sources, count, count_extracted)
    except OSError as e:
        raise SRCNNError(f"cannot write {output}: {e}") from None
    return H5Summary(output, count, count_extracted, len(sources), skipped)


def _cut_and_shuffle(final_path, scratch, image_paths, params, shapes, memory_budget, progress,
                     workers, monitor):
    """Both passes of :mod:`~srcnn_theano.patches.buckets` into ``final_path``; returns
    ``(sources, skipped, count_extracted)``.

    Every image's place in the unshuffled order comes from the number of
    patches its header promises (:func:`expected_counts`). An image that gives
    another number (a file whose header does not describe it) moved every
    later image's patches: the images are then cut again with the numbers
    they gave.
    """
    expected = expected_counts(image_paths, params, progress)
    slots = scratch("slots")
    for attempt in range(2):
        count_extracted = sum(expected)
        count = count_extracted   # the partial-chunk drop; none left is an error once cut
        if params["drop_partial_chunk"]:
            count = count_extracted // CHUNK_ROWS * CHUNK_ROWS
        final_pos = np.full(count_extracted, -1, dtype=np.int64)
        final_pos[np.random.default_rng(params["seed"]).permutation(count_extracted)[:count]] = \
            np.arange(count)
        chunk_rows = min(CHUNK_ROWS, count) or 1
        block = _block_rows(count, chunk_rows, shapes, memory_budget, workers)
        buckets = -(-count // block)
        os.truncate(slots, 0)
        with h5py.File(final_path, "w", libver=_LIBVER) as final:
            outs = _create_datasets(final, shapes, count)
            offsets = {k: _chunk_offsets(d) for k, d in outs.items()}
        targets = Buckets(final_pos, block, shapes, final_path, offsets, chunk_rows, slots,
                          shared_counters(buckets))
        firsts = np.cumsum([0] + expected[:-1]).tolist()
        sources, skipped, counts = cut_images(list(zip(image_paths, firsts)), targets,
                                              params, progress, workers, monitor,
                                              warn=attempt == 0)
        if counts == expected:
            break
        expected = counts
        if attempt == 0:
            tqdm.write("note: some images are not the size their headers say: cutting again",
                       file=sys.stderr)
    else:
        raise SRCNNError("the training images changed while they were being cut")
    if count_extracted == 0:
        raise SRCNNError(f"no usable training image among {len(image_paths)} file(s)")
    with tqdm(total=count, desc="shuffle", unit="patch", disable=not progress,
              file=sys.stderr) as bar:
        for rows in ordered_map(_assemble, range(buckets), targets, workers):
            bar.update(rows)
    return sources, skipped, count_extracted


def _assemble(buckets, b):
    return buckets.assemble(b)


def _block_rows(count, chunk_rows, shapes, memory_budget, workers):
    """Rows per bucket, a multiple of ``chunk_rows``: BLOCK_BYTES (fresh memory is slow
    on VMs: small blocks; more blocks, smaller writes from each stage), more for huge
    files so that there are at most about MAX_BUCKETS, and within the budget: each
    worker holds a bucket and its rows in order."""
    row = 4 * sum(int(np.prod(v)) for v in shapes.values())
    rows = min(max(BLOCK_BYTES // row, count // MAX_BUCKETS),
               int(memory_budget) // (2 * workers * row))
    block = max(1, rows // chunk_rows) * chunk_rows
    return min(block, -(-count // chunk_rows) * chunk_rows) or 1


def _create_datasets(final, shapes, n):
    """``data`` and ``label``: ``n`` float32 rows of ``shapes``, in chunks of
    :data:`CHUNK_ROWS` rows (all ``n`` for fewer), all allocated now and never filled
    (every row is written: no zeros written first), so that each chunk has a fixed
    place in the file. None for ``n == 0``."""
    if n == 0:
        return {}
    for k, shape in shapes.items():
        # h5py's create_dataset would fill the chunks with zeros (it sets the fill
        # time to "at allocation"): the property list is ours.
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((min(CHUNK_ROWS, n),) + shape)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
        dcpl.set_obj_track_times(False)   # as h5py: no timestamps, the same bytes every run
        h5py.h5d.create(final.id, k.encode(), h5py.h5t.IEEE_F32LE,
                        h5py.h5s.create_simple((n,) + shape), dcpl=dcpl)
    return {k: final[k] for k in shapes}


def _chunk_offsets(dataset, iterate=True):
    """File offset of each chunk of an unfiltered, allocated ``dataset``, in row order
    (int64 array). ``iterate``: in one call (``chunk_iter``, HDF5 >= 1.14), else chunk by
    chunk (slower: ~40 us each)."""
    rows = dataset.chunks[0]
    offsets = np.full(dataset.id.get_num_chunks(), -1, dtype=np.int64)
    chunk_bytes = rows * dataset.dtype.itemsize * int(np.prod(dataset.chunks[1:]))

    def visit(info):
        assert info.filter_mask == 0 and info.size == chunk_bytes, info
        offsets[info.chunk_offset[0] // rows] = info.byte_offset

    if iterate and hasattr(dataset.id, "chunk_iter"):
        dataset.id.chunk_iter(visit)
    else:
        for i in range(len(offsets)):
            visit(dataset.id.get_chunk_info(i))
    assert len(offsets) == -(-len(dataset) // rows) and (offsets >= 0).all()
    return offsets


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


