"""The backend module: Theano flags, the Lasagne 0.1 shims, the OpenMP fix."""
import os
import subprocess
import sys

from srcnn_theano import backend
from srcnn_theano.backend import T, lasagne, theano

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_theano_configured_float32_with_working_blas_flags():
    assert theano.config.floatX == "float32"
    assert theano.config.blas__ldflags == backend.blas_ldflags()
    assert backend.blas_info()["library"] in ("scipy-openblas32", "scipy-bundled-openblas", "system-openblas",
                                              "numpy-c-api")


def test_user_flags_come_last_and_win():
    flags = backend.theano_flags("floatX=float64,blas__ldflags=-lfoo")
    assert flags == "floatX=float32,floatX=float64,blas__ldflags=-lfoo"


def test_user_theano_flags_win_in_a_fresh_process():
    code = ("import srcnn_theano.backend as b; "
            "print(b.theano.config.floatX, repr(b.theano.config.blas__ldflags))")
    env = dict(os.environ, THEANO_FLAGS="floatX=float64,blas__ldflags=")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["float64", "''"]


def test_lasagne_shims_make_pool_and_noise_layers_work():
    import numpy as np
    from theano.sandbox.rng_mrg import MRG_RandomStreams  # noqa: F401  (the alias Lasagne needs)

    x = T.tensor4()
    net = lasagne.layers.InputLayer((None, 1, 4, 4), input_var=x)
    pooled = lasagne.layers.MaxPool2DLayer(net, 2)
    dropped = lasagne.layers.DropoutLayer(net, p=0.5)
    f = theano.function([x], [lasagne.layers.get_output(pooled),
                              lasagne.layers.get_output(dropped, deterministic=True)])
    a = np.arange(16, dtype="float32").reshape(1, 1, 4, 4)
    p, d = f(a)
    assert p[0, 0].tolist() == [[5, 7], [13, 15]]
    assert np.array_equal(d, a)


def test_openmp_elementwise_compiles_and_is_correct():
    """With openmp on, the generated C must compile (it did not before the fix)."""
    import numpy as np

    code = ("import numpy as np, srcnn_theano.backend as b; T=b.T; x=T.fvector(); "
            "f=b.theano.function([x], T.exp(x)*2+x); a=np.linspace(-1,1,300000).astype('float32'); "
            "print(float(np.abs(f(a)-(np.exp(a)*2+a)).max()))")
    env = dict(os.environ, THEANO_FLAGS="openmp=True,openmp_elemwise_minsize=1000")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.split()[-1]) < 1e-5
