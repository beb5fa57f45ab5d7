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

:mod:`srcnn_theano.network.fused_corr` fuses two layers' passes into one
where a whole activation would otherwise go to memory and come back (its
ops use this module's C code: the fused second layer and the mask of
:class:`BandedCorr`'s C body, ``srcnn_bd_run``).

The C code calls the ``sgemm_`` Theano links (``blas__ldflags``, chosen by
:mod:`srcnn_theano.blas`), whose own threads share each product; scratch
blocks are 64-byte aligned, so a product's operands have the same
alignment and strides on every call and in every process (results do not
depend on where numpy put the arrays: resumed trainings stay bit-exact).
The plain memory loops release the GIL.
"""
import hashlib
import pathlib

from srcnn_theano.backend import T, theano

__all__ = ["BandedCorr", "BandedCorrGradW", "weight_matrix", "BAND_BYTES"]

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



def band_rows_c(extra="0"):
    """C: rows per band (``a_.R``) for the scratch each strategy keeps (shared by both ops),
    plus ``extra`` bytes (a C expression) per output row."""
    return f"""a_.R = (a_.mode == 1 || a_.mode == 4)
            ? srcnn_band_rows({BAND_BYTES}, (K - 1) * Wp * C * 4, Wp * C * 4 + Wo * KK * 4 + {extra}, a_.Ho)
            : a_.mode == 5 ? srcnn_band_rows({BAND_BYTES}, (K - 1) * Wp * C * 4, Wp * C * 4 + {extra}, a_.Ho)
            : a_.mode == 2 ? srcnn_band_rows({BAND_BYTES}, (K - 1) * Wp * C * 4, Wp * (C + O) * 4 + {extra}, a_.Ho)
            : srcnn_band_rows({BAND_BYTES}, (K - 1) * Wp * (C + TO) * 4, Wp * (C + TO) * 4 + {extra}, a_.Ho);"""


#: Theano's module-cache version of the banded ops: a digest of their C code
#: (``banded_corr.c`` and the ``c_code`` bodies in this file and in ``fused_corr.py``), so
#: editing any of them compiles anew instead of loading a stale module.
C_VERSION = (6, hashlib.sha256(b"".join(pathlib.Path(__file__).with_name(f).read_bytes() for f in
                                         ("banded_corr.py", "fused_corr.py", "banded_corr.c")))
              .hexdigest()[:16])

class BandedOp(theano.graph.op.COp):
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


class BandedCorr(BandedOp):
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
        return C_VERSION

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
        else {{ {band_rows_c("extra_")} }}
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


class BandedCorrGradW(BandedOp):
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
        return C_VERSION

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
        else {{ {band_rows_c()} }}
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
