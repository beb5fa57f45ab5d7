"""Ground-truth image sets: folders of HR images, and the photographs bundled with scikit-image.

Images come back as ``(name, ndarray)`` pairs, sorted by file name, with the
arrays of :func:`srcnn_theano.image.io.read_image` (uint8 or uint16,
``(H, W)`` or ``(H, W, 3)``; an alpha channel is dropped: evaluation is on Y).
"""
import os

from srcnn_theano.errors import SRCNNError
from srcnn_theano.image.io import list_images, read_image, write_image

#: scikit-image photographs bundled in its wheel (no download): the demo's training
#: and held-out sets; the held-out ones are also the README's unseen photographs.
SKIMAGE_TRAIN = ("astronaut", "coffee", "chelsea", "rocket")
SKIMAGE_HELD_OUT = ("camera", "coins", "ihc")  # ihc: skimage.data.immunohistochemistry


def load_ground_truth(folder):
    """Whole ground-truth images of a folder (e.g. Set5 for validation during training).

    Parameters
    ----------
    folder : str

    Returns
    -------
    list of (str, ndarray)
        ``(file name without extension, image (H, W) or (H, W, 3))``, uint8
        or uint16, sorted by file name.

    Raises
    ------
    SRCNNError
        Missing folder, no images, an unreadable image.
    """
    paths = list_images(folder)
    if not paths:
        raise SRCNNError(f"no images in folder: {folder}")
    images = []
    for path in paths:
        img = read_image(path)
        if img.ndim == 3 and img.shape[2] in (2, 4):  # alpha dropped: evaluation is on Y
            img = img[:, :, 0] if img.shape[2] == 2 else img[:, :, :3]
        images.append((os.path.splitext(os.path.basename(path))[0], img))
    return images


def write_skimage_photos(folder):
    """Save the bundled scikit-image photographs as PNG.

    Returns
    -------
    (train_dir, held_out_dir) : str
        ``folder/train`` (:data:`SKIMAGE_TRAIN`) and ``folder/val`` (:data:`SKIMAGE_HELD_OUT`).
    """
    import skimage.data

    dirs = []
    for sub, names in (("train", SKIMAGE_TRAIN), ("val", SKIMAGE_HELD_OUT)):
        path = os.path.join(folder, sub)
        os.makedirs(path, exist_ok=True)
        for name in names:
            loader = getattr(skimage.data, "immunohistochemistry" if name == "ihc" else name)
            write_image(os.path.join(path, f"{name}.png"), loader())
        dirs.append(path)
    return tuple(dirs)
