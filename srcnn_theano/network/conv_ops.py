"""Two small Theano C ops for the GEMM-friendly correlations of :mod:`srcnn_theano.network.model`.

Both work on channel-major 4-D arrays ``(rows, N, H, W)`` and on a ``k x k``
grid of taps ``t = dy * k + dx``, each tap shifting the image by
``(dy - pad, dx - pad)``; ``flip`` uses tap ``(k-1-dy, k-1-dx)`` instead.
With ``Ho = H + 2 * pad - k + 1`` (``pad = k // 2``: same size; ``0``: valid):

``ShiftStack(k, pad, flip, ones_row)``: x ``(C, N, H, W)`` ->
    ``(C*k*k [+ 1], N, Ho, Wo)`` with row ``c*k*k + t`` =
    ``x[c, :, y + dy - pad, x + dx - pad]`` (zero outside the image), plus a
    row of ones when ``ones_row`` (it folds a bias into a matrix product).
    This is im2col.
``ShiftSum(k, pad, flip)``: z ``(O*k*k, N, H, W)`` -> ``(O, N, Ho, Wo)``,
    ``out[o] = sum_t z[o*k*k + t, :, y + dy - pad, x + dx - pad]`` (terms
    outside skipped). This adds every tap's contribution where it lands.

Each is the other's adjoint (with ``pad -> k - 1 - pad`` and ``flip``
toggled), which gives their gradients. One node each replaces the dozens of
Subtensor/Join/IncSubtensor nodes the same computation takes in plain
Theano: the function compiles and loads faster (warm start) and runs
tight C loops. The C code is cached by Theano like any op's. The loops
release the GIL (they touch no Python object): while a compiled function
is in them, the single-threaded part of a call, other Python threads run
(``upscale`` prepares and finishes neighbouring tiles meanwhile).
"""
import numpy as np

from srcnn_theano.backend import T, theano

__all__ = ["ShiftStack", "ShiftSum"]

_COMMON_C = """
#define SRCNN_MIN(a, b) ((a) < (b) ? (a) : (b))
#define SRCNN_MAX(a, b) ((a) > (b) ? (a) : (b))
"""


def _out_size(size, k, pad):
    return size + 2 * pad - k + 1


def _tap(t, k, flip):
    dy, dx = divmod(t, k)
    return (k - 1 - dy, k - 1 - dx) if flip else (dy, dx)


class _ShiftOp(theano.graph.op.COp):
    def _check(self):
        if self.k < 1 or not 0 <= self.pad <= self.k - 1:
            raise ValueError(f"need k >= 1 and 0 <= pad <= k - 1, got k={self.k}, pad={self.pad}")

    def c_support_code(self, **kwargs):
        return _COMMON_C

    def c_headers(self, **kwargs):
        return ["<string.h>"]

    def _out_var(self, x):
        return T.TensorType(x.dtype, (False,) * 4)()

    def _shape_code(self, inp, fail):
        return f"""
        if (PyArray_NDIM({inp}) != 4) {{
            PyErr_SetString(PyExc_ValueError, "{type(self).__name__}: need a 4-d array");
            {fail}
        }}
        const npy_intp R_ = PyArray_DIMS({inp})[0], N_ = PyArray_DIMS({inp})[1];
        const npy_intp H_ = PyArray_DIMS({inp})[2], W_ = PyArray_DIMS({inp})[3];
        const npy_intp K_ = {self.k}, P_ = {self.pad};
        const npy_intp Ho_ = H_ + 2 * P_ - K_ + 1, Wo_ = W_ + 2 * P_ - K_ + 1;
        if (Ho_ < 1 || Wo_ < 1) {{
            PyErr_Format(PyExc_ValueError, "{type(self).__name__}: image %ldx%ld too small"
                         " for a %ldx%ld kernel", (long)H_, (long)W_, (long)K_, (long)K_);
            {fail}
        }}
        const npy_intp isz_ = PyArray_ITEMSIZE({inp});
        const npy_intp s0_ = PyArray_STRIDES({inp})[0] / isz_, s1_ = PyArray_STRIDES({inp})[1] / isz_;
        const npy_intp s2_ = PyArray_STRIDES({inp})[2] / isz_, s3_ = PyArray_STRIDES({inp})[3] / isz_;
        """

    @staticmethod
    def _alloc_code(out, inp, dims, fail):
        return f"""
        {{
            npy_intp odims_[4] = {{{dims}}};
            if ({out} == NULL || !PyArray_IS_C_CONTIGUOUS({out})
                || PyArray_TYPE({out}) != PyArray_TYPE({inp})
                || PyArray_DIMS({out})[0] != odims_[0] || PyArray_DIMS({out})[1] != odims_[1]
                || PyArray_DIMS({out})[2] != odims_[2] || PyArray_DIMS({out})[3] != odims_[3]) {{
                Py_XDECREF({out});
                {out} = (PyArrayObject*)PyArray_EMPTY(4, odims_, PyArray_TYPE({inp}), 0);
                if ({out} == NULL) {{ {fail} }}
            }}
        }}
        """


class ShiftStack(_ShiftOp):
    """im2col on channel-major arrays; see the module docstring."""

    __props__ = ("k", "pad", "flip", "ones_row")

    def __init__(self, k, pad, flip=False, ones_row=False):
        self.k, self.pad, self.flip, self.ones_row = int(k), int(pad), bool(flip), bool(ones_row)
        self._check()

    def make_node(self, x):
        x = T.as_tensor_variable(x)
        if x.ndim != 4:
            raise TypeError("ShiftStack needs a 4-d tensor (C, N, H, W)")
        return theano.graph.basic.Apply(self, [x], [self._out_var(x)])

    def infer_shape(self, fgraph, node, shapes):
        c, n, h, w = shapes[0]
        k, p = self.k, self.pad
        return [(c * k * k + int(self.ones_row), n, _out_size(h, k, p), _out_size(w, k, p))]

    def perform(self, node, inputs, outputs):
        (x,) = inputs
        c, n, h, w = x.shape
        k, p = self.k, self.pad
        ho, wo = _out_size(h, k, p), _out_size(w, k, p)
        xp = np.zeros((c, n, h + 2 * p, w + 2 * p), dtype=x.dtype)
        xp[:, :, p:p + h, p:p + w] = x
        out = np.empty((c * k * k + int(self.ones_row), n, ho, wo), dtype=x.dtype)
        for t in range(k * k):
            dy, dx = _tap(t, k, self.flip)
            # shift (dy - p): padded row index y + dy - p + p = y + dy
            out[t:c * k * k:k * k] = xp[:, :, dy:dy + ho, dx:dx + wo]
        if self.ones_row:
            out[-1] = 1
        outputs[0][0] = out

    def grad(self, inputs, grads):
        (x,) = inputs
        (g,) = grads
        c = x.shape[0]
        k = self.k
        g = g[:c * k * k] if self.ones_row else g
        return [ShiftSum(k, k - 1 - self.pad, not self.flip)(g)]

    def c_code_cache_version(self):
        return (2,)

    def c_code(self, node, name, inputs, outputs, sub):
        (x,), (out,) = inputs, outputs
        fail = sub["fail"]
        dtype = f"dtype_{x}"
        # One block: the error gotos must not jump over initialisations.
        return "{" + self._shape_code(x, fail) + self._alloc_code(
            out, x, f"R_ * K_ * K_ + {int(self.ones_row)}, N_, Ho_, Wo_", fail) + f"""
        {{
            const {dtype}* xd_ = ({dtype}*)PyArray_DATA({x});
            {dtype}* od_ = ({dtype}*)PyArray_DATA({out});
            Py_BEGIN_ALLOW_THREADS  /* plain memory work: other Python threads may run */
            for (npy_intp c = 0; c < R_; ++c)
            for (npy_intp t = 0; t < K_ * K_; ++t) {{
                npy_intp dy = t / K_, dx = t % K_;
                if ({int(self.flip)}) {{ dy = K_ - 1 - dy; dx = K_ - 1 - dx; }}
                const npy_intp x0 = SRCNN_MAX(0, P_ - dx), x1 = SRCNN_MIN(Wo_, W_ + P_ - dx);
                for (npy_intp n = 0; n < N_; ++n) {{
                    {dtype}* ob = od_ + ((c * K_ * K_ + t) * N_ + n) * Ho_ * Wo_;
                    for (npy_intp y = 0; y < Ho_; ++y) {{
                        {dtype}* orow = ob + y * Wo_;
                        const npy_intp sy = y + dy - P_;
                        if (sy < 0 || sy >= H_ || x1 <= x0) {{
                            memset(orow, 0, Wo_ * sizeof({dtype}));
                            continue;
                        }}
                        const {dtype}* xrow = xd_ + c * s0_ + n * s1_ + sy * s2_ + (dx - P_) * s3_;
                        if (x0 > 0) memset(orow, 0, x0 * sizeof({dtype}));
                        if (s3_ == 1) {{
                            memcpy(orow + x0, xrow + x0, (x1 - x0) * sizeof({dtype}));
                        }} else {{
                            for (npy_intp xx = x0; xx < x1; ++xx) orow[xx] = xrow[xx * s3_];
                        }}
                        if (x1 < Wo_) memset(orow + x1, 0, (Wo_ - x1) * sizeof({dtype}));
                    }}
                }}
            }}
            if ({int(self.ones_row)}) {{
                {dtype}* ones_ = od_ + R_ * K_ * K_ * N_ * Ho_ * Wo_;
                for (npy_intp i = 0; i < N_ * Ho_ * Wo_; ++i) ones_[i] = 1;
            }}
            Py_END_ALLOW_THREADS
        }}
        }}"""


class ShiftSum(_ShiftOp):
    """Sum of shifted tap planes (adjoint of :class:`ShiftStack`); see the module docstring."""

    __props__ = ("k", "pad", "flip")

    def __init__(self, k, pad, flip=False):
        self.k, self.pad, self.flip = int(k), int(pad), bool(flip)
        self._check()

    def make_node(self, z):
        z = T.as_tensor_variable(z)
        if z.ndim != 4:
            raise TypeError("ShiftSum needs a 4-d tensor (O*k*k, N, H, W)")
        return theano.graph.basic.Apply(self, [z], [self._out_var(z)])

    def infer_shape(self, fgraph, node, shapes):
        r, n, h, w = shapes[0]
        k, p = self.k, self.pad
        return [(r // (k * k), n, _out_size(h, k, p), _out_size(w, k, p))]

    def perform(self, node, inputs, outputs):
        (z,) = inputs
        r, n, h, w = z.shape
        k, p = self.k, self.pad
        if r % (k * k):
            raise ValueError(f"ShiftSum: {r} rows is not a multiple of {k * k} taps")
        o = r // (k * k)
        ho, wo = _out_size(h, k, p), _out_size(w, k, p)
        out = np.zeros((o, n, ho, wo), dtype=z.dtype)
        zz = z.reshape(o, k * k, n, h, w)
        for t in range(k * k):
            dy, dx = _tap(t, k, self.flip)
            sy, sx = dy - p, dx - p  # out[y] += z[y + sy]
            oy0, oy1 = max(0, -sy), min(ho, h - sy)
            ox0, ox1 = max(0, -sx), min(wo, w - sx)
            if oy1 > oy0 and ox1 > ox0:
                out[:, :, oy0:oy1, ox0:ox1] += zz[:, t, :, oy0 + sy:oy1 + sy, ox0 + sx:ox1 + sx]
        outputs[0][0] = out

    def grad(self, inputs, grads):
        (g,) = grads
        return [ShiftStack(self.k, self.k - 1 - self.pad, not self.flip, False)(g)]

    def c_code_cache_version(self):
        return (2,)

    def c_code(self, node, name, inputs, outputs, sub):
        (z,), (out,) = inputs, outputs
        fail = sub["fail"]
        dtype = f"dtype_{z}"
        return "{" + self._shape_code(z, fail) + f"""
        if (R_ % (K_ * K_) != 0) {{
            PyErr_Format(PyExc_ValueError, "ShiftSum: %ld rows is not a multiple of %ld taps",
                         (long)R_, (long)(K_ * K_));
            {fail}
        }}
        const npy_intp O_ = R_ / (K_ * K_);
        """ + self._alloc_code(out, z, "O_, N_, Ho_, Wo_", fail) + f"""
        {{
            const {dtype}* zd_ = ({dtype}*)PyArray_DATA({z});
            {dtype}* od_ = ({dtype}*)PyArray_DATA({out});
            Py_BEGIN_ALLOW_THREADS  /* plain memory work: other Python threads may run */
            for (npy_intp o = 0; o < O_; ++o)
            for (npy_intp n = 0; n < N_; ++n)
            for (npy_intp y = 0; y < Ho_; ++y) {{
                {dtype}* __restrict__ orow = od_ + ((o * N_ + n) * Ho_ + y) * Wo_;
                memset(orow, 0, Wo_ * sizeof({dtype}));
                for (npy_intp t = 0; t < K_ * K_; ++t) {{
                    npy_intp dy = t / K_, dx = t % K_;
                    if ({int(self.flip)}) {{ dy = K_ - 1 - dy; dx = K_ - 1 - dx; }}
                    const npy_intp sy = y + dy - P_;
                    if (sy < 0 || sy >= H_) continue;
                    const npy_intp x0 = SRCNN_MAX(0, P_ - dx), x1 = SRCNN_MIN(Wo_, W_ + P_ - dx);
                    const {dtype}* __restrict__ zrow =
                        zd_ + (o * K_ * K_ + t) * s0_ + n * s1_ + sy * s2_ + (dx - P_) * s3_;
                    if (s3_ == 1) {{
                        for (npy_intp xx = x0; xx < x1; ++xx) orow[xx] += zrow[xx];
                    }} else {{
                        for (npy_intp xx = x0; xx < x1; ++xx) orow[xx] += zrow[xx * s3_];
                    }}
                }}
            }}
            Py_END_ALLOW_THREADS
        }}
        }}"""
