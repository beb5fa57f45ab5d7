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
"""
import numpy as np

from .backend import T, lasagne

PRESETS = {
    "9-1-5": dict(f1=9, f2=1, f3=5, n1=64, n2=32),
    "9-3-5": dict(f1=9, f2=3, f3=5, n1=64, n2=32),
    "9-5-5": dict(f1=9, f2=5, f3=5, n1=64, n2=32),
}
PADDINGS = ("valid", "same", "replicate")


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

    ``pad`` is ``'valid'`` (no padding) or ``'same'`` (zero padding of
    ``f // 2``, done inside Theano's convolution as ``border_mode='half'``
    rather than Lasagne 0.1's crop of a full convolution).
    W has shape (num_filters, input_channels, f, f).
    """

    def __init__(self, incoming, num_filters, filter_size, pad="valid", **kwargs):
        if pad not in ("valid", "same"):
            raise ValueError(f"pad must be 'valid' or 'same', not {pad!r}")
        super().__init__(incoming, num_filters, filter_size, pad=pad, **kwargs)

    def get_output_for(self, input, input_shape=None, **kwargs):
        conved = T.nnet.conv2d(input, self.W,
                               input_shape=self.input_shape,
                               filter_shape=self.get_W_shape(),
                               border_mode="half" if self.pad == "same" else "valid",
                               filter_flip=False)
        return self.nonlinearity(conved + self.b.dimshuffle("x", 0, "x", "x"))


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
                 init_std=0.001, seed=None):
        for f in (f1, f2, f3):
            if f < 1 or f % 2 == 0:
                raise ValueError(f"kernel sizes must be odd and positive, got {f1}-{f2}-{f3}")
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, not {padding!r}")
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
            if padding == "replicate" and f > 1:
                net = ReplicatePadLayer(net, f // 2, name=f"pad{i}")
            net = CorrConv2DLayer(net, n, f, pad="same" if padding == "same" else "valid",
                                  W=w, b=lasagne.init.Constant(0.0), nonlinearity=nonlin,
                                  name=f"conv{i}")
            self.layers.append(net)
        self.output_layer = net

    @classmethod
    def from_preset(cls, name, **kwargs):
        """Build one of the paper's architectures: ``'9-1-5'``, ``'9-3-5'``, ``'9-5-5'``."""
        if name not in PRESETS:
            raise ValueError(f"unknown architecture {name!r}; presets: {', '.join(PRESETS)}")
        return cls(**PRESETS[name], **kwargs)

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
