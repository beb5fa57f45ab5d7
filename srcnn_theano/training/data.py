"""The training data of a run: cutting the patch file, opening it against a config, its provenance."""
import os

from srcnn_theano.errors import SRCNNError
from srcnn_theano.files import sha256_file
from srcnn_theano.image.io import list_images
from srcnn_theano.patches.store import open_h5
from srcnn_theano.patches.writer import write_h5
from srcnn_theano.training.checkpoint import hold_run


def initial_model(config):
    """The :class:`~srcnn_theano.network.model.SRCNN` with the config's initial weights (not compiled)."""
    from srcnn_theano.network.model import SRCNN

    return SRCNN(**config.architecture(), padding=config.padding, init_std=config.init_std,
                 seed=config.seed)


def label_size(config, input_size=33):
    """Label patch side (pixels) the config's model outputs for ``input_size`` inputs."""
    return initial_model(config).output_size(input_size)


def prepare_h5(images_dir, out_dir, config, input_size=33, stride=14, force=False, progress=True):
    """Cut the patch file for ``config`` from a folder of images (with :func:`write_h5`).

    Returns
    -------
    str
        ``<out_dir>/train_x<scale>.h5``, with labels of :func:`label_size`.
        An existing file is reused (``force=False``) if :func:`open_h5` accepts it.
        The run folder is held by this process meanwhile (:func:`hold_run`).
    """
    paths = list_images(images_dir)
    if not paths:
        raise SRCNNError(f"no images in folder: {images_dir}")
    with hold_run(out_dir):
        output = os.path.join(out_dir, f"train_x{config.scale}.h5")
        if os.path.exists(output) and not force:
            open_h5(output, config.scale, label_size(config, input_size), check_values=False).close()
            return output
        write_h5(output, paths, config.scale, input_size=input_size,
                 label_size=label_size(config, input_size), stride=stride, seed=config.seed,
                 force=True, progress=progress)
        return output


def open_patches(path, config):
    """Open ``path`` with :func:`open_h5`, checked against the config's scale and model."""
    model = initial_model(config)
    with open_h5(path, config.scale, check_values=False) as probe:
        shape = probe.data.shape
    if shape[1] != 1:
        raise SRCNNError(f"{path}: patches have {shape[1]} channels; training (and validation, "
                         "on Y as in the paper) needs Y patches (generate_h5.py --channels y)")
    if model.output_size(shape[2]) < 1:
        raise SRCNNError(f"{path}: {shape[2]}x{shape[3]} input patches are too small for "
                         f"{model.name} with {model.padding} padding")
    return open_h5(path, config.scale, label_size=model.output_size(shape[2]), check_values=True)


def data_provenance(patches):
    """What identifies the training data: the file's attributes and source hashes."""
    attrs = patches.attrs
    info = {"file": os.path.basename(patches.path), "count": patches.count}
    for key in ("scale", "input_size", "label_size", "stride", "seed", "augment"):
        if key in attrs:
            info[key] = attrs[key].item() if hasattr(attrs[key], "item") else attrs[key]
    if "source_sha256" in attrs:
        names = [str(n) for n in attrs.get("source_names", [])]
        info["sources_sha256"] = dict(zip(names, (str(h) for h in attrs["source_sha256"])))
    else:  # not made by write_h5 (e.g. the authors' MATLAB file): hash the file itself
        info["sha256"] = sha256_file(patches.path)
    return info


def weights_provenance(path):
    """``{"file", "sha256"}`` of a weights file a run starts from (None for none)."""
    if path is None:
        return None
    return {"file": os.path.abspath(path), "sha256": sha256_file(path)}
