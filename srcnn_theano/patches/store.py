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
             memory_budget=DEFAULT_MEMORY_BUDGET):
    """Cut training patches from images and write them, shuffled, to an HDF5 file.

    Patches are streamed image by image into an unshuffled temporary file,
    then copied into the final datasets in shuffled order block by block, so
    memory stays under about ``memory_budget`` however many images there are
    (disk needs about twice the output size while writing).
    The output appears (``os.replace``) only once complete; on any error or
    ``KeyboardInterrupt`` the temporary files are removed.

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
        Bytes of patches held in memory at once while shuffling.

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
    check_outputs([(p, output) for p in image_paths], force)
    params = dict(scale=scale, input_size=int(input_size), label_size=int(label_size),
                  stride=int(stride), channels=channels, augment=bool(augment), seed=int(seed),
                  drop_partial_chunk=bool(drop_partial_chunk))
    try:
        with atomic_output(output, suffix=".h5") as final_path, \
                scratch_file(output, suffix=".unshuffled.h5") as raw_path:
            with h5py.File(raw_path, "w", libver=_LIBVER) as raw:
                sources, skipped = _extract_all(raw, image_paths, params, progress)
                count_extracted = len(raw["data"])
                if count_extracted == 0:
                    raise SRCNNError(f"no usable training image among {len(image_paths)} file(s)")
                count = _final_count(count_extracted, drop_partial_chunk)
                order = np.random.default_rng(seed).permutation(count_extracted)[:count]
                with h5py.File(final_path, "w", libver=_LIBVER) as final:
                    _shuffled_copy(raw, final, order, memory_budget, progress)
                    _write_attrs(final, params, sources, count, count_extracted)
    except OSError as e:
        raise SRCNNError(f"cannot write {output}: {e}") from None
    return H5Summary(output, count, count_extracted, len(sources), skipped)


def _final_count(count_extracted, drop_partial_chunk):
    if not drop_partial_chunk:
        return count_extracted
    count = count_extracted // CHUNK_ROWS * CHUNK_ROWS
    if count == 0:
        raise SRCNNError(f"only {count_extracted} patches, fewer than one chunk of {CHUNK_ROWS}: "
                         "dropping the partial chunk would leave none")
    return count


def _extract_all(raw, image_paths, params, progress):
    """Append every image's patches to ``raw``; return (sources, skipped)."""
    channels = 1 if params["channels"] == "y" else 3
    data = _resizable(raw, "data", (channels, params["input_size"], params["input_size"]))
    label = _resizable(raw, "label", (channels, params["label_size"], params["label_size"]))
    geometry = {k: params[k] for k in ("scale", "input_size", "label_size", "stride")}
    sources, skipped = [], []
    for path in tqdm(image_paths, desc="patches", unit="img", disable=not progress, file=sys.stderr):
        name = os.path.basename(path)
        try:
            digest = sha256_file(path)
            planes = image_to_planes(read_image(path), params["channels"])
        except SRCNNError as e:
            _skip(skipped, name, str(e))
            continue
        variants = augment_images(planes) if params["augment"] else (planes,)
        n = 0
        for variant in variants:
            d, l = extract_patches(variant, **geometry)
            _append(data, d)
            _append(label, l)
            n += len(d)
        if n == 0:
            _skip(skipped, name, f"too small ({planes.shape[1]}x{planes.shape[0]}) for "
                                 f"{params['input_size']}-pixel patches at scale {params['scale']}")
            continue
        sources.append((name, digest, n))
    return sources, skipped


def _skip(skipped, name, reason):
    tqdm.write(f"warning: skipping {name}: {reason}", file=sys.stderr)
    skipped.append((name, reason))


def _resizable(h5, name, row_shape):
    return h5.create_dataset(name, shape=(0,) + row_shape, maxshape=(None,) + row_shape,
                             chunks=(CHUNK_ROWS,) + row_shape, dtype=np.float32)


def _append(dset, rows):
    start = len(dset)
    dset.resize(start + len(rows), axis=0)
    dset[start:] = rows


def _shuffled_copy(raw, final, order, memory_budget, progress):
    """``final[name][i] = raw[name][order[i]]`` for data and label, block by block.

    Each block of ``order`` (about ``memory_budget`` bytes of patches) is
    gathered in permuted order with :func:`_gather_into` and written
    contiguously. With the whole file under the budget this is one
    sequential read; otherwise each block re-reads the raw file sequentially,
    which is much faster than scattered HDF5 reads.
    """
    names = ("data", "label")
    block = max(1, int(memory_budget) // sum(raw[n][0].nbytes for n in names))
    outs = {n: final.create_dataset(n, shape=(len(order),) + raw[n].shape[1:], dtype=np.float32,
                                    chunks=(min(CHUNK_ROWS, len(order)),) + raw[n].shape[1:])
            for n in names}
    with tqdm(total=len(order), desc="shuffle", unit="patch", disable=not progress,
              file=sys.stderr) as bar:
        for start in range(0, len(order), block):
            wanted = order[start:start + block]
            sorter = np.argsort(wanted)
            for n in names:
                permuted = np.empty((len(wanted),) + raw[n].shape[1:], np.float32)
                _gather_into(permuted, sorter, raw[n], wanted[sorter])
                outs[n][start:start + len(wanted)] = permuted
            bar.update(len(wanted))


def _gather_into(out, positions, dset, rows, segment=16 * CHUNK_ROWS):
    """``out[positions[i]] = dset[rows[i]]`` for sorted ``rows``, reading ``segment`` rows at a time."""
    bounds = np.searchsorted(rows, np.arange(0, len(dset) + segment, segment))
    for s, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        if hi > lo:
            base = s * segment
            out[positions[lo:hi]] = dset[base:base + segment][rows[lo:hi] - base]


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
    Otherwise the file is read in contiguous blocks of about
    ``memory_budget`` bytes, the block order is shuffled and rows are
    shuffled within each block; since :func:`write_h5` already stored the
    patches in random order this is close to a full shuffle while reading
    the file sequentially.

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
    block = max(1, memory_budget // row_bytes // batch_size) * batch_size
    for start in rng.permutation(np.arange(0, patches.count, block)):
        stop = start + block
        data = patches.data[start:stop].astype(np.float32, copy=False)
        label = patches.label[start:stop].astype(np.float32, copy=False)
        yield from _batches(data, label, batch_size, rng, drop_last)


def _batches(data, label, batch_size, rng, drop_last):
    order = rng.permutation(len(data))
    end = len(data) - len(data) % batch_size if drop_last else len(data)
    for start in range(0, end, batch_size):
        idx = order[start:start + batch_size]
        yield data[idx], label[idx]
