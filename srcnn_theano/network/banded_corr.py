"""Pixel-major correlations in cache-sized bands: the CPU ops of :mod:`srcnn_theano.network.model`.

Both ops work on pixel-major (NHWC) float32 arrays, channels contiguous, and
on a ``k x k`` kernel stored as a matrix ``w`` of shape ``(k*k*C, O)`` whose
row ``(dy*k + dx)*C + c`` holds the weights of input channel ``c`` at tap
``(dy, dx)``. With ``Ho = H + 2*pad - k + 1`` (``pad = k // 2``: same size;
``0``: valid)::

    y[n, i, j, o] = act(b[o] + sum_{dy, dx, c} w[(dy*k+dx)*C + c, o]
                                 * x[n, i + dy - pad, j + dx - pad, c])

``BandedCorr(k, pad, edge, relu, strategy)``: x ``(N, H, W, C)``, w, b
    ``(O,)`` -> y ``(N, Ho, Wo, O)``. Outside the image x is 0, or the
    nearest edge pixel when ``edge`` (the authors' ``replicate`` rule);
    ``act`` is ``max(0, .)`` when ``relu``, else the identity.
``BandedCorrGradW(k, pad, strategy)``: x, g ``(N, Ho, Wo, O)`` -> the
    gradient ``(k*k*C, O)`` of ``sum(y * g)`` with respect to ``w``
    (zero padding, no activation).

Why this shape of work: a 64-channel activation of a 512x512 image is 67 MB,
far more than a core's cache, and one matrix product over the whole image
is bound by memory, not by arithmetic. Each op walks the image in bands of
output rows sized to stay in the L2 cache (:data:`BAND_BYTES`): it copies the
band's input rows, padded, into a scratch block ``S`` of ``(rows + k - 1)``
rows of ``Wp = Wo + k - 1`` pixels, runs the BLAS on it, and adds the bias
and the ReLU while the band is still in the cache. In a pixel-major block a
shift of the image by ``(dy, dx)`` is a pointer offset, ``S + (dy*Wp +
dx)*C``, with rows ``C`` floats apart: a plain matrix for the BLAS, no copy.
The products are pixel-major (``(pixels, K) x (K, O)``), the orientation
in which both OpenBLAS and MKL run SRCNN's thin channel counts fastest.

Strategies (``strategy``; ``'auto'``: ``dot`` for k = 1, ``im2col`` for C < 8, for O < 8
``direct`` (forward) or ``tapsum`` (weight gradient), else ``shift``; measured fastest on
SRCNN's layers):

``dot``     ``k = 1``: one product per band, ``(pixels, C) x (C, O)``.
``im2col``  few input channels (conv1, C = 1): the band's ``k*k*C`` shifted
            values of each pixel side by side, one ``(pixels, k*k*C) x
            (k*k*C, O)`` product.
``shift``   many channels both ways (conv2): ``k*k`` products of the shifted
            block, ``(rows*Wp, C) x (C, O)``, added up by the BLAS
            (``beta = 1``); the ``k - 1`` columns at the right of each row
            are computed and dropped.
``tapsum``  few output channels (conv3, O = 1): one product ``(pixels of S,
            C) x (C, k*k*O)`` gives every tap's contribution at every pixel,
            then each output adds its ``k*k`` shifted terms.
``direct``  few output channels, forward only: no BLAS; each output is ``k`` dot
            products of ``k*C`` adjacent floats of ``S`` (a row's window of ``k``
            pixels) with the kernel, eight pixels at a time in 16-lane sums.

The gradient of ``y`` with respect to ``x`` is again a ``BandedCorr`` (the
kernel flipped and transposed, ``pad -> k - 1 - pad``); the one with
respect to ``w`` is :class:`BandedCorrGradW` (im2col, shift or tapsum, the
products' transposes accumulated over bands). For ``edge`` padding both
come from the same graph with the padding made explicit.

Three graph rewrites fuse what would otherwise be a pass over a whole
activation in memory: :func:`fuse_banded_dot` (prediction: a 1x1 layer
multiplied into the band of the layer before it, :class:`BandedCorrDot`),
:func:`fuse_relu_mask` (training: a ReLU's gradient applied to each band
of the next layer's input gradient, :class:`BandedCorrMasked`) and
:func:`fuse_backward_dot` (training: a 1x1 layer's backward pass and the
kernel gradient of the layer before it, :class:`BandedBackDot`).

The C code calls the ``sgemm_`` Theano links (``blas__ldflags``, chosen by
:mod:`srcnn_theano.blas`), whose own threads share each product; scratch
blocks are 64-byte aligned, so a product's operands have the same
alignment and strides on every call and in every process (results do not
depend on where numpy put the arrays: resumed trainings stay bit-exact).
The plain memory loops release the GIL.
"""
import hashlib
import pathlib

import numpy as np

from srcnn_theano.backend import T, theano

__all__ = ["BandedBackDot", "BandedCorr", "BandedCorrDot", "BandedCorrGradW", "BandedCorrMasked",
           "fuse_backward_dot", "fuse_banded_dot", "fuse_relu_mask",
           "weight_matrix", "BAND_BYTES"]

#: Bytes of scratch a band may use (input block + product): within a core's L2.
BAND_BYTES = 1 << 20
STRATEGIES = ("auto", "dot", "im2col", "shift", "tapsum", "direct")


def weight_matrix(W):
    """Symbolic ``(O, C, k, k)`` correlation kernels -> the ops' ``(k*k*C, O)`` matrix."""
    o, c, k = W.shape[0], W.shape[1], W.shape[2]
    return W.dimshuffle(2, 3, 1, 0).reshape((k * k * c, o))


def _flipped_transposed(w, k, c, o):
    """``(k*k*C, O)`` -> ``(k*k*O, C)``: the kernel of the gradient with respect to x."""
    return w.reshape((k, k, c, o))[::-1, ::-1].dimshuffle(0, 1, 3, 2).reshape((k * k * o, c))


def _pad_edge_nhwc(x, p):
    """Symbolic edge replication of ``p`` pixels on both spatial axes of an NHWC tensor."""
    if p == 0:
        return x
    rows = T.concatenate([x[:, :1]] * p + [x] + [x[:, -1:]] * p, axis=1)
    return T.concatenate([rows[:, :, :1]] * p + [rows] + [rows[:, :, -1:]] * p, axis=2)


#: The ops' shared C code (``banded_corr.c`` beside this file).
_C_FILE = pathlib.Path(__file__).with_name("banded_corr.c")
_SUPPORT_C = _C_FILE.read_text()



def _band_rows_c(extra="0"):
    """C: rows per band (``a_.R``) for the scratch each strategy keeps (shared by both ops),
    plus ``extra`` bytes (a C expression) per output row."""
    return f"""a_.R = (a_.mode == 1 || a_.mode == 4)
            ? srcnn_band_rows({BAND_BYTES}, (K - 1) * Wp * C * 4, Wp * C * 4 + Wo * KK * 4 + {extra}, a_.Ho)
            : a_.mode == 5 ? srcnn_band_rows({BAND_BYTES}, (K - 1) * Wp * C * 4, Wp * C * 4 + {extra}, a_.Ho)
            : a_.mode == 2 ? srcnn_band_rows({BAND_BYTES}, (K - 1) * Wp * C * 4, Wp * (C + O) * 4 + {extra}, a_.Ho)
            : srcnn_band_rows({BAND_BYTES}, (K - 1) * Wp * (C + TO) * 4, Wp * (C + TO) * 4 + {extra}, a_.Ho);"""


#: Theano's module-cache version of both ops: a digest of their C code (``banded_corr.c``
#: and the ``c_code`` bodies in this file), so editing either compiles anew instead of
#: loading a stale module.
_C_VERSION = (6, hashlib.sha256(pathlib.Path(__file__).read_bytes() + _SUPPORT_C.encode())
              .hexdigest()[:16])

class _BandedOp(theano.graph.op.COp):
    """What both ops share: BLAS linkage, the scratch helpers, the checks."""

    def _check(self):
        if self.k < 1 or not 0 <= self.pad <= self.k - 1:
            raise ValueError(f"need k >= 1 and 0 <= pad <= k - 1, got k={self.k}, pad={self.pad}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, not {self.strategy!r}")

    def perform(self, node, inputs, outputs):
        raise NotImplementedError(f"{type(self).__name__} runs as C code only (Theano needs a C compiler)")

    def c_support_code(self, **kwargs):
        from theano.tensor import blas_headers

        return blas_headers.blas_header_text() + _SUPPORT_C

    def c_libraries(self, **kwargs):
        from theano.tensor.blas import ldflags

        return ldflags()

    def c_compile_args(self, **kwargs):
        from theano.tensor.blas import ldflags

        return ldflags(libs=False, flags=True) + ["-O3", "-fopenmp"]

    def c_lib_dirs(self, **kwargs):
        from theano.tensor.blas import ldflags

        return ldflags(libs=False, libs_dir=True)

    def c_header_dirs(self, **kwargs):
        from theano.tensor.blas import ldflags

        return ldflags(libs=False, include_dir=True)

    @staticmethod
    def _as_float4(v, what):
        v = T.as_tensor_variable(v)
        if v.ndim != 4 or v.dtype != "float32":
            raise TypeError(f"{what} must be a 4-d float32 tensor (N, H, W, C), got {v.type}")
        return v

    @staticmethod
    def _contiguous(name, var, nd, fail):
        """C: ``name`` = a C-contiguous float32 array (new reference) of input ``var``."""
        return (f"{name} = (PyArrayObject*)PyArray_FromAny((PyObject*){var}, "
                f"PyArray_DescrFromType(NPY_FLOAT32), {nd}, {nd}, "
                f"NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED, NULL); if ({name} == NULL) {{ {fail} }}")

    @staticmethod
    def _alloc_code(out, dims, nd, fail):
        return f"""
        {{
            npy_intp odims_[{nd}] = {{{dims}}};
            int same_ = {out} != NULL && PyArray_IS_C_CONTIGUOUS({out})
                        && PyArray_TYPE({out}) == NPY_FLOAT32 && PyArray_NDIM({out}) == {nd};
            for (int i_ = 0; same_ && i_ < {nd}; ++i_) same_ = PyArray_DIMS({out})[i_] == odims_[i_];
            if (!same_) {{
                Py_XDECREF({out});
                {out} = (PyArrayObject*)PyArray_EMPTY({nd}, odims_, NPY_FLOAT32, 0);
                if ({out} == NULL) {{ {fail} }}
            }}
        }}
        """


class BandedCorr(_BandedOp):
    """Correlation + bias (+ ReLU) of an NHWC batch in cache-sized bands; see the module docstring.

    Parameters
    ----------
    k : int
        Kernel side.
    pad : int
        Pixels of padding on each side, ``0 <= pad <= k - 1``.
    edge : bool
        Pad with the nearest edge pixel instead of zeros.
    relu : bool
        Apply ``max(0, .)`` to the result.
    strategy : {'auto', 'dot', 'im2col', 'shift', 'tapsum'}
    has_bias : bool
        Whether a third input ``b`` is given.
    """

    __props__ = ("k", "pad", "edge", "relu", "strategy", "has_bias")
    masked = False  #: a mask input after the bias (:class:`BandedCorrMasked`)

    def __init__(self, k, pad, edge=False, relu=False, strategy="auto", has_bias=True):
        self.k, self.pad, self.edge, self.relu = int(k), int(pad), bool(edge), bool(relu)
        self.strategy, self.has_bias = str(strategy), bool(has_bias)
        self._check()
        if self.k == 1 and self.strategy not in ("auto", "dot"):
            raise ValueError("a 1x1 kernel uses strategy 'dot'")

    def make_node(self, x, w, b=None):
        x = self._as_float4(x, "x")
        w = T.as_tensor_variable(w)
        if w.ndim != 2 or w.dtype != "float32":
            raise TypeError(f"w must be a float32 matrix (k*k*C, O), got {w.type}")
        inputs = [x, w]
        if self.has_bias:
            b = T.as_tensor_variable(b)
            if b.ndim != 1 or b.dtype != "float32":
                raise TypeError(f"b must be a float32 vector (O,), got {b.type}")
            inputs.append(b)
        elif b is not None:
            raise TypeError("this BandedCorr has no bias input")
        out = T.TensorType("float32", (x.broadcastable[0], False, False, False))()
        return theano.graph.basic.Apply(self, inputs, [out])

    def infer_shape(self, fgraph, node, shapes):
        n, h, w, _ = shapes[0]
        grow = 2 * self.pad - self.k + 1
        return [(n, h + grow, w + grow, shapes[1][1])]

    def grad(self, inputs, grads):
        x, w = inputs[0], inputs[1]
        (g,) = grads
        k, p = self.k, self.pad
        if self.relu:
            g = T.switch(T.gt(self(*inputs), 0), g, 0)
        if self.edge:
            # The same result with the padding made explicit: zero-pad gradients.
            xp = _pad_edge_nhwc(x, p)
            plain = BandedCorr(k, 0, False, False, self.strategy, self.has_bias)(xp, *inputs[1:])
            return theano.grad(None, inputs, known_grads={plain: g})
        c, o = x.shape[3], w.shape[1]
        back = BandedCorr(k, k - 1 - p, False, False, "auto", has_bias=False)
        gx = back(g, _flipped_transposed(w, k, c, o))
        gw, gb = BandedCorrGradW(k, p)(x, g)
        return [gx, gw, gb] if self.has_bias else [gx, gw]

    def c_code_cache_version(self):
        return _C_VERSION

    def c_code(self, node, name, inputs, outputs, sub):
        x, w = inputs[0], inputs[1]
        rest = list(inputs[2:])
        b = rest.pop(0) if self.has_bias else None
        m = rest.pop(0) if self.masked else None
        w2, b2 = rest if rest else (None, None)
        y, y1 = outputs[-1], (outputs[0] if len(outputs) == 2 else None)
        fail = sub["fail"]
        cleanup = ("Py_XDECREF(xc_); Py_XDECREF(wc_); Py_XDECREF(bc_); Py_XDECREF(w2c_);"
                   " Py_XDECREF(b2c_); Py_XDECREF(mc_); free(wt_);")
        failc = cleanup + fail
        get_b = self._contiguous("bc_", b, 1, failc) if b else ""
        get_m = ""
        if m is not None:
            get_m = f"""{self._contiguous("mc_", m, 4, failc)}
        if (PyArray_DIMS(mc_)[0] != a_.N || PyArray_DIMS(mc_)[1] != a_.Ho
            || PyArray_DIMS(mc_)[2] != a_.Wo || PyArray_DIMS(mc_)[3] != O) {{
            PyErr_Format(PyExc_ValueError, "BandedCorrMasked: the mask is %ldx%ldx%ldx%ld, need %dx%dx%dx%d",
                         (long)PyArray_DIMS(mc_)[0], (long)PyArray_DIMS(mc_)[1],
                         (long)PyArray_DIMS(mc_)[2], (long)PyArray_DIMS(mc_)[3], a_.N, a_.Ho, a_.Wo, O);
            {failc}
        }}
        a_.m = (const float*)PyArray_DATA(mc_);"""
        second = ""
        if w2 is not None:
            second = f"""{self._contiguous("w2c_", w2, 2, failc)}
        {self._contiguous("b2c_", b2, 1, failc)}
        if (PyArray_DIMS(w2c_)[0] != a_.O || PyArray_DIMS(b2c_)[0] != PyArray_DIMS(w2c_)[1]) {{
            PyErr_Format(PyExc_ValueError, "BandedCorrDot: w2 is %ldx%ld and b2 %ld, need %d rows",
                         (long)PyArray_DIMS(w2c_)[0], (long)PyArray_DIMS(w2c_)[1],
                         (long)PyArray_DIMS(b2c_)[0], a_.O);
            {failc}
        }}
        a_.O2 = PyArray_DIMS(w2c_)[1]; a_.relu2 = {int(getattr(self, "relu2", False))};
        a_.w2 = (const float*)PyArray_DATA(w2c_); a_.b2 = (const float*)PyArray_DATA(b2c_);"""
        return f"""{{
        PyArrayObject *xc_ = NULL, *wc_ = NULL, *bc_ = NULL, *w2c_ = NULL, *b2c_ = NULL, *mc_ = NULL;
        float* wt_ = NULL;
        {{
        {self._contiguous("xc_", x, 4, failc)}
        {self._contiguous("wc_", w, 2, failc)}
        {get_b}
        srcnn_fwd_t a_;
        a_.O2 = 0; a_.relu2 = 0; a_.w2 = NULL; a_.b2 = NULL; a_.m = NULL;
        a_.N = PyArray_DIMS(xc_)[0]; a_.H = PyArray_DIMS(xc_)[1];
        a_.W = PyArray_DIMS(xc_)[2]; a_.C = PyArray_DIMS(xc_)[3];
        a_.K = {self.k}; a_.P = {self.pad}; a_.O = PyArray_DIMS(wc_)[1];
        a_.edge = {int(self.edge)}; a_.relu = {int(self.relu)};
        const int K = a_.K, C = a_.C, O = a_.O;
        a_.Ho = a_.H + 2 * a_.P - K + 1; a_.Wo = a_.W + 2 * a_.P - K + 1; a_.Wp = a_.Wo + K - 1;
        if (PyArray_DIMS(wc_)[0] != K * K * C) {{
            PyErr_Format(PyExc_ValueError, "BandedCorr: w has %ld rows, need k*k*C = %d",
                         (long)PyArray_DIMS(wc_)[0], K * K * C);
            {failc}
        }}
        if (bc_ != NULL && PyArray_DIMS(bc_)[0] != O) {{
            PyErr_Format(PyExc_ValueError, "BandedCorr: b has %ld values, need %d",
                         (long)PyArray_DIMS(bc_)[0], O);
            {failc}
        }}
        if (a_.Ho < 1 || a_.Wo < 1) {{
            PyErr_Format(PyExc_ValueError, "BandedCorr: image %dx%d too small for a %dx%d kernel",
                         a_.H, a_.W, K, K);
            {failc}
        }}
        {get_m}
        {second}
        {self._alloc_code(y, "a_.N, a_.Ho, a_.Wo, a_.w2 ? a_.O2 : O", 4, failc)}
        {self._alloc_code(y1, "a_.N, a_.Ho, a_.Wo, O", 4, failc) if y1 else ""}
        a_.y1 = {f"(float*)PyArray_DATA({y1})" if y1 else "NULL"};
        a_.mode = srcnn_mode("{self.strategy}", K, C, O, 0);
        const long Wp = a_.Wp, Wo = a_.Wo, KK = (long)K * K * C, TO = (long)K * K * O;
        const long extra_ = a_.w2 ? Wo * (O + a_.O2) * 4 : 0;  /* the fused layer's band */
        if (a_.mode == 0) a_.R = srcnn_band_rows({BAND_BYTES}, 0, Wo * (C + O) * 4 + extra_, a_.Ho);
        else {{ {_band_rows_c("extra_")} }}
        a_.x = (const float*)PyArray_DATA(xc_); a_.w = (const float*)PyArray_DATA(wc_);
        a_.b = bc_ ? (const float*)PyArray_DATA(bc_) : NULL; a_.y = (float*)PyArray_DATA({y});
        if (a_.mode == 3) {{  /* wt[t*O + o, c] = w[t*C + c, o] */
            wt_ = srcnn_alloc((size_t)C * TO);
            if (wt_ == NULL) {{ PyErr_NoMemory(); {failc} }}
            for (int t = 0; t < K * K; ++t)
            for (int c = 0; c < C; ++c)
            for (int o = 0; o < O; ++o) wt_[((size_t)t * O + o) * C + c] = a_.w[((size_t)t * C + c) * O + o];
        }}
        if (a_.mode == 5) {{  /* wt[o, t*C + c] = w[t*C + c, o] */
            wt_ = srcnn_alloc((size_t)O * KK);
            if (wt_ == NULL) {{ PyErr_NoMemory(); {failc} }}
            for (long i = 0; i < KK; ++i)
            for (int o = 0; o < O; ++o) wt_[(size_t)o * KK + i] = a_.w[(size_t)i * O + o];
        }}
        a_.wt = wt_;
        int err_;
        Py_BEGIN_ALLOW_THREADS
        err_ = srcnn_fwd_run(&a_);
        Py_END_ALLOW_THREADS
        if (err_) {{ PyErr_NoMemory(); {failc} }}
        {cleanup}
        }}
        }}"""


class BandedCorrDot(BandedCorr):
    """A :class:`BandedCorr` and the 1x1 layer after it, in one pass over the bands.

    ``y2 = act2(y @ w2 + b2)`` with ``y`` the first layer's ``(N, Ho, Wo, O)``
    output, ``w2`` ``(O, O2)``, ``b2`` ``(O2,)``: each band of ``y`` is made in
    the cache and multiplied there, so the ``O``-channel intermediate (67 MB
    for 64 channels of a 512x512 image) is not read back from memory, and
    without ``keep`` (prediction: nothing else reads ``y``) not written
    either. Inputs ``x, w, b, w2, b2``; output ``(N, Ho, Wo, O2)``, or ``y``
    and it with ``keep`` (training: the gradients read ``y``). Made by the
    graph rewrite :func:`fuse_banded_dot` after the gradients are built, so
    it needs none.
    """

    __props__ = BandedCorr.__props__ + ("relu2", "keep")

    def __init__(self, k, pad, edge=False, relu=False, strategy="auto", relu2=False, keep=False):
        super().__init__(k, pad, edge, relu, strategy, has_bias=True)
        self.relu2, self.keep = bool(relu2), bool(keep)

    def make_node(self, x, w, b, w2, b2):
        node = super().make_node(x, w, b)
        w2, b2 = T.as_tensor_variable(w2), T.as_tensor_variable(b2)
        if w2.type != T.matrix(dtype="float32").type or b2.type != T.vector(dtype="float32").type:
            raise TypeError(f"w2, b2 must be float32 (O, O2) and (O2,), got {w2.type}, {b2.type}")
        outs = [node.outputs[0].type() for _ in range(1 + self.keep)]
        return theano.graph.basic.Apply(self, node.inputs + [w2, b2], outs)

    def infer_shape(self, fgraph, node, shapes):
        first = super().infer_shape(fgraph, node, shapes[:3])[0]
        second = first[:3] + (shapes[3][1],)
        return [first, second] if self.keep else [second]

    def grad(self, inputs, grads):
        raise NotImplementedError("BandedCorrDot is made for prediction graphs only")


@theano.graph.opt.local_optimizer([BandedCorr])
def fuse_banded_dot(fgraph, node):
    """Rewrite ``BandedCorr(k=1)(BandedCorr(x, w, b), w2, b2)`` as one :class:`BandedCorrDot`,
    which also gives the inner output (``keep``) where something else reads it."""
    op = node.op
    if type(op) is not BandedCorr or op.k != 1 or not op.has_bias:
        return False
    inner = node.inputs[0].owner
    if inner is None or type(inner.op) is not BandedCorr or not inner.op.has_bias:
        return False
    keep = len(fgraph.clients[node.inputs[0]]) > 1
    fused = BandedCorrDot(inner.op.k, inner.op.pad, inner.op.edge, inner.op.relu,
                          inner.op.strategy, relu2=op.relu, keep=keep)
    outs = fused(*inner.inputs, *node.inputs[1:], return_list=True)
    return {node.outputs[0]: outs[-1], node.inputs[0]: outs[0]} if keep else [outs[0]]


# After the graph is merged (position 49), before in-place rewrites (49.5), in FAST_RUN.
theano.compile.optdb.register("srcnn_fuse_banded_dot", theano.graph.opt.in2out(fuse_banded_dot),
                              49.1, "fast_run")


class BandedCorrMasked(BandedCorr):
    """A :class:`BandedCorr` whose output is kept only where a mask is positive.

    ``y = (m > 0) ? corr(x, w) : 0`` with ``m`` of the output's shape ``(N,
    Ho, Wo, O)``: a ReLU's gradient, ``switch(y1 > 0, gx, 0)``, made while
    each band of ``gx`` (the next layer's input gradient) is in the cache,
    so the masked copy of a 64-channel activation's gradient is never
    written and read again. Inputs ``x, w, m`` (no bias, no activation);
    made by the graph rewrite :func:`fuse_relu_mask` in training graphs,
    so it needs no gradient.
    """

    masked = True

    def __init__(self, k, pad, strategy="auto"):
        super().__init__(k, pad, False, False, strategy, has_bias=False)

    def make_node(self, x, w, m):
        node = super().make_node(x, w)
        m = self._as_float4(m, "m")
        return theano.graph.basic.Apply(self, node.inputs + [m], [node.outputs[0].type()])

    def grad(self, inputs, grads):
        raise NotImplementedError("BandedCorrMasked is made for compiled training graphs only")


def _is_zero(v):
    try:
        return T.get_scalar_constant_value(v) == 0
    except T.NotScalarConstantError:
        return False


@theano.graph.opt.local_optimizer([T.Elemwise])
def fuse_relu_mask(fgraph, node):
    """Rewrite ``switch(y > 0, BandedCorr(g, w), 0)`` (a ReLU's gradient of the input
    gradient of the layer after it) as one :class:`BandedCorrMasked` where the
    correlation's output has no other reader."""
    if not isinstance(node.op, T.Elemwise) or not isinstance(node.op.scalar_op, theano.scalar.Switch):
        return False
    cond, kept, other = node.inputs
    if not _is_zero(other) or cond.owner is None or not isinstance(cond.owner.op, T.Elemwise):
        return False
    if not isinstance(cond.owner.op.scalar_op, theano.scalar.GT) or not _is_zero(cond.owner.inputs[1]):
        return False
    mask, inner = cond.owner.inputs[0], kept.owner
    if inner is None or type(inner.op) is not BandedCorr or inner.op.has_bias or inner.op.relu:
        return False
    if len(fgraph.clients[kept]) != 1 or mask.type != kept.type or mask.broadcastable != node.outputs[0].broadcastable:
        return False
    fused = BandedCorrMasked(inner.op.k, inner.op.pad, inner.op.strategy)
    return [fused(*inner.inputs, mask)]


# Before the elemwise fusion (49) turns the switch into a Composite, in FAST_RUN.
theano.compile.optdb.register("srcnn_fuse_relu_mask", theano.graph.opt.in2out(fuse_relu_mask),
                              48.9, "fast_run")


class BandedCorrGradW(_BandedOp):
    """Gradient of a zero-padded :class:`BandedCorr` with respect to its kernel matrix.

    Inputs x ``(N, H, W, C)`` and g ``(N, Ho, Wo, O)`` (the gradient of the
    correlation's output, before bias and activation); outputs the kernel's
    gradient ``(k*k*C, O)``: ``sum over n, i, j of x[n, i+dy-pad, j+dx-pad, c] *
    g[n, i, j, o]`` in row ``(dy*k + dx)*C + c``, and the bias's ``(O,)``,
    ``sum over n, i, j of g[n, i, j, o]`` (summed while each band of g is in
    the cache). Bands as in the forward op; each band's products are added
    into the result (``beta = 1``).
    """

    __props__ = ("k", "pad", "strategy")

    def __init__(self, k, pad, strategy="auto"):
        self.k, self.pad, self.strategy = int(k), int(pad), str(strategy)
        self._check()

    def make_node(self, x, g):
        x = self._as_float4(x, "x")
        g = self._as_float4(g, "g")
        return theano.graph.basic.Apply(self, [x, g], [T.matrix(dtype="float32"),
                                                       T.vector(dtype="float32")])

    def infer_shape(self, fgraph, node, shapes):
        return [(self.k * self.k * shapes[0][3], shapes[1][3]), (shapes[1][3],)]

    def grad(self, inputs, grads):
        raise NotImplementedError("BandedCorrGradW has no gradient (no second derivatives)")

    def c_code_cache_version(self):
        return _C_VERSION

    def c_code(self, node, name, inputs, outputs, sub):
        x, g = inputs
        dw, db = outputs
        fail = sub["fail"]
        cleanup = "Py_XDECREF(xc_); Py_XDECREF(gc_);"
        failc = cleanup + fail
        return f"""{{
        PyArrayObject *xc_ = NULL, *gc_ = NULL;
        {{
        {self._contiguous("xc_", x, 4, failc)}
        {self._contiguous("gc_", g, 4, failc)}
        srcnn_gw_t a_;
        a_.N = PyArray_DIMS(xc_)[0]; a_.H = PyArray_DIMS(xc_)[1];
        a_.W = PyArray_DIMS(xc_)[2]; a_.C = PyArray_DIMS(xc_)[3];
        a_.K = {self.k}; a_.P = {self.pad}; a_.O = PyArray_DIMS(gc_)[3];
        const int K = a_.K, C = a_.C, O = a_.O;
        a_.Ho = a_.H + 2 * a_.P - K + 1; a_.Wo = a_.W + 2 * a_.P - K + 1; a_.Wp = a_.Wo + K - 1;
        if (PyArray_DIMS(gc_)[0] != a_.N || PyArray_DIMS(gc_)[1] != a_.Ho
            || PyArray_DIMS(gc_)[2] != a_.Wo) {{
            PyErr_Format(PyExc_ValueError, "BandedCorrGradW: g is %ldx%ldx%ld, need %dx%dx%d",
                         (long)PyArray_DIMS(gc_)[0], (long)PyArray_DIMS(gc_)[1],
                         (long)PyArray_DIMS(gc_)[2], a_.N, a_.Ho, a_.Wo);
            {failc}
        }}
        {self._alloc_code(dw, "(npy_intp)K * K * C, O", 2, failc)}
        {self._alloc_code(db, "O", 1, failc)}
        a_.mode = srcnn_mode("{self.strategy}", K, C, O, 1);
        const long Wp = a_.Wp, Wo = a_.Wo, KK = (long)K * K * C, TO = (long)K * K * O;
        if (a_.mode == 0) a_.R = a_.Ho;
        else {{ {_band_rows_c()} }}
        a_.x = (const float*)PyArray_DATA(xc_); a_.g = (const float*)PyArray_DATA(gc_);
        int err_;
        float* dwd_ = (float*)PyArray_DATA({dw});
        float* dbd_ = (float*)PyArray_DATA({db});
        Py_BEGIN_ALLOW_THREADS
        err_ = srcnn_gw_run(&a_, dwd_, dbd_);
        Py_END_ALLOW_THREADS
        if (err_) {{ PyErr_NoMemory(); {failc} }}
        {cleanup}
        }}
        }}"""


class BandedBackDot(_BandedOp):
    """The backward pass of a 1x1 layer and the kernel gradient of the layer before it.

    With ``y1 = relu(corr_k(x, w1) + b1)``, ``y2 = y1 @ w2 + b2`` and ``g2``
    the gradient of ``y2``: ``dw2 = y1^T g2``, ``db2 = sum(g2)``, ``g1 =
    (g2 @ w2t) where y1 > 0`` and from it :class:`BandedCorrGradW`'s ``dw1,
    db1``, band by band: ``g1`` (64 channels in SRCNN) is made in the cache
    and used there, never written out, and ``y1`` and ``g2`` are read once.

    Inputs x ``(N, H, W, C)``, y1 ``(N, Ho, Wo, O1)``, g2 ``(N, Ho, Wo, O2)``,
    w2t ``(O2, O1)`` (the 1x1 kernel of the input gradient); outputs dw1
    ``(k*k*C, O1)``, db1 ``(O1,)``, dw2 ``(O1, O2)``, db2 ``(O2,)``. Made by
    the graph rewrite :func:`fuse_backward_dot` in training graphs.
    """

    __props__ = ("k", "pad", "strategy")

    def __init__(self, k, pad, strategy="auto"):
        self.k, self.pad, self.strategy = int(k), int(pad), str(strategy)
        self._check()

    def make_node(self, x, y1, g2, w2t):
        x, y1, g2 = (self._as_float4(v, n) for v, n in ((x, "x"), (y1, "y1"), (g2, "g2")))
        w2t = T.as_tensor_variable(w2t)
        if w2t.type != T.matrix(dtype="float32").type:
            raise TypeError(f"w2t must be a float32 matrix (O2, O1), got {w2t.type}")
        outs = [T.matrix(dtype="float32"), T.vector(dtype="float32"),
                T.matrix(dtype="float32"), T.vector(dtype="float32")]
        return theano.graph.basic.Apply(self, [x, y1, g2, w2t], outs)

    def infer_shape(self, fgraph, node, shapes):
        c, o1, o2 = shapes[0][3], shapes[1][3], shapes[2][3]
        return [(self.k * self.k * c, o1), (o1,), (o1, o2), (o2,)]

    def grad(self, inputs, grads):
        raise NotImplementedError("BandedBackDot has no gradient (no second derivatives)")

    def c_code_cache_version(self):
        return _C_VERSION

    def c_code(self, node, name, inputs, outputs, sub):
        x, y1, g2, w2t = inputs
        dw1, db1, dw2, db2 = outputs
        fail = sub["fail"]
        cleanup = "Py_XDECREF(xc_); Py_XDECREF(y1c_); Py_XDECREF(g2c_); Py_XDECREF(wc_);"
        failc = cleanup + fail
        return f"""{{
        PyArrayObject *xc_ = NULL, *y1c_ = NULL, *g2c_ = NULL, *wc_ = NULL;
        {{
        {self._contiguous("xc_", x, 4, failc)}
        {self._contiguous("y1c_", y1, 4, failc)}
        {self._contiguous("g2c_", g2, 4, failc)}
        {self._contiguous("wc_", w2t, 2, failc)}
        srcnn_bd_t b_;
        srcnn_gw_t a_;  /* the first layer's weight gradient; becomes b_.c1 */
        a_.N = PyArray_DIMS(xc_)[0]; a_.H = PyArray_DIMS(xc_)[1];
        a_.W = PyArray_DIMS(xc_)[2]; a_.C = PyArray_DIMS(xc_)[3];
        a_.K = {self.k}; a_.P = {self.pad}; a_.O = PyArray_DIMS(y1c_)[3];
        b_.O2 = PyArray_DIMS(g2c_)[3];
        const int K = a_.K, C = a_.C, O = a_.O;
        a_.Ho = a_.H + 2 * a_.P - K + 1; a_.Wo = a_.W + 2 * a_.P - K + 1; a_.Wp = a_.Wo + K - 1;
        for (int i_ = 0; i_ < 3; ++i_) {{
            npy_intp want_ = i_ == 0 ? a_.N : i_ == 1 ? a_.Ho : a_.Wo;
            if (PyArray_DIMS(y1c_)[i_] != want_ || PyArray_DIMS(g2c_)[i_] != want_) {{
                PyErr_Format(PyExc_ValueError, "BandedBackDot: y1 and g2 must be %dx%dx%d",
                             a_.N, a_.Ho, a_.Wo);
                {failc}
            }}
        }}
        if (PyArray_DIMS(wc_)[0] != b_.O2 || PyArray_DIMS(wc_)[1] != O) {{
            PyErr_Format(PyExc_ValueError, "BandedBackDot: w2t is %ldx%ld, need %dx%d",
                         (long)PyArray_DIMS(wc_)[0], (long)PyArray_DIMS(wc_)[1], b_.O2, O);
            {failc}
        }}
        {self._alloc_code(dw1, "(npy_intp)K * K * C, O", 2, failc)}
        {self._alloc_code(db1, "O", 1, failc)}
        {self._alloc_code(dw2, "O, b_.O2", 2, failc)}
        {self._alloc_code(db2, "b_.O2", 1, failc)}
        a_.mode = srcnn_mode("{self.strategy}", K, C, O, 1);
        const long Wp = a_.Wp, Wo = a_.Wo, KK = (long)K * K * C, TO = (long)K * K * O;
        if (a_.mode == 0) a_.R = srcnn_band_rows({BAND_BYTES}, 0, Wo * (C + 2 * O) * 4, a_.Ho);
        else {{ {_band_rows_c("Wo * O * 4")} }}
        a_.x = (const float*)PyArray_DATA(xc_); a_.g = NULL;
        b_.c1 = a_;
        b_.y1 = (const float*)PyArray_DATA(y1c_); b_.g2 = (const float*)PyArray_DATA(g2c_);
        b_.w2t = (const float*)PyArray_DATA(wc_);
        int err_;
        float *dw1_ = (float*)PyArray_DATA({dw1}), *db1_ = (float*)PyArray_DATA({db1});
        float *dw2_ = (float*)PyArray_DATA({dw2}), *db2_ = (float*)PyArray_DATA({db2});
        Py_BEGIN_ALLOW_THREADS
        err_ = srcnn_bd_run(&b_, dw1_, db1_, dw2_, db2_);
        Py_END_ALLOW_THREADS
        if (err_) {{ PyErr_NoMemory(); {failc} }}
        {cleanup}
        }}
        }}"""


@theano.graph.opt.local_optimizer([BandedCorrGradW])
def fuse_backward_dot(fgraph, node):
    """Rewrite a layer's :class:`BandedCorrGradW` whose output gradient is the masked 1x1
    input gradient of the next layer (:class:`BandedCorrMasked`, read by nothing else), and
    that 1x1 layer's own :class:`BandedCorrGradW`, as one :class:`BandedBackDot`."""
    if type(node.op) is not BandedCorrGradW:
        return False
    x, g1 = node.inputs
    masked = g1.owner
    if masked is None or type(masked.op) is not BandedCorrMasked or masked.op.k != 1:
        return False
    if len(fgraph.clients[g1]) != 1:
        return False
    g2, w2t, y1 = masked.inputs
    second = [c for c, _ in fgraph.clients[g2] if c != "output" and type(c.op) is BandedCorrGradW
              and c.op.k == 1 and c.inputs[0] is y1 and c.inputs[1] is g2]
    if not second:
        return False
    dw1, db1, dw2, db2 = BandedBackDot(node.op.k, node.op.pad, node.op.strategy)(x, y1, g2, w2t)
    return {node.outputs[0]: dw1, node.outputs[1]: db1,
            second[0].outputs[0]: dw2, second[0].outputs[1]: db2}


# After the ReLU masks are fused (48.9), before the elemwise fusion (49), in FAST_RUN.
theano.compile.optdb.register("srcnn_fuse_backward_dot", theano.graph.opt.in2out(fuse_backward_dot),
                              48.95, "fast_run")
