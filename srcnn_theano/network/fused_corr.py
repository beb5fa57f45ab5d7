"""Fused layers: two layers' passes in one walk over the bands, as graph rewrites.

A 64-channel activation of a 512x512 image is 67 MB (17.8 MB for 64 training
patches of 33x33): writing it to memory and reading it back costs as much as
the arithmetic of a 1x1 layer. Where the graph has such a pair, a rewrite
replaces it with one op of :mod:`srcnn_theano.network.banded_corr`'s kind
(same bands, same C code) that keeps the activation's band in the cache:

:func:`fuse_banded_dot` -> :class:`BandedCorrDot`
    a 1x1 layer multiplied into each band of the layer before it
    (prediction; in training the first output is kept for the gradients).
:func:`fuse_relu_mask` -> :class:`BandedCorrMasked`
    a ReLU's gradient applied to each band of the next layer's input
    gradient (training).
:func:`fuse_backward_dot` -> :class:`BandedBackDot`
    a 1x1 layer's backward pass and the kernel gradient of the layer
    before it (training).

The rewrites run in FAST_RUN after the gradients are built, so the fused
ops need no gradient of their own; importing this module registers them
(:mod:`srcnn_theano.network.model` does). The results are those of the
separate ops to float32 rounding.
"""
from srcnn_theano.backend import T, theano
from srcnn_theano.network.banded_corr import (BAND_BYTES, BandedCorr, BandedCorrGradW, BandedOp,
                                              C_VERSION, band_rows_c)

__all__ = ["BandedBackDot", "BandedCorrDot", "BandedCorrMasked", "fuse_backward_dot",
           "fuse_banded_dot", "fuse_relu_mask"]


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


class BandedBackDot(BandedOp):
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
        return C_VERSION

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
        else {{ {band_rows_c("Wo * O * 4")} }}
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
