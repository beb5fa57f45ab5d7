"""The SRCNN network as Lasagne layers.

Three convolutions on NCHW float32 tensors in [0, 1]::

    F1 = max(0, W1 * Y  + B1)   # patch extraction,   f1 x f1, n1 filters
    F2 = max(0, W2 * F1 + B2)   # non-linear mapping, f2 x f2, n2 filters
    F  =        W3 * F2 + B3    # reconstruction,     f3 x f3, linear output

``*`` is *correlation* here (``filter_flip=False``), as in MATLAB's
``imfilter`` and the authors' released weights, so kernels are stored the
way the authors' test code applies them and no flipping happens anywhere.

Padding modes
-------------
``valid``
    No padding; how the paper trains (33x33 in, 21x21 out for 9-1-5).
``same``
    Zero padding of ``f // 2`` per layer; output size equals input size.
``replicate``
    Edge replication of ``f // 2`` per layer, which is what the authors'
    MATLAB test code does (``imfilter(..., 'same', 'replicate')``).

How the correlations are computed (``impl``)
--------------------------------------------
``'gemm'`` (default on the CPU)
    Each layer is one :class:`~srcnn_theano.network.banded_corr.BandedCorr`
    op on pixel-major (NHWC) activations: the image is walked in bands of
    rows that stay in the L2 cache, each band's correlation is one or a few
    BLAS products, and the bias and the ReLU are applied while the band is
    in the cache. The padding is done inside the op (zeros for ``same``,
    edge pixels for ``replicate``). Gradients are the same op on the
    flipped kernel (input) and :class:`~srcnn_theano.network.banded_corr.BandedCorrGradW`
    (weights). See :mod:`srcnn_theano.network.banded_corr` for why and how.

    Activations stay pixel-major between layers (the layer's NCHW output is
    a transposed *view*, and Theano merges the back-to-back transposes), so
    no layout copy is made anywhere. Same products and sums as a
    correlation, in another order: equal to ``corrmm`` within float32
    rounding.
``'corrmm'``
    Theano's ``conv2d`` (CorrMM), the reference the tests compare against.
"""
import numpy as np

from srcnn_theano.backend import T, lasagne, on_gpu, theano
from srcnn_theano.network import fused_corr  # noqa: F401  (registers the fusing rewrites)
from srcnn_theano.network.banded_corr import BandedCorr, weight_matrix

ARCHITECTURES = {
    "9-1-5": dict(f1=9, f2=1, f3=5, n1=64, n2=32),
    "9-3-5": dict(f1=9, f2=3, f3=5, n1=64, n2=32),
    "9-5-5": dict(f1=9, f2=5, f3=5, n1=64, n2=32),
}
PADDINGS = ("valid", "same", "replicate")
DEFAULT_FILTERS = (64, 32)  #: n1, n2 of the paper's networks


def parse_architecture(arch, filters=None):
    """Any SRCNN ``f1-f2-f3`` with any ``n1,n2``: the TPAMI paper's ablation networks.

    Parameters
    ----------
    arch : str
        Odd kernel sizes ``'f1-f2-f3'``, e.g. ``'9-1-5'`` or ``'11-1-7'``.
    filters : str, (int, int) or None
        ``n1, n2`` as ``'128,64'`` or a pair; ``None`` is 64, 32 (the paper's).

    Returns
    -------
    dict with ``f1, f2, f3, n1, n2`` (ints), for ``SRCNN(**arch, ...)``.

    Raises
    ------
    ValueError
        A malformed spec, an even or non-positive kernel, filters < 1.
    """
    parts = str(arch).split("-")
    try:
        f1, f2, f3 = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"architecture must be f1-f2-f3 (e.g. 9-1-5, 11-1-7), not {arch!r}") from None
    if any(f < 1 or f % 2 == 0 for f in (f1, f2, f3)):
        raise ValueError(f"kernel sizes must be odd and positive, got {arch}")
    n1, n2 = parse_filters(DEFAULT_FILTERS if filters is None else filters)
    return dict(f1=f1, f2=f2, f3=f3, n1=n1, n2=n2)


def parse_filters(filters):
    """``'128,64'`` or ``(128, 64)`` -> ``(128, 64)``: n1, n2, both positive (ValueError otherwise)."""
    if isinstance(filters, str):
        try:
            filters = tuple(int(p) for p in filters.split(","))
        except ValueError:
            raise ValueError(f"filters must be n1,n2 (e.g. 64,32), not {filters!r}") from None
    filters = tuple(int(n) for n in filters)
    if len(filters) != 2 or min(filters) < 1:
        raise ValueError(f"filters must be two positive numbers n1,n2, not {','.join(map(str, filters))}")
    return filters
IMPLS = ("gemm", "corrmm")
_LINEAR = (lasagne.nonlinearities.linear, lasagne.nonlinearities.identity)


def corr2d_nhwc(x, W, filter_shape, pad="valid", edge=False, relu=False, b=None,
                strategy="auto"):
    """Correlation (no kernel flip) plus bias, optionally ReLU, of a pixel-major batch.

    Parameters
    ----------
    x : theano 4-D tensor (N, H, W, C)
        Pixel-major: ``nchw.dimshuffle(0, 2, 3, 1)``.
    W : theano 4-D tensor (O, C, f, f), odd f
    filter_shape : tuple of ints, W's shape (needed to build the graph)
    pad : {'valid', 'same'}
        ``same`` pads by ``f // 2`` (output H x W); ``valid`` gives
        (H - f + 1) x (W - f + 1).
    edge : bool
        With ``same``: pad with edge pixels instead of zeros (``replicate``).
    relu : bool
        ``max(0, .)`` applied to the result inside the op.
    b : theano vector (O,) or None
    strategy : see :class:`~srcnn_theano.network.banded_corr.BandedCorr`

    Returns
    -------
    theano 4-D tensor (N, H', W', O)
    """
    f = int(filter_shape[2])
    if pad not in ("valid", "same"):
        raise ValueError(f"pad must be 'valid' or 'same', not {pad!r}")
    if edge and pad != "same":
        raise ValueError("edge padding needs pad='same'")
    op = BandedCorr(f, f // 2 if pad == "same" else 0, edge=edge, relu=relu, strategy=strategy,
                    has_bias=b is not None)
    args = (x, weight_matrix(W)) + ((b,) if b is not None else ())
    return op(*args)


class ReplicatePadLayer(lasagne.layers.Layer):
    """Pad the two spatial axes of an NCHW tensor by repeating edge pixels.

    Input (N, C, H, W) -> output (N, C, H + 2 * width, W + 2 * width).
    """

    def __init__(self, incoming, width, **kwargs):
        super().__init__(incoming, **kwargs)
        self.width = int(width)

    def get_output_shape_for(self, input_shape):
        grow = lambda n: None if n is None else n + 2 * self.width  # noqa: E731
        return input_shape[:2] + (grow(input_shape[2]), grow(input_shape[3]))

    def get_output_for(self, input, **kwargs):
        p = self.width
        if p == 0:
            return input
        rows = T.concatenate([input[:, :, :1]] * p + [input] + [input[:, :, -1:]] * p, axis=2)
        return T.concatenate([rows[:, :, :, :1]] * p + [rows] + [rows[:, :, :, -1:]] * p, axis=3)


class CorrConv2DLayer(lasagne.layers.Conv2DLayer):
    """Lasagne's 2-D convolution layer computing a correlation (no kernel flip).

    ``pad`` is ``'valid'`` (no padding) or ``'same'`` (padding of ``f // 2``:
    zeros, or edge pixels when ``edge``). W has shape (num_filters,
    input_channels, f, f). ``impl`` is ``'gemm'`` (:func:`corr2d_nhwc`, the
    default) or ``'corrmm'`` (Theano's ``conv2d``, zero padding only, as
    ``border_mode='half'`` rather than Lasagne 0.1's crop of a full
    convolution); see the module docstring.
    """

    def __init__(self, incoming, num_filters, filter_size, pad="valid", impl="gemm", edge=False,
                 **kwargs):
        if pad not in ("valid", "same"):
            raise ValueError(f"pad must be 'valid' or 'same', not {pad!r}")
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, not {impl!r}")
        if edge and (impl != "gemm" or pad != "same"):
            raise ValueError("edge padding needs impl='gemm' and pad='same'")
        super().__init__(incoming, num_filters, filter_size, pad=pad, **kwargs)
        self.impl = impl
        self.edge = bool(edge)

    def get_output_for(self, input, input_shape=None, **kwargs):
        if self.impl == "corrmm":
            conved = T.nnet.conv2d(input, self.W,
                                   input_shape=self.input_shape,
                                   filter_shape=self.get_W_shape(),
                                   border_mode="half" if self.pad == "same" else "valid",
                                   filter_flip=False)
            if self.b is not None:
                conved = conved + self.b.dimshuffle("x", 0, "x", "x")
            return self.nonlinearity(conved)
        # Pixel-major inside; NCHW (a transposed view) outside.
        # (Lasagne stores pad='valid' as (0, 0).)
        pad = "same" if self.pad == "same" else "valid"
        relu = self.nonlinearity is lasagne.nonlinearities.rectify
        out = corr2d_nhwc(input.dimshuffle(0, 2, 3, 1), self.W, self.get_W_shape(), pad,
                          edge=self.edge, relu=relu, b=self.b).dimshuffle(0, 3, 1, 2)
        return out if relu or self.nonlinearity in _LINEAR else self.nonlinearity(out)


class SRCNN:
    """The three-layer SRCNN as a stack of Lasagne layers.

    Parameters
    ----------
    f1, f2, f3 : int
        Odd kernel sizes of the three layers (paper: 9, 1, 5).
    n1, n2 : int
        Number of filters of the first two layers (paper: 64, 32).
    channels : int
        Image channels in and out: 1 for the Y channel (paper), 3 for RGB.
    padding : {'valid', 'same', 'replicate'}
        See the module docstring.
    impl : {'gemm', 'corrmm'} or None
        How the correlations are computed (same results; see the module
        docstring). ``None`` (default): ``gemm``, the fast one on the CPU (when a BLAS is linked);
        ``corrmm`` on a GPU (``device=cuda``), where Theano turns
        ``conv2d`` into cuDNN convolutions (``GpuDnnConv``).
    init_std : float or None
        Standard deviation of the Gaussian weight initialisation (paper:
        0.001); ``None`` uses He initialisation (gain sqrt(2) on the ReLU
        layers, 1 on the output). Biases start at zero.

    Attributes
    ----------
    input_var : theano 4-D tensor, (N, channels, H, W) float32 in [0, 1]
    output_layer : the reconstruction layer; its output is (N, channels,
        H - border * 2, W - border * 2) for ``valid`` and (N, channels, H, W)
        otherwise.
    layers : list of the three ``CorrConv2DLayer``s, ``conv1`` .. ``conv3``.
    """

    def __init__(self, f1=9, f2=1, f3=5, n1=64, n2=32, channels=1, padding="valid",
                 init_std=0.001, seed=None, impl=None):
        for f in (f1, f2, f3):
            if f < 1 or f % 2 == 0:
                raise ValueError(f"kernel sizes must be odd and positive, got {f1}-{f2}-{f3}")
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, not {padding!r}")
        if impl is None:
            # The banded ops call the linked BLAS's sgemm_; without one (empty
            # blas__ldflags) Theano's own CorrMM goes through numpy.
            impl = "corrmm" if on_gpu() or not theano.config.blas__ldflags else "gemm"
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, not {impl!r}")
        self.impl = impl
        self.config = dict(f1=f1, f2=f2, f3=f3, n1=n1, n2=n2, channels=channels)
        self.padding = padding
        rng = np.random.RandomState(seed)
        self.input_var = T.tensor4("lr_bicubic")
        net = lasagne.layers.InputLayer((None, channels, None, None), input_var=self.input_var)
        self.layers = []
        spec = [(f1, n1, lasagne.nonlinearities.rectify),
                (f2, n2, lasagne.nonlinearities.rectify),
                (f3, channels, lasagne.nonlinearities.linear)]
        for i, (f, n, nonlin) in enumerate(spec, start=1):
            fan_in = net.output_shape[1] * f * f
            if init_std is None:
                std = np.sqrt((2.0 if i < 3 else 1.0) / fan_in)
            else:
                std = init_std
            w = rng.normal(0.0, std, size=(n, net.output_shape[1], f, f)).astype("float32")
            # replicate: edge padding inside the gemm op; a pad layer before corrmm.
            edge = padding == "replicate" and f > 1 and impl == "gemm"
            if padding == "replicate" and f > 1 and not edge:
                net = ReplicatePadLayer(net, f // 2, name=f"pad{i}")
            net = CorrConv2DLayer(net, n, f, pad="same" if padding == "same" or edge else "valid",
                                  W=w, b=lasagne.init.Constant(0.0), nonlinearity=nonlin,
                                  name=f"conv{i}", impl=impl, edge=edge)
            self.layers.append(net)
        self.output_layer = net

    @classmethod
    def from_preset(cls, name, **kwargs):
        """Build one of the paper's architectures: ``'9-1-5'``, ``'9-3-5'``, ``'9-5-5'``."""
        if name not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
        return cls(**ARCHITECTURES[name], **kwargs)

    @classmethod
    def from_spec(cls, arch, filters=None, **kwargs):
        """Build any ``f1-f2-f3`` network with ``n1,n2`` filters (:func:`parse_architecture`)."""
        return cls(**parse_architecture(arch, filters), **kwargs)

    @property
    def name(self):
        c = self.config
        return f"{c['f1']}-{c['f2']}-{c['f3']}"

    @property
    def border(self):
        """Pixels lost at each side by ``valid`` convolutions: (f1 + f2 + f3 - 3) / 2."""
        c = self.config
        return (c["f1"] + c["f2"] + c["f3"] - 3) // 2

    def output_size(self, input_size):
        """Spatial output size for a given input size (int)."""
        return input_size - 2 * self.border if self.padding == "valid" else input_size

    @property
    def params(self):
        """Trainable Theano shared variables: [W1, b1, W2, b2, W3, b3]."""
        return lasagne.layers.get_all_params(self.output_layer, trainable=True)

    def get_output(self, input_var=None, **kwargs):
        """Symbolic network output for ``input_var`` (default: ``self.input_var``)."""
        if input_var is None:
            return lasagne.layers.get_output(self.output_layer, **kwargs)
        return lasagne.layers.get_output(self.output_layer, input_var, **kwargs)

    def get_weights(self):
        """Weights as a dict of float32 arrays: ``conv1.W`` (n1, C, f1, f1), ``conv1.b`` (n1,), ..."""
        out = {}
        for layer in self.layers:
            out[f"{layer.name}.W"] = layer.W.get_value()
            out[f"{layer.name}.b"] = layer.b.get_value()
        return out

    def set_weights(self, weights):
        """Set weights from a dict like :meth:`get_weights`'s; shapes must match exactly."""
        for layer in self.layers:
            for pname in ("W", "b"):
                key = f"{layer.name}.{pname}"
                var = getattr(layer, pname)
                want = var.get_value(borrow=True).shape
                value = np.asarray(weights[key], dtype="float32")
                if value.shape != want:
                    raise ValueError(f"{key} has shape {value.shape}, the model needs {want}")
                var.set_value(value)
