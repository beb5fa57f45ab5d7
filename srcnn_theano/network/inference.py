"""Running a trained SRCNN on whole images of any size, in tiles.

The compiled Theano ``predict`` function is built once per architecture and
padding and shared (weights are swapped into it), because compiling costs
seconds and the weights are only shared variables. Across processes it is
kept on disk, pickled with its model (:mod:`srcnn_theano.network.cache`).

Tiling is exact: each tile is cut with a margin of ``border`` pixels of real
context (the network's receptive-field radius), and only its centre is
kept, so the result equals the untiled one; at the image edges the tile
edge *is* the image edge, where the per-layer padding applies as usual.
"""
import numpy as np

from srcnn_theano.network import cache
from srcnn_theano.network.functions import compile_predict
from srcnn_theano.network.model import SRCNN

_COMPILED = {}
PREDICT_TILE = 512  #: output pixels per tile side of one compiled-function call


def compiled_model(architecture, padding="replicate", impl=None):
    """A cached ``(model, predict)`` pair for an architecture dict, padding and
    convolution ``impl`` (see :mod:`srcnn_theano.network.model`)."""
    key = (tuple(sorted(architecture.items())), padding, impl)
    if key not in _COMPILED:
        def build():
            model = SRCNN(**architecture, padding=padding, impl=impl)
            return model, compile_predict(model)

        params = {"architecture": dict(sorted(architecture.items())), "padding": padding,
                  "impl": impl}
        _COMPILED[key] = cache.load_or_build("predict", params, build)
    return _COMPILED[key]


class Predictor:
    """SRCNN forward pass on whole images.

    Parameters
    ----------
    weights : srcnn_theano.network.weights.Weights
    padding : {'replicate', 'same'}
        ``replicate`` is the authors' test-time behaviour.
    tile : int or None
        Tile side (pixels of output kept per tile); ``None`` disables tiling.
    impl : {'gemm', 'corrmm'} or None
        How the convolutions are computed (same results); None: the model's
        default (``gemm`` on the CPU).
    """

    def __init__(self, weights, padding="replicate", tile=PREDICT_TILE, impl=None):
        if padding == "valid":
            raise ValueError("whole-image prediction needs 'replicate' or 'same' padding")
        self.weights = weights
        self.padding = padding
        self.tile = tile
        self.model, self._fn = compiled_model(weights.architecture, padding, impl)

    def __call__(self, image):
        """Run the network.

        Parameters
        ----------
        image : ndarray (H, W) for one channel or (C, H, W), float in [0, 1]
            The bicubic-upscaled input.

        Returns
        -------
        ndarray float32, same shape, not clipped.
        """
        self.model.set_weights(self.weights.arrays)
        x = np.asarray(image, dtype=np.float32)
        squeeze = x.ndim == 2
        if squeeze:
            x = x[None]
        out = self._run(x[None])[0]
        return out[0] if squeeze else out

    def _run(self, x):
        n, c, h, w = x.shape
        t = self.tile
        if t is None or (h <= t and w <= t):
            return self._fn(x)
        m = self.model.border
        out = np.empty_like(x)
        for top in range(0, h, t):
            for left in range(0, w, t):
                y0, x0 = max(top - m, 0), max(left - m, 0)
                y1, x1 = min(top + t + m, h), min(left + t + m, w)
                res = self._fn(np.ascontiguousarray(x[:, :, y0:y1, x0:x1]))
                bh, bw = min(t, h - top), min(t, w - left)
                out[:, :, top:top + bh, left:left + bw] = \
                    res[:, :, top - y0:top - y0 + bh, left - x0:left - x0 + bw]
        return out
