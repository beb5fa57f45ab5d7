"""Weight files: the project's own ``.npz`` format and the authors' ``.mat`` files.

Project format (``.npz``, read with ``allow_pickle=False``)
------------------------------------------------------------
``conv1.W`` (n1, C, f1, f1), ``conv1.b`` (n1,), ``conv2.W`` (n2, n1, f2, f2),
``conv2.b`` (n2,), ``conv3.W`` (C, n2, f3, f3), ``conv3.b`` (C,): float32
correlation kernels (as :class:`srcnn_theano.network.model.SRCNN` applies them), and
``meta``: a JSON string with ``format`` (1), ``architecture`` (f1, f2, f3,
n1, n2, channels), ``scale`` and ``provenance`` (free-form: how it was made).

Authors' format (``SRCNN_v1/model/<arch>/x<scale>.mat``)
--------------------------------------------------------
float64 ``weights_conv1`` (f1*f1, n1), ``biases_conv1`` (n1, 1),
``weights_conv2`` (n1, f2*f2, n2), ``biases_conv2`` (n2, 1),
``weights_conv3`` (n2, f3*f3), ``biases_conv3`` (1, 1). Each kernel is a
column of f*f values in MATLAB's column-major order (``reshape(w, f, f)``),
applied by correlation (``imfilter``), so the conversion is a Fortran-order
reshape and no flip. The scale is not stored; it is read from the file
name (``x3.mat``) when present.
"""
import io
import json
import os
import re

import numpy as np

from srcnn_theano.errors import SRCNNError
from srcnn_theano.files import atomic_write_bytes

FORMAT_VERSION = 1
_KEYS = ("conv1.W", "conv1.b", "conv2.W", "conv2.b", "conv3.W", "conv3.b")


class Weights:
    """Network weights plus what they are: architecture, scale, provenance.

    Attributes
    ----------
    arrays : dict of str -> float32 ndarray (see the module docstring)
    architecture : dict with f1, f2, f3, n1, n2, channels
    scale : int or None
    provenance : dict
    """

    def __init__(self, arrays, architecture, scale=None, provenance=None):
        self.arrays = arrays
        self.architecture = architecture
        self.scale = scale
        self.provenance = provenance or {}

    @property
    def name(self):
        a = self.architecture
        return f"{a['f1']}-{a['f2']}-{a['f3']}"

    def build_model(self, padding="replicate"):
        """An :class:`~srcnn_theano.network.model.SRCNN` of this architecture holding these weights."""
        from srcnn_theano.network.model import SRCNN

        model = SRCNN(**self.architecture, padding=padding)
        model.set_weights(self.arrays)
        return model

    def check_scale(self, scale):
        """Raise :class:`SRCNNError` if the weights were made for another scale."""
        if self.scale is not None and scale is not None and int(scale) != int(self.scale):
            raise SRCNNError(f"these weights were trained for x{self.scale}, not x{scale}")


def architecture_of(arrays):
    """Infer (f1, f2, f3, n1, n2, channels) from weight shapes, checking consistency."""
    try:
        w1, w2, w3 = arrays["conv1.W"], arrays["conv2.W"], arrays["conv3.W"]
        n1, c, f1, f1b = w1.shape
        n2, n1b, f2, f2b = w2.shape
        c3, n2b, f3, f3b = w3.shape
    except (KeyError, ValueError) as e:
        raise SRCNNError(f"weights are not an SRCNN: {e}") from None
    ok = (f1 == f1b and f2 == f2b and f3 == f3b and n1 == n1b and n2 == n2b and c == c3
          and arrays["conv1.b"].shape == (n1,) and arrays["conv2.b"].shape == (n2,)
          and arrays["conv3.b"].shape == (c,))
    if not ok:
        shapes = ", ".join(f"{k} {arrays[k].shape}" for k in _KEYS)
        raise SRCNNError(f"inconsistent SRCNN weight shapes: {shapes}")
    if min(f1, f2, f3) < 1 or not f1 % 2 == f2 % 2 == f3 % 2 == 1 or min(n1, n2, c) < 1:
        raise SRCNNError(f"not an SRCNN: kernel sizes {f1}-{f2}-{f3} must be odd and filters "
                         f"{n1}/{n2}/{c} positive")
    if not all(np.isfinite(arrays[k]).all() for k in _KEYS):
        raise SRCNNError("weights contain NaN or infinite values")
    return dict(f1=f1, f2=f2, f3=f3, n1=n1, n2=n2, channels=c)


def save(path, weights, replace=True):
    """Write ``weights`` (a :class:`Weights`) to ``path`` (.npz) atomically.

    ``replace``: False publishes it exclusively, never over an existing
    file (:func:`srcnn_theano.files.publish`).
    """
    meta = dict(format=FORMAT_VERSION, architecture=weights.architecture,
                scale=weights.scale, provenance=weights.provenance)
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps(meta, sort_keys=True)),
             **{k: np.asarray(weights.arrays[k], dtype="float32") for k in _KEYS})
    atomic_write_bytes(path, buf.getvalue(), replace=replace)


def load_npz(path):
    """Read a project weights file; see the module docstring for its layout."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {k: z[k].astype("float32") for k in _KEYS}
        if not isinstance(meta, dict):
            raise ValueError("its meta is not a JSON object")
        if meta.get("format") != FORMAT_VERSION:
            raise SRCNNError(f"unsupported weights format {meta.get('format')!r} in {path}")
        try:
            arch = architecture_of(arrays)
        except SRCNNError as e:
            raise SRCNNError(f"{path}: {e}") from None
        stated = meta["architecture"]
        if arch != {k: stated[k] for k in arch}:
            raise SRCNNError(f"weights in {path} do not match their stated architecture")
        scale = meta.get("scale")
        if scale is not None and (not isinstance(scale, int) or scale < 1):
            raise ValueError(f"bad scale {scale!r}")
        return Weights(arrays, arch, scale, meta.get("provenance"))
    except SRCNNError:
        raise
    except Exception as e:  # zipfile, numpy and json raise many types on damaged files
        raise SRCNNError(f"not a valid srcnn-theano weights file: {path} "
                         f"({type(e).__name__}: {e})") from None


def mat_to_arrays(mat):
    """Convert the authors' ``.mat`` variables to project arrays (see module docstring).

    Parameters
    ----------
    mat : dict of str -> ndarray, as returned by ``scipy.io.loadmat``

    Returns
    -------
    dict of str -> float32 ndarray
    """
    try:
        w1 = np.asarray(mat["weights_conv1"], dtype=np.float64)
        w2 = np.asarray(mat["weights_conv2"], dtype=np.float64)
        w3 = np.asarray(mat["weights_conv3"], dtype=np.float64)
        b1, b2, b3 = (np.asarray(mat[f"biases_conv{i}"], dtype=np.float64).ravel() for i in (1, 2, 3))
    except KeyError as e:
        raise SRCNNError(f"missing variable {e} (expected weights_conv1..3, biases_conv1..3)") from None
    if w2.ndim == 2:  # MATLAB drops a trailing singleton: (n1, n2) means f2 = 1
        w2 = w2[:, None, :]

    def side(taps, what):
        f = int(round(np.sqrt(taps)))
        if f * f != taps or f % 2 == 0:
            raise SRCNNError(f"{what} has {taps} taps per kernel, not an odd square")
        return f

    if w1.ndim != 2 or w2.ndim != 3 or w3.ndim != 2:
        raise SRCNNError(f"unexpected shapes: weights_conv1 {w1.shape}, weights_conv2 {w2.shape}, "
                         f"weights_conv3 {w3.shape}")
    f1, f2, f3 = side(w1.shape[0], "weights_conv1"), side(w2.shape[1], "weights_conv2"), \
        side(w3.shape[1], "weights_conv3")
    n1, n2 = w1.shape[1], w2.shape[2]
    if w2.shape[0] != n1 or w3.shape[0] != n2 or b1.size != n1 or b2.size != n2 or b3.size != 1:
        raise SRCNNError(f"inconsistent shapes: weights_conv1 {w1.shape}, weights_conv2 {w2.shape}, "
                         f"weights_conv3 {w3.shape}, biases {b1.size}/{b2.size}/{b3.size}")
    # (f*f, n) column-major -> (n, 1, f, f); C-order reshape then transpose of the two
    # spatial axes is the same as reshape(order='F').
    W1 = w1.T.reshape(n1, 1, f1, f1).transpose(0, 1, 3, 2)
    W2 = w2.transpose(2, 0, 1).reshape(n2, n1, f2, f2).transpose(0, 1, 3, 2)
    W3 = w3.reshape(1, n2, f3, f3).transpose(0, 1, 3, 2)
    arrays = {"conv1.W": W1, "conv1.b": b1, "conv2.W": W2, "conv2.b": b2, "conv3.W": W3, "conv3.b": b3}
    return {k: np.ascontiguousarray(v, dtype="float32") for k, v in arrays.items()}


def _loadmat_in_child(path):
    """``scipy.io.loadmat(path)`` in a forked child process: its variables, or raise SRCNNError.

    scipy's MATLAB reader crashes the whole process (segmentation fault) on
    some damaged files, which fuzzing found; a child that dies takes nothing
    else with it. Fork is cheap (nothing is re-imported) and the variables
    of a weights file are small.
    """
    import faulthandler
    import pickle

    import scipy.io

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: read, send, exit without running any cleanup of the parent's
        os.close(r)
        faulthandler.disable()  # a crash here is expected and reported by the parent
        try:
            mat = scipy.io.loadmat(path)
            payload = ("ok", {k: v for k, v in mat.items() if not k.startswith("__")})
        except Exception as e:
            payload = ("error", f"{type(e).__name__}: {e}")
        try:
            with os.fdopen(w, "wb") as f:
                f.write(pickle.dumps(payload))
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if not data or os.WIFSIGNALED(status):
        raise SRCNNError(f"cannot read MATLAB file {path}: the MATLAB reader crashed on it "
                         "(a damaged or non-MATLAB file)")
    kind, value = pickle.loads(data)
    if kind != "ok":
        raise SRCNNError(f"cannot read MATLAB file {path} ({value})")
    return value


def load_mat(path):
    """Read one of the authors' released ``.mat`` models (in a child process: see
    :func:`_loadmat_in_child`)."""
    mat = _loadmat_in_child(path)
    try:
        arrays = mat_to_arrays(mat)
        arch = architecture_of(arrays)
    except SRCNNError as e:
        raise SRCNNError(f"{path}: {e}") from None
    except Exception as e:  # variables of unexpected types or shapes
        raise SRCNNError(f"cannot read MATLAB file {path} ({type(e).__name__}: {e})") from None
    m = re.search(r"x(\d+)\.mat$", os.path.basename(path))
    provenance = {"source": "authors' released SRCNN_v1 model (academic use only)",
                  "file": os.path.basename(os.path.dirname(os.path.abspath(path))) + "/"
                  + os.path.basename(path)}
    return Weights(arrays, arch, int(m.group(1)) if m else None, provenance)


PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pretrained")


def pretrained_path(scale):
    """Path of the project's own shipped 9-1-5 model for ``scale`` (``pretrained/x{scale}.npz``)."""
    return os.path.join(PRETRAINED_DIR, f"x{int(scale)}.npz")


def load_default(scale):
    """The shipped model for ``scale``: what every command uses when no weights are given."""
    path = pretrained_path(scale)
    if not os.path.isfile(path):
        have = sorted(n for n in os.listdir(PRETRAINED_DIR) if n.endswith(".npz")) \
            if os.path.isdir(PRETRAINED_DIR) else []
        raise SRCNNError(f"no shipped model for x{scale} (shipped: {', '.join(have) or 'none'}); "
                         "pass --weights")
    return load_npz(path)


def load(path):
    """Read a ``.npz`` project weights file or an authors' ``.mat`` file."""
    if not os.path.isfile(path):
        raise SRCNNError(f"no such weights file: {path}")
    if path.lower().endswith(".mat"):
        return load_mat(path)
    return load_npz(path)
