"""The backend module: Theano flags, the cached BLAS probe, the Lasagne 0.1 shims,
the OpenMP fix."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from srcnn_theano import backend, blas
from srcnn_theano.backend import T, lasagne, theano

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Calls sgemm_ for real: [[1, 3], [2, 4]] @ [[5, 7], [6, 8]], column-major.
SGEMM_PROGRAM = r"""
#include <stdio.h>
void sgemm_(const char *, const char *, const int *, const int *, const int *, const float *,
            const float *, const int *, const float *, const int *, const float *, float *,
            const int *);
int main(void) {
  float a[4] = {1, 2, 3, 4}, b[4] = {5, 6, 7, 8}, c[4] = {0, 0, 0, 0}, one = 1, zero = 0;
  int n = 2;
  sgemm_("N", "N", &n, &n, &n, &one, a, &n, b, &n, &zero, c, &n);
  printf("%g %g %g %g\n", c[0], c[1], c[2], c[3]);
  return 0;
}
"""


@pytest.fixture
def cache_file(tmp_path, monkeypatch):
    """An empty cache folder of our own (``$SRCNN_CACHE_DIR``); the path of the cache file."""
    monkeypatch.setenv("SRCNN_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "cache" / "blas_ldflags.json"
    assert blas._cache_path() == str(path)
    return path


def _must_not_run(*args, **kwargs):
    raise AssertionError(f"the BLAS probe ran: {args!r}")


@pytest.fixture
def fake_probe(tmp_path, monkeypatch):
    """A scipy-openblas32 library of our own (a file we can touch) and a probe that
    counts its runs instead of compiling; returns ``(library path, list of calls)``."""
    lib = tmp_path / "wheel" / "lib" / "libscipy_openblas.so"
    lib.parent.mkdir(parents=True)
    lib.write_bytes(b"not really a library")
    calls = []

    def links_with(flags, run=False):
        calls.append(list(flags))
        return True

    monkeypatch.setattr(blas, "pypi_openblas", lambda: str(lib))
    monkeypatch.setattr(blas, "bundled_openblas", lambda: None)
    monkeypatch.setattr(blas, "mkl_rt", lambda: None)
    monkeypatch.setattr(blas, "_links_with", links_with)
    return lib, calls


def test_theano_configured_float32_with_the_preferred_blas():
    assert theano.config.floatX == "float32"
    info = backend.blas_info()
    if info["library"] == "mkl":  # timed faster than OpenBLAS on this CPU
        assert info["path"] == blas.mkl_rt()
    elif blas.pypi_openblas() is not None:  # a pip requirement of the project
        assert info["library"] == "scipy-openblas32"
        assert info["path"] == blas.pypi_openblas()
    else:
        assert info["library"] in ("scipy-bundled-openblas", "system-openblas", "numpy-c-api")


@pytest.fixture
def two_blases(tmp_path, monkeypatch):
    """A scipy-openblas32 and an MKL of our own that both "link", and a timing we set:
    returns the dict ``{"openblas": GFLOP/s, "mkl": GFLOP/s}`` the fake timer reads."""
    openblas = tmp_path / "openblas" / "libscipy_openblas.so"
    mkl = tmp_path / "mkl" / "libmkl_rt.so.3"
    for lib in (openblas, mkl):
        lib.parent.mkdir()
        lib.write_bytes(b"not really a library")
    rates = {}
    monkeypatch.setattr(blas, "pypi_openblas", lambda: str(openblas))
    monkeypatch.setattr(blas, "bundled_openblas", lambda: None)
    monkeypatch.setattr(blas, "mkl_rt", lambda: str(mkl))
    monkeypatch.setattr(blas, "_links_with", lambda flags, run=False: True)
    monkeypatch.setattr(blas, "thin_sgemm_gflops", lambda build: rates[
        "mkl" if any("libmkl_rt" in f for f in build) else "openblas"])
    return rates, blas.pypi_openblas_ldflags(str(openblas)), blas.file_ldflags(str(mkl))


@pytest.mark.parametrize("openblas_rate, mkl_rate, winner", [
    (100.0, 160.0, "mkl"),        # MKL clearly faster (Intel): linked
    (100.0, 105.0, "openblas"),   # within the margin: OpenBLAS stays
    (100.0, 60.0, "openblas"),    # MKL slower (some AMD parts)
])
def test_the_probe_links_mkl_only_where_it_times_faster(two_blases, openblas_rate, mkl_rate,
                                                        winner):
    rates, openblas_flags, mkl_flags = two_blases
    rates.update(openblas=openblas_rate, mkl=mkl_rate)
    want = mkl_flags if winner == "mkl" else openblas_flags
    assert blas._probe_blas_ldflags() == want


def test_the_probe_links_mkl_when_no_openblas_runs(two_blases, monkeypatch):
    rates, _, mkl_flags = two_blases
    monkeypatch.setattr(blas, "_links_with", lambda flags, run=False: "-l:libmkl_rt.so.3" in flags)
    assert blas._probe_blas_ldflags() == mkl_flags and not rates  # nothing to time


def test_the_thin_product_timer_runs_the_installed_blases():
    """The real timing program, built against each BLAS the project installs."""
    found = [(blas.pypi_openblas(), blas.pypi_openblas_ldflags), (blas.mkl_rt(), blas.file_ldflags)]
    found = [(path, flags) for path, flags in found if path is not None]
    if not found:
        pytest.skip("no pip-installed BLAS here")
    for path, flags in found:
        build = flags(path).split() + [f"-Wl,-rpath,{os.path.dirname(path)}"]
        assert blas.thin_sgemm_gflops(build) > 1.0, path
    assert blas.thin_sgemm_gflops(["-lno_such_blas"]) == 0.0


def test_chosen_flags_link_and_run_a_program_calling_sgemm(tmp_path):
    """Theano's blas__ldflags, as given: compile, link and run a real sgemm_ call."""
    flags = theano.config.blas__ldflags.split()
    if not flags:
        pytest.skip("no BLAS library found: Theano uses numpy's C API")
    cc = blas._compiler()
    assert cc is not None
    (tmp_path / "t.c").write_text(SGEMM_PROGRAM)
    # Theano adds an rpath for each -L folder; so do we.
    rpaths = [f"-Wl,-rpath,{f[2:]}" for f in flags if f.startswith("-L")]
    build = subprocess.run([cc, str(tmp_path / "t.c"), "-o", str(tmp_path / "t")] + flags + rpaths,
                           capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    out = subprocess.run([str(tmp_path / "t")], capture_output=True, text=True, timeout=60,
                         env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["23", "34", "31", "46"]


def test_probe_writes_the_cache_and_a_cached_key_is_served_without_compiling(cache_file,
                                                                            monkeypatch):
    first = blas.blas_ldflags()  # probes for real
    assert json.loads(cache_file.read_text()) == {"key": blas._probe_key(), "ldflags": first}
    # A value no probe gives: served only if read from the file.
    cache_file.write_text(json.dumps({"key": blas._probe_key(), "ldflags": "-lfrom_cache"}))
    monkeypatch.setattr(blas, "_links_with", _must_not_run)
    monkeypatch.setattr(subprocess, "run", _must_not_run)
    monkeypatch.setattr(subprocess, "Popen", _must_not_run)
    assert blas.blas_ldflags() == "-lfrom_cache"
    assert backend.theano_flags("") == "floatX=float32,blas__ldflags=-lfrom_cache"


def test_a_fresh_process_takes_its_flags_from_the_cache(cache_file):
    cache_file.parent.mkdir(parents=True)
    cache_file.write_text(json.dumps({"key": blas._probe_key(), "ldflags": "-lfrom_cache"}))
    code = "import srcnn_theano.backend as b; print(repr(b.theano.config.blas__ldflags))"
    env = dict(os.environ, SRCNN_CACHE_DIR=str(cache_file.parent))
    env.pop("THEANO_FLAGS", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] == "'-lfrom_cache'"


def test_a_changed_key_probes_again(cache_file, fake_probe, monkeypatch):
    lib, calls = fake_probe
    flags = blas.blas_ldflags()
    assert flags.startswith(f"-L{lib.parent} -lscipy_openblas -Dsgemm_=scipy_sgemm_ ")
    assert len(calls) == 1
    assert blas.blas_ldflags() == flags and len(calls) == 1  # served from the cache

    st = lib.stat()
    os.utime(lib, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the library was replaced
    assert blas.blas_ldflags() == flags and len(calls) == 2
    assert json.loads(cache_file.read_text())["key"]["scipy_openblas32"] == [
        str(lib), st.st_size, st.st_mtime_ns + 10**9]
    assert blas.blas_ldflags() == flags and len(calls) == 2

    lib.write_bytes(b"a library of another size")
    os.utime(lib, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same mtime, new size
    blas.blas_ldflags()
    assert len(calls) == 3
    monkeypatch.setenv("CC", "gcc")  # another compiler asked for
    blas.blas_ldflags()
    assert len(calls) == 4
    monkeypatch.setattr(blas, "PROBE_VERSION", blas.PROBE_VERSION + 1)  # a new probe
    blas.blas_ldflags()
    assert len(calls) == 5
    blas.blas_ldflags()
    assert len(calls) == 5


def test_the_cache_key_follows_the_compiler_file(tmp_path, monkeypatch):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("needs gcc")
    cc = tmp_path / "bin" / "cc"
    cc.parent.mkdir()
    shutil.copy(gcc, cc)
    monkeypatch.setenv("CC", str(cc))
    before = blas._probe_key()
    assert before["compiler"][0] == str(cc) and before["cc_env"] == str(cc)
    st = cc.stat()
    os.utime(cc, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the compiler was upgraded
    after = blas._probe_key()
    assert after != before and after["compiler"][2] == st.st_mtime_ns + 10**9


@pytest.mark.parametrize("content", ["{not json", "", "[]", '{"ldflags": "-lstale"}',
                                     '{"key": "KEY", "ldflags": 3}', "\x00\xff"])
def test_a_corrupt_cache_file_is_ignored_and_rewritten(cache_file, fake_probe, content):
    lib, calls = fake_probe
    cache_file.parent.mkdir(parents=True)
    content = content.replace('"KEY"', json.dumps(blas._probe_key()))
    cache_file.write_bytes(content.encode("latin-1"))
    flags = blas.blas_ldflags()
    assert len(calls) == 1 and flags.startswith(f"-L{lib.parent} ")
    assert json.loads(cache_file.read_text()) == {"key": blas._probe_key(), "ldflags": flags}
    assert os.listdir(cache_file.parent) == ["blas_ldflags.json"]  # no temporary file left


def test_an_unwritable_cache_is_no_error(tmp_path, fake_probe, monkeypatch):
    lib, calls = fake_probe
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("SRCNN_CACHE_DIR", str(tmp_path / "a-file"))  # no folder can go there
    assert blas.blas_ldflags() == blas.blas_ldflags()
    assert len(calls) == 2


def test_user_flags_come_last_and_win():
    flags = backend.theano_flags("floatX=float64,blas__ldflags=-lfoo")
    assert flags == "floatX=float32,floatX=float64,blas__ldflags=-lfoo"


def test_users_blas_flags_skip_the_probe_and_the_cache(cache_file, monkeypatch):
    for name in ("_links_with", "_probe_key", "_read_cache", "_write_cache"):
        monkeypatch.setattr(blas, name, _must_not_run)
    assert backend.theano_flags("blas__ldflags=-lfoo") == "floatX=float32,blas__ldflags=-lfoo"
    assert backend.theano_flags("blas.ldflags=") == "floatX=float32,blas.ldflags="
    assert not cache_file.parent.exists()


def test_user_theano_flags_win_in_a_fresh_process(cache_file):
    code = ("import srcnn_theano.backend as b; "
            "print(b.theano.config.floatX, repr(b.theano.config.blas__ldflags))")
    env = dict(os.environ, THEANO_FLAGS="floatX=float64,blas__ldflags=",
               SRCNN_CACHE_DIR=str(cache_file.parent))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["float64", "''"]
    assert not cache_file.parent.exists()  # nothing probed, nothing cached


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
    """With openmp on, the generated C compiles (the backend adds the ``f`` that Theano 1.1.2's
    OpenMP Elemwise format string lacks)."""
    code = ("import numpy as np, srcnn_theano.backend as b; T=b.T; x=T.fvector(); "
            "f=b.theano.function([x], T.exp(x)*2+x); a=np.linspace(-1,1,300000).astype('float32'); "
            "print(float(np.abs(f(a)-(np.exp(a)*2+a)).max()))")
    env = dict(os.environ, THEANO_FLAGS="openmp=True,openmp_elemwise_minsize=1000")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.split()[-1]) < 1e-5


@pytest.mark.slow
def test_start_up_skips_the_unused_imports_and_leaves_them_importable():
    """scipy.stats/special/signal, pkg_resources and setuptools are not imported by Theano
    and Lasagne; Lasagne still knows its version, Theano's scipy fallbacks still work (or,
    for the scipy.signal names that scipy 1.11 lacks, fail to import, as without the
    placeholders), and the real modules import afterwards."""
    code = (
        "import sys, srcnn_theano.backend as b, lasagne\n"
        "skipped = ('scipy.stats', 'scipy.special', 'scipy.signal', 'pkg_resources', 'setuptools')\n"
        "print(sorted(m for m in skipped if m in sys.modules))\n"
        "print(lasagne.__version__)\n"
        "from theano.scalar.basic_scipy import erf\n"
        "from theano.tensor.nnet import abstract_conv\n"
        "print(round(erf.impl(0.5), 6), abstract_conv.imported_scipy_signal)\n"
        "import scipy, pkg_resources\n"
        "print(scipy.stats.norm.cdf(0.0), hasattr(pkg_resources, 'working_set'))\n"
        "import _distutils_hack\n"
        "print(_distutils_hack.DISTUTILS_FINDER in sys.meta_path)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[:5] == ["[]", "0.1", "0.5205 False", "0.5 True", "True"]
