"""Cutting patches from images, in this process or in worker processes.

Each image's patches go to ``targets.put(data, label, first)``
(:class:`srcnn_theano.patches.buckets.Buckets`), given the image's first
index in the unshuffled order (from the numbers of patches the images'
headers promise: :func:`expected_counts`); where they land depends only on
that, so the result is the same whichever worker cut the image, for any
number of workers.
"""
import os
import sys

import numpy as np
from tqdm import tqdm

from srcnn_theano.errors import SRCNNError
from srcnn_theano.files import sha256_file
from srcnn_theano.image.io import image_size, read_image
from srcnn_theano.patches.extract import (augment_images, augmented_shapes, extract_patches,
                                          image_to_planes, patch_count)
from srcnn_theano.patches.workers import ordered_map


def _geometry(params):
    return {k: params[k] for k in ("scale", "input_size", "label_size", "stride")}


def _cut_image(path, params):
    """One image's patches: ``(name, digest, data, label)``, or ``(name, None, reason, None)``
    for an image to skip."""
    name = os.path.basename(path)
    geometry = _geometry(params)
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


def expected_counts(image_paths, params, progress=False):
    """How many patches each image will give, from its header only (0 for an image that
    cannot be read): what :func:`_cut_image` gives unless the file is not what its
    header says. ``progress``: a tqdm bar on stderr (tens of microseconds an image)."""
    geometry = _geometry(params)
    counts = []
    for path in tqdm(image_paths, desc="headers", unit="img", disable=not progress,
                     file=sys.stderr, mininterval=0.5):
        try:
            shape = image_size(path)
        except SRCNNError:
            counts.append(0)
            continue
        shapes = augmented_shapes(shape) if params["augment"] else (shape,)
        counts.append(sum(patch_count(s, **geometry) for s in shapes))
    return counts


def _cut_run(context, run):
    """Cut a run of ``(path, first)`` into ``targets`` and flush them; return for each
    image ``(name, digest, rows)`` or ``(name, None, reason)``."""
    targets, params = context
    results = []
    for path, first in run:
        name, digest, data, label = _cut_image(path, params)
        if digest is None:
            results.append((name, None, data))
        else:
            targets.put(data, label, first)
            results.append((name, digest, len(data)))
    targets.flush()
    return results


def _runs(tasks, workers, most=8):
    """The images in runs of consecutive ones, one run per task: up to ``most`` images,
    fewer for short lists (at least 16 runs per worker), so that the parent's work per
    task (a few hundred microseconds) and the targets' flush are spread over several
    images."""
    size = max(1, min(most, len(tasks) // (16 * workers)))
    return [tasks[i:i + size] for i in range(0, len(tasks), size)]


def cut_images(tasks, targets, params, progress, workers=1, monitor=None, warn=True):
    """Cut every image of ``tasks`` (``(path, first)`` each) into ``targets``.

    ``workers`` processes (none for one) cut runs of up to 8 images
    (:func:`_runs`), at most two runs each in flight; results come
    back in image order, the progress bar and ``monitor(images_done,
    patches_so_far)`` follow them; ``warn``: a ``warning:`` line for each image skipped.

    Returns
    -------
    sources : list of (name, digest, rows)
        The images that gave patches, in order.
    skipped : list of (name, reason)
    counts : list of int
        Patches each image of ``tasks`` gave (0: skipped).
    """
    sources, skipped, counts, patches = [], [], [], 0
    runs = _runs(list(tasks), workers)
    cut = ordered_map(_cut_run, runs, (targets, params), workers)
    try:
        with tqdm(total=len(tasks), desc="patches", unit="img", disable=not progress,
                  file=sys.stderr) as bar:
            for results in cut:
                for name, digest, rows in results:
                    if digest is None:
                        _skip(skipped, name, rows, warn)
                        counts.append(0)
                    else:
                        sources.append((name, digest, rows))
                        counts.append(rows)
                        patches += rows
                    if monitor is not None:
                        monitor(len(counts), patches)
                bar.update(len(results))
    finally:
        cut.close()
    return sources, skipped, counts


def _skip(skipped, name, reason, warn):
    if warn:
        tqdm.write(f"warning: skipping {name}: {reason}", file=sys.stderr)
    skipped.append((name, reason))
