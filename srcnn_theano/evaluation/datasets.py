"""Ground-truth image sets: folders of HR images, the benchmark layouts, scikit-image's photographs.

:class:`Dataset` reads a set in the layouts the benchmark sets are
distributed in (a folder of HR images, SelfExSR's ``image_SRF_<s>``,
EDSR/BasicSR's ``HR/`` + ``LR_bicubic/X<s>/``, BasicSR's ``GTmod12/`` +
``LRbicx<s>/``); see :data:`LAYOUTS`.

Images come back as ``(name, ndarray)`` pairs, sorted by file name, with the
arrays of :func:`srcnn_theano.image.io.read_image` (uint8 or uint16,
``(H, W)`` or ``(H, W, 3)``; an alpha channel is dropped: evaluation is on Y).
"""
import os
import re

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


# --------------------------------------------------------------------------
# Benchmark sets as they are distributed

#: How :func:`open_dataset` reads a folder.
LAYOUTS = ("folder", "selfexsr", "edsr", "basicsr")
#: Sets in the papers' order (then any other by name) when a folder holds several.
KNOWN_ORDER = ("Set5", "Set14", "BSD100", "B100", "BSDS100", "Urban100", "Manga109")
_SRF = re.compile(r"image_SRF_(\d+)$")


def split_hr_lr(paths):
    """Ground-truth and LR files among the images of one folder.

    Files whose stem ends with ``_HR`` are the ground truth when there are
    any (a SelfExSR ``image_SRF_<s>`` folder also holds other methods'
    results, which are neither); otherwise every image is, except those
    whose stem ends with ``_LR``, which never are.

    Returns
    -------
    (hr, lr) : two lists of paths, in the order of ``paths``
    """
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    lr = [p for p, s in zip(paths, stems) if s.endswith("_LR")]
    hr = [p for p, s in zip(paths, stems) if s.endswith("_HR")]
    if not hr:
        hr = [p for p, s in zip(paths, stems) if not s.endswith("_LR")]
    return hr, lr


class Dataset:
    """A set of ground-truth images, with LR images when its layout ships them.

    Layouts (:data:`LAYOUTS`)
    -------------------------
    ``folder``
        HR images directly in ``root`` (Set5/Set14 as the authors ship
        them); :func:`split_hr_lr` keeps ``*_LR`` files out of the ground truth.
    ``selfexsr``
        ``root/image_SRF_<s>/img_NNN_SRF_<s>_HR.png`` beside ``..._LR.png``
        (and other methods' results), one folder per scale, as in the
        SelfExSR distribution (Huang et al., CVPR 2015).
    ``edsr``
        ``root/HR/*.png`` and ``root/LR_bicubic/X<s>/*x<s>.png``, as in the
        EDSR / BasicSR benchmark distribution; the HR images serve every scale.
    ``basicsr``
        ``root/GTmod12/*.png`` and ``root/LRbicx<s>/*.png`` (same names), as
        in BasicSR's own copies of Set5 and Set14; the HR images serve every scale.

    Attributes
    ----------
    name : str
        The set's name (``Set5``): the folder's, or for ``image_SRF_<s>`` and
        ``HR`` folders their parent's.
    root : str
    layout : str
    """

    def __init__(self, name, root, layout, srf_dirs=None):
        self.name, self.root, self.layout = name, root, layout
        self._srf = srf_dirs or {}

    def __repr__(self):
        return f"Dataset({self.name!r}, {self.root!r}, {self.layout!r})"

    def scales(self):
        """Scales with ground truth: those of the ``image_SRF_<s>`` folders; ``None`` means any."""
        return sorted(self._srf) if self.layout == "selfexsr" else None

    def has_scale(self, scale):
        return self.layout != "selfexsr" or int(scale) in self._srf

    def _folder(self, scale):
        if not self.has_scale(scale):
            have = ", ".join(f"x{s}" for s in sorted(self._srf))
            raise SRCNNError(f"{self.name}: no image_SRF_{scale} folder in {self.root} (it has {have})")
        sub = {"edsr": "HR", "basicsr": "GTmod12"}.get(self.layout)
        return self._srf[int(scale)] if self.layout == "selfexsr" else \
            os.path.join(self.root, sub) if sub else self.root

    def hr_paths(self, scale):
        """Ground-truth image files for ``scale``, sorted by name; never an LR file."""
        folder = self._folder(scale)
        hr = split_hr_lr(list_images(folder))[0]
        if not hr:
            raise SRCNNError(f"no ground-truth images in {folder}")
        return hr

    def lr_folder(self, scale):
        """The folder of the LR images for ``scale``, or ``None`` if the layout has none there."""
        if self.layout in ("edsr", "basicsr"):
            subs = (os.path.join("LR_bicubic", f"X{scale}"), os.path.join("LR_bicubic", f"x{scale}")) \
                if self.layout == "edsr" else (f"LRbicx{scale}",)
            for sub in subs:
                path = os.path.join(self.root, sub)
                if os.path.isdir(path):
                    return path
            return None
        folder = self._folder(scale)
        return folder if split_hr_lr(list_images(folder))[1] else None

    def lr_paths(self, scale):
        """LR image files for ``scale`` (``*_LR`` ones where HR and LR share a folder), or ``None``."""
        folder = self.lr_folder(scale)
        if folder is None:
            return None
        paths = list_images(folder)
        return paths if self.layout in ("edsr", "basicsr") else split_hr_lr(paths)[1]


def _subfolders(folder):
    return sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))


def detect_dataset(folder):
    """The :class:`Dataset` in ``folder``, or ``None`` if it is none of the layouts."""
    if not os.path.isdir(folder):
        raise SRCNNError(f"not a folder: {folder}")
    folder = os.path.normpath(folder)
    base, parent = os.path.basename(folder), os.path.dirname(folder)
    m = _SRF.match(base)
    if m:
        return Dataset(os.path.basename(parent) or base, folder, "selfexsr", {int(m.group(1)): folder})
    if base == "HR" and os.path.isdir(os.path.join(parent, "LR_bicubic")):
        return Dataset(os.path.basename(parent), parent, "edsr")
    if base == "GTmod12":
        return Dataset(os.path.basename(parent), parent, "basicsr")
    subs = _subfolders(folder)
    srf = {int(_SRF.match(d).group(1)): os.path.join(folder, d) for d in subs if _SRF.match(d)}
    if srf:
        return Dataset(base, folder, "selfexsr", srf)
    if "HR" in subs:
        return Dataset(base, folder, "edsr")
    if "GTmod12" in subs:
        return Dataset(base, folder, "basicsr")
    if list_images(folder):
        return Dataset(base, folder, "folder")
    return None


def open_dataset(folder):
    """:func:`detect_dataset`, with :class:`SRCNNError` when ``folder`` holds no set."""
    found = detect_dataset(folder)
    if found is None:
        raise SRCNNError(f"no images in {folder} (nor image_SRF_<s>/ or HR/ subfolders)")
    return found


def find_datasets(folder):
    """The sets in ``folder``: itself if it is one, else each of its subfolders that is one.

    Returns
    -------
    list of Dataset
        Several sets in :data:`KNOWN_ORDER`, then by name.
    """
    found = detect_dataset(folder)
    if found is not None:
        return [found]
    order = {name: i for i, name in enumerate(KNOWN_ORDER)}
    subs = sorted(_subfolders(folder), key=lambda d: (order.get(d, len(order)), d))
    sets = [ds for ds in (detect_dataset(os.path.join(folder, d)) for d in subs) if ds is not None]
    if not sets:
        raise SRCNNError(f"no images in {folder} or its subfolders")
    return sets


def hr_inputs(inputs, scale):
    """Ground-truth files from files and folders (any layout) given on a command line.

    Parameters
    ----------
    inputs : list of str
        Image files (taken as they are) and folders (:func:`open_dataset`).
    scale : int

    Returns
    -------
    list of str
    """
    out = []
    for p in inputs:
        out.extend(open_dataset(p).hr_paths(scale) if os.path.isdir(p) else [p])
    return out


def lr_candidates(folder, scale):
    """The LR files in ``folder`` for ``evaluate --lr``: a set's LR images (any layout) or a folder's.

    A SelfExSR set or ``image_SRF_<s>`` folder gives its ``*_LR`` files, an
    EDSR set its ``LR_bicubic/X<s>`` folder, a BasicSR set its ``LRbicx<s>``
    folder, any other folder its images.
    """
    ds = detect_dataset(folder)
    if ds is not None and ds.layout != "folder":
        paths = ds.lr_paths(scale)
        if not paths:
            raise SRCNNError(f"no x{scale} LR images in {folder}")
        return paths
    paths = list_images(folder)
    lr = split_hr_lr(paths)[1]
    if not (lr or paths):
        raise SRCNNError(f"no images in folder: {folder}")
    return lr or paths
