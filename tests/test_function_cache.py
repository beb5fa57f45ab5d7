"""What a new process does not rebuild (srcnn_theano.network.cache).

* Theano's compiled modules of ``DimShuffle`` and ``Dot22`` get the same,
  versioned cache key in every process, so Theano's module cache finds them;
* the compiled predict function is pickled with its model and reused, and
  computes what a freshly compiled one does;
* a corrupt file, or one that others could have written, is never unpickled.
"""
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from srcnn_theano.backend import theano
from srcnn_theano.network import cache
from srcnn_theano.network.functions import compile_predict
from srcnn_theano.network.model import SRCNN

from conftest import REPO

SMALL = dict(f1=3, f2=1, f3=3, n1=4, n2=3, channels=1)

_KEY_VERSIONS = r"""
import json
import srcnn_theano.network.functions  # applies the fixes, as every compile path does
from srcnn_theano.backend import T, theano
from theano.link.c.basic import CLinker
x, y = T.fmatrix(), T.fmatrix()
f = theano.function([x, y], [T.dot(x, y), x.dimshuffle(1, 0)])
out = {}
for node in f.maker.fgraph.toposort():
    fg = theano.graph.fg.FunctionGraph(node.inputs, node.outputs, clone=True)
    key = CLinker().accept(fg).cmodule_key()
    out[type(node.op).__name__] = repr(key[0])
print(json.dumps(out))
"""


def _key_versions(seed):
    env = dict(os.environ, PYTHONHASHSEED=str(seed), PYTHONPATH=REPO)
    res = subprocess.run([sys.executable, "-c", _KEY_VERSIONS], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.slow   # two new processes that import Theano
def test_module_cache_keys_are_versioned_and_the_same_in_every_process():
    a, b = _key_versions(1), _key_versions(2)
    assert {"Dot22", "DimShuffle"} <= set(a)
    assert a == b                       # no per-process hash() in the key
    # () = unversioned: compiled again in every process
    assert a["Dot22"] != "()" and a["DimShuffle"] != "()"


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("SRCNN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SRCNN_THEANO_FUNCTION_CACHE", raising=False)
    return tmp_path / "cache"


def _build():
    model = SRCNN(**SMALL, padding="same", init_std=None, seed=3)
    return model, compile_predict(model)


def _pickles(root):
    folder = root / "functions"
    return sorted(p for p in folder.iterdir() if p.suffix == ".pkl") if folder.exists() else []


def test_predict_function_is_pickled_and_reused(cache_root):
    params = {"test": "reuse", **SMALL}
    model, fn = cache.load_or_build("predict", params, _build)
    assert cache.last_source == "built" and len(_pickles(cache_root)) == 1
    assert (os.stat(cache_root / "functions").st_mode & 0o777) == 0o700

    def must_not_build():
        raise AssertionError("compiled again instead of loading the pickle")

    model2, fn2 = cache.load_or_build("predict", params, must_not_build)
    assert cache.last_source == "disk"
    x = np.random.RandomState(0).rand(1, 1, 17, 13).astype(np.float32)
    weights = {k: v * 1.5 for k, v in model.get_weights().items()}
    model.set_weights(weights)
    model2.set_weights(weights)   # the unpickled model drives the unpickled function
    np.testing.assert_array_equal(fn2(x), fn(x))
    model2.set_weights({k: v * 0 for k, v in weights.items()})
    assert np.abs(fn2(x)).max() == 0 and np.abs(fn(x)).max() > 0

    cache.load_or_build("predict", {"test": "other", **SMALL}, _build)
    assert cache.last_source == "built" and len(_pickles(cache_root)) == 2


def test_corrupt_or_foreign_files_are_not_unpickled(cache_root):
    params = {"test": "safety", **SMALL}
    cache.load_or_build("predict", params, _build)
    (path,) = _pickles(cache_root)
    calls = []

    def build():
        calls.append(1)
        return _build()

    path.write_bytes(b"not a pickle")
    cache.load_or_build("predict", params, build)          # corrupt: rebuilt and rewritten
    assert calls == [1] and pickle.loads(path.read_bytes())
    os.chmod(path, 0o666)                                   # others could have written it
    cache.load_or_build("predict", params, build)
    assert calls == [1, 1] and cache.last_source == "built"
    os.chmod(path, 0o600)
    os.chmod(cache_root / "functions", 0o777)               # ... or replaced it
    cache.load_or_build("predict", params, build)
    assert calls == [1, 1, 1]
    os.chmod(cache_root / "functions", 0o700)
    cache.load_or_build("predict", params, build)
    assert calls == [1, 1, 1] and cache.last_source == "disk"


def test_cache_can_be_turned_off(cache_root, monkeypatch):
    monkeypatch.setenv("SRCNN_THEANO_FUNCTION_CACHE", "0")
    cache.load_or_build("predict", {"test": "off", **SMALL}, _build)
    assert cache.last_source == "built" and _pickles(cache_root) == []


def test_key_holds_the_graph_sources_and_theano_config(cache_root, monkeypatch):
    key = cache.environment_key()
    assert key["sources"] and key["theano_config_hash"] and key["flags"]["floatX"] == "float32"
    monkeypatch.setattr(cache, "GRAPH_SOURCES", cache.GRAPH_SOURCES[:-1])
    assert cache.environment_key()["sources"] != key["sources"]


def test_march_flags_are_cached_per_machine(cache_root, monkeypatch):
    from theano.link.c.cmodule import GCC_compiler

    if not theano.config.cxx:
        pytest.skip("no C compiler")
    known = GCC_compiler.march_flags
    monkeypatch.setattr(GCC_compiler, "march_flags", None)
    first = cache.cached_march_flags()             # probes (Theano's own code) and stores
    assert first == list(known or [])
    entry = json.loads((cache_root / "functions" / "march_flags.json").read_text())
    assert entry["march_flags"] == first
    monkeypatch.setattr(GCC_compiler, "march_flags", None)
    monkeypatch.setattr(GCC_compiler, "compile_args",
                        lambda *a, **k: pytest.fail("probed again instead of reading the cache"))
    assert cache.cached_march_flags() == first and GCC_compiler.march_flags == first
