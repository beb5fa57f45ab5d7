"""The HDF5 patch file: its format, a validated reader and the minibatch sampler.

File layout written by :func:`srcnn_theano.patches.writer.write_h5` (format version 1)::

    data   float32 (N, C, input_size, input_size)  chunks (128, C, ...)
    label  float32 (N, C, label_size, label_size)  chunks (128, C, ...)
    attrs  creator, format_version, scale, input_size, label_size, stride,
           channels, augment, seed, drop_partial_chunk, count,
           count_extracted, source_names, source_sha256, source_patches

``C`` is 1 for ``channels='y'`` (the paper) and 3 for ``channels='rgb'``.
Values are 0-1 floats (:mod:`srcnn_theano.patches.extract`). The patches
are shuffled (MATLAB ``randperm``) and written in chunks of 128; the
authors' MATLAB writer drops the last partial chunk
(``drop_partial_chunk=True`` there, off by default). The reader also opens
the authors' MATLAB-made files (``data``/``label`` only, no attributes).
"""
import os

import h5py
import numpy as np

from srcnn_theano.errors import SRCNNError

FORMAT_VERSION = 1
CREATOR = "srcnn_theano"
CHUNK_ROWS = 128
DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes
_LIBVER = ("v108", "latest")  # HDF5 >= 1.8 readers; allows attributes over 64 KiB


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
