"""GPU support, the library part (srcnn_theano/gpu.py), tested without a GPU.

* The cuDNN >= 8 patch: the rewritten C sources call the ``_v7`` functions
  and none of the removed ones; Theano's ops load them; the stand-ins choose
  algorithms as the removed functions did (run against a mock cuDNN); and the
  patched sources compile against real cuDNN 9 and CUDA 13 headers, the
  complete modules Theano generates for the cuDNN ops included, which also
  link against and load with the real ``libcudnn.so.9``, while the unpatched
  ones fail exactly on the removed calls.
* configure(): the fallback warning when cuDNN is unusable, the version check.
* flags_for() and the backend's handling of the flags.

The tooling that builds a GPU process's environment (gpu_setup/env.py:
library links, Debian's pygpu, the command line) is tested in test_gpu_env.py;
the tests here use it to link the generated modules. Whatever a test patches
in Theano's cuDNN module (patch_theano_dnn, configure) is undone after it
(the ``dnn`` fixtures), so no test sees another's patch.

Some tests need files from package registries, downloaded once into
``~/.cache/srcnn_theano/test-deps`` (``$SRCNN_CACHE_DIR/test-deps``), about
10 MB kept there:

* from PyPI: ``nvidia-cudnn-jit-cu13==9.27.0.42`` (74 MB wheel, the smallest
  one with cuDNN 9's headers; its 130 kB ``libcudnn.so.9`` and the headers are
  kept), ``nvidia-cuda-runtime==13.5.37`` and ``nvidia-cuda-crt==13.5.37``
  (2.7 MB, CUDA headers);
* from Debian: ``python3-pygpu``, ``libgpuarray3``, ``libgpuarray-dev`` 0.7.6
  and pygpu's dependencies (0.8 MB, ``apt-get download``).

Without network they are skipped, except under ``CI=true`` where they fail.
"""
import contextlib
import hashlib
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import types
import warnings
import zipfile

import pytest

from gpu_setup import env as gpu_env
from srcnn_theano import gpu
from srcnn_theano.backend import theano, theano_flags
from srcnn_theano.files import cache_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


THEANO_C_CODE = os.path.join(os.path.dirname(theano.__file__), "gpuarray", "c_code")
CONV_OPS = ("GpuDnnConv", "GpuDnnConvGradI", "GpuDnnConvGradW")
CONV_FILES = {"dnn_fwd.c": "cudnnGetConvolutionForwardAlgorithm",
              "dnn_gi.c": "cudnnGetConvolutionBackwardDataAlgorithm",
              "dnn_gw.c": "cudnnGetConvolutionBackwardFilterAlgorithm"}
CXX = shutil.which("g++") or shutil.which("c++")

CUDNN_WHEEL = ("nvidia-cudnn-jit-cu13", "9.27.0.42")
CUDA_WHEELS = (("nvidia-cuda-runtime", "13.5.37"), ("nvidia-cuda-crt", "13.5.37"))


def _read(name):
    with open(os.path.join(THEANO_C_CODE, name)) as f:
        return f.read()


def _unavailable(why):
    """Fail under CI (the dependency must be there), skip elsewhere."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(why)
    pytest.skip(why)


# ---------------------------------------------------------------- the C patch

@pytest.mark.parametrize("filename", sorted(CONV_FILES))
def test_patched_source_calls_v7_and_no_removed_function(filename):
    removed = CONV_FILES[filename]
    original = _read(filename)
    assert removed + "(" in original  # what cuDNN 8 broke is there to patch

    patched = gpu.patch_c_source(original)

    assert not re.search(rf"(?<![\w]){removed}\s*\(", patched)
    assert not re.search(r"CUDNN_CONVOLUTION_(FWD|BWD_DATA|BWD_FILTER)_"
                         r"(SPECIFY_WORKSPACE_LIMIT|PREFER_FASTEST|NO_WORKSPACE)", patched)
    assert f"{removed}_v7(handle," in patched
    assert f"{removed}MaxCount(handle, &requested)" in patched
    assert f"err = srcnn_{removed}(" in patched
    assert "SRCNN_CONV_PREF_SPECIFY_WORKSPACE_LIMIT, maxfree, &algo);" in patched
    assert "perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= limit" in patched
    # Only the call (name line, preference line) changes before the appended
    # section, so Theano's #line numbers stay right.
    old_lines = original.splitlines()
    new_lines = patched.splitlines()[:len(old_lines)]
    changed = [i for i, (a, b) in enumerate(zip(old_lines, new_lines)) if a != b]
    call_line = next(i for i, line in enumerate(old_lines) if removed + "(" in line)
    assert changed == [call_line, call_line + 3]
    assert patched.splitlines()[len(old_lines) + 1] == "#section support_code"


def test_patch_is_idempotent_and_leaves_other_files_alone():
    for name in CONV_FILES:
        once = gpu.patch_c_source(_read(name))
        assert gpu.patch_c_source(once) == once
    for name in ("dnn_base.c", "dnn_conv_base.c", "conv_desc.c", "dnn_pool.c"):
        assert gpu.patch_c_source(_read(name)) == _read(name)


_MISSING = object()


@contextlib.contextmanager
def _restored_dnn():
    """``theano.gpuarray.dnn``, whatever is changed in it being undone on exit.

    :func:`gpu.patch_theano_dnn` replaces methods of the convolution classes
    and ``dnn._dnn_check_version`` for good, and :func:`gpu.configure` may
    switch cuDNN off (``dnn_present``/``dnn_available``): all are restored.
    """
    from theano.gpuarray import dnn as dnn_module
    targets = [(getattr(dnn_module, name), ("load_c_code", "c_code_cache_version", "__setstate__",
                                            "_srcnn_original_methods", "_srcnn_cudnn8_patch"))
               for name in CONV_OPS]
    targets += [(dnn_module, ("_dnn_check_version", "_srcnn_original_check_version")),
                (dnn_module.dnn_present, ("avail", "msg")), (dnn_module.dnn_available, ("msg",))]
    saved = [(obj, name, vars(obj).get(name, _MISSING)) for obj, names in targets for name in names]
    try:
        yield dnn_module
    finally:
        for obj, name, value in saved:
            if value is not _MISSING:
                setattr(obj, name, value)
            elif name in vars(obj):
                delattr(obj, name)


@pytest.fixture
def unpatched_dnn():
    """``theano.gpuarray.dnn`` as Theano made it, restored after the test, so that no
    test, here or in another module, runs with another's patch."""
    with _restored_dnn() as dnn_module:
        assert not any("_srcnn_cudnn8_patch" in vars(getattr(dnn_module, name))
                       for name in CONV_OPS), "a cuDNN patch outlived its test"
        yield dnn_module


@pytest.fixture
def dnn(unpatched_dnn):
    """``theano.gpuarray.dnn`` with the cuDNN >= 8 patch, for one test."""
    gpu.patch_theano_dnn(unpatched_dnn)
    return unpatched_dnn


def _site_file_digests():
    return {n: hashlib.sha256(_read(n).encode()).hexdigest() for n in CONV_FILES}


def test_ops_load_patched_code_and_site_packages_is_untouched(unpatched_dnn):
    before = _site_file_digests()
    dnn = unpatched_dnn
    assert not gpu.is_patched(dnn.GpuDnnConv())  # no earlier test's patch is left
    assert sorted(gpu.patch_theano_dnn(dnn)) == ["GpuDnnConv", "GpuDnnConvGradI",
                                                 "GpuDnnConvGradW"]
    for cls in (dnn.GpuDnnConv, dnn.GpuDnnConvGradI, dnn.GpuDnnConvGradW):
        op = cls()
        assert gpu.is_patched(op)
        assert "srcnn_cudnnGetConvolution" in op.code_sections["support_code_struct"]
        # Our section splitter agrees with Theano's on the original files.
        fresh = cls.__new__(cls)
        cls._srcnn_original_methods["load_c_code"](fresh, op.func_files)
        assert not gpu.is_patched(fresh)
        assert gpu._split_sections(fresh.func_codes, fresh.section_re,
                                   fresh.SECTIONS) == fresh.code_sections
    assert not gpu.is_patched(dnn.GpuDnnPool(mode="max"))  # other ops: unchanged
    assert _site_file_digests() == before


def test_cache_version_is_tagged(dnn, monkeypatch):
    monkeypatch.setattr(dnn.dnn_present, "avail", True)
    monkeypatch.setattr(dnn.version, "v", 91300)
    for cls in (dnn.GpuDnnConv, dnn.GpuDnnConvGradI, dnn.GpuDnnConvGradW):
        op = cls()
        version = op.c_code_cache_version()
        assert version[-1] == gpu.CACHE_VERSION_TAG
        assert version[0] == cls._srcnn_original_methods["c_code_cache_version"](op)
        assert 91300 in version[0]


def test_unpickled_ops_are_patched(dnn):
    op = dnn.GpuDnnConvGradW(algo="guess_once")
    assert gpu.is_patched(pickle.loads(pickle.dumps(op)))
    # An op pickled before the patch (inside an old compiled function).
    old = dnn.GpuDnnConvGradW.__new__(dnn.GpuDnnConvGradW)
    dnn.GpuDnnConvGradW._srcnn_original_methods["load_c_code"](old, op.func_files)
    old.__dict__.update(algo="guess_once", inplace=False, num_groups=1)
    state = pickle.loads(pickle.dumps(dict(old.__dict__)))
    assert not gpu.is_patched(types.SimpleNamespace(code_sections=state["code_sections"]))
    restored = dnn.GpuDnnConvGradW.__new__(dnn.GpuDnnConvGradW)
    restored.__setstate__(state)
    assert gpu.is_patched(restored)


def test_version_check_accepts_cudnn9_once_patched(dnn, monkeypatch):
    monkeypatch.setattr(dnn, "version", lambda raises=True: 91300)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert dnn._dnn_check_version() == (True, None)
        assert caught == []
        assert dnn._srcnn_original_check_version() == (True, None)  # Theano's: warns only
        assert "more recent than Theano" in str(caught[0].message)
    monkeypatch.setattr(dnn, "version", lambda raises=True: 4010)
    assert dnn._dnn_check_version()[0] is False


def test_prepare_environment_silences_theano_warning_and_disables_tf32(dnn, monkeypatch):
    monkeypatch.setattr(dnn, "version", lambda raises=True: 91300)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = {"THEANO_FLAGS": "floatX=float32,device=cuda0"}
        gpu.prepare_environment(env)
        dnn._srcnn_original_check_version()
        assert caught == []
    assert env["NVIDIA_TF32_OVERRIDE"] == "0"
    env = {"THEANO_FLAGS": "device=cuda", "NVIDIA_TF32_OVERRIDE": "1"}
    gpu.prepare_environment(env)
    assert env["NVIDIA_TF32_OVERRIDE"] == "1"
    env = {"THEANO_FLAGS": "device=cpu"}
    gpu.prepare_environment(env)
    assert "NVIDIA_TF32_OVERRIDE" not in env


def test_the_fixtures_undo_the_patch_and_configures_changes():
    from theano.gpuarray import dnn

    def state():
        classes = [getattr(dnn, name) for name in CONV_OPS]
        return ([dict(vars(c)) for c in classes], dnn._dnn_check_version,
                vars(dnn).get("_srcnn_original_check_version"),
                dnn.dnn_present.avail, dnn.dnn_present.msg, dnn.dnn_available.msg)

    before = state()
    with _restored_dnn():
        gpu.patch_theano_dnn(dnn)
        dnn.dnn_present.avail, dnn.dnn_present.msg = False, "patched away"
        dnn.dnn_available.msg = "patched away"
        assert gpu.is_patched(dnn.GpuDnnConvGradW()) and state() != before
    assert state() == before
    assert not gpu.is_patched(dnn.GpuDnnConvGradW())


# ---------------------------------------------------------------- configure()

class _FakeContext:
    kind = b"cuda"
    bin_id = "sm_90"
    devname = "Fake H100"


@pytest.fixture
def fake_gpu(dnn, monkeypatch):
    """theano.gpuarray as after a successful GPU start, and a fake theano module."""
    import theano.gpuarray as gpuarray
    from theano.gpuarray import type as gtype
    monkeypatch.setattr(gpu, "_WARNED", set())
    monkeypatch.setattr(gpuarray, "pygpu_activated", True)
    monkeypatch.setattr(gpuarray.init_dev, "devmap", {"cuda": _FakeContext()})
    monkeypatch.setitem(gtype._context_reg, None, _FakeContext())
    config = types.SimpleNamespace(device="cuda", init_gpu_device="", contexts="",
                                   dnn__enabled="auto")
    return types.SimpleNamespace(config=config), dnn


COMPILE_ERROR = ("cannot compile with cuDNN. We got this error:\nb'/tmp/try_flags_x.c:4:10: "
                 "fatal error: cudnn.h: No such file or directory\\n'")


def test_configure_warns_once_when_cudnn_is_unusable(fake_gpu, monkeypatch):
    fake_theano, dnn = fake_gpu
    monkeypatch.setattr(dnn.dnn_present, "avail", False)
    monkeypatch.setattr(dnn.dnn_present, "msg", COMPILE_ERROR)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        status = gpu.configure(fake_theano)
        gpu.configure(fake_theano)
    assert [w.category for w in caught] == [gpu.GpuFallbackWarning]
    message = str(caught[0].message)
    assert message == (
        "cuDNN is not usable (cannot compile with cuDNN. We got this error: "
        "b'/tmp/try_flags_x.c:4:10: fatal error: cudnn.h: No such file or directory\\n'); "
        "GPU convolutions use GpuCorrMM (cuBLAS) instead")
    assert "\n" not in message
    assert (status.gpu, status.cudnn, status.conv) == (True, False, "gpucorrmm")
    assert status.device_name == "Fake H100"


def test_configure_uses_cudnn9_when_usable(fake_gpu, monkeypatch):
    fake_theano, dnn = fake_gpu
    monkeypatch.setattr(dnn.dnn_present, "avail", True)
    monkeypatch.setattr(dnn.version, "v", 91300)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        status = gpu.configure(fake_theano)
    assert caught == []
    assert (status.cudnn, status.patched, status.conv, status.cudnn_version) == (
        True, True, "cudnn", 91300)


def test_configure_disables_unpatchable_cudnn8(fake_gpu, monkeypatch):
    fake_theano, dnn = fake_gpu
    monkeypatch.setattr(dnn.dnn_present, "avail", True)
    monkeypatch.setattr(dnn.dnn_present, "msg", None)
    monkeypatch.setattr(dnn.version, "v", 8907)

    def broken(dnn_module=None):
        raise RuntimeError("unknown C code")
    monkeypatch.setattr(gpu, "patch_theano_dnn", broken)
    with pytest.warns(gpu.GpuFallbackWarning, match=r"^cuDNN is not usable \(the cuDNN >= 8 "
                      r"patch failed: unknown C code\); GPU convolutions use GpuCorrMM"):
        status = gpu.configure(fake_theano)
    assert status.conv == "gpucorrmm" and not status.patched


def test_configure_raises_when_cudnn_is_required(fake_gpu, monkeypatch):
    fake_theano, dnn = fake_gpu
    fake_theano.config.dnn__enabled = "True"
    monkeypatch.setattr(dnn.dnn_present, "avail", False)
    monkeypatch.setattr(dnn.dnn_present, "msg", "PyGPU not available")
    with pytest.raises(RuntimeError, match="dnn__enabled=True"):
        gpu.configure(fake_theano)


def test_configure_respects_dnn_disabled_and_warns_when_gpu_did_not_start(fake_gpu, monkeypatch):
    fake_theano, dnn = fake_gpu
    fake_theano.config.dnn__enabled = "False"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert gpu.configure(fake_theano).conv == "gpucorrmm"
    assert caught == []  # the user's own choice
    import theano.gpuarray as gpuarray
    monkeypatch.setattr(gpuarray, "pygpu_activated", False)
    with pytest.warns(gpu.GpuFallbackWarning, match=r"GPU requested \(device=cuda\) but "
                      r"pygpu/libgpuarray could not start the GPU .*; Theano computes on the CPU"):
        status = gpu.configure(fake_theano)
    assert (status.gpu, status.conv) == (False, "cpu")


def test_configure_on_cpu_does_nothing_and_does_not_load_the_gpu_backend():
    code = ("import sys; from srcnn_theano import gpu; import theano; s = gpu.configure(theano); "
            "print(s.conv, s.gpu, 'theano.gpuarray' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=ROOT, THEANO_FLAGS="device=cpu,blas__ldflags=")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["cpu", "False", "False"]


# ---------------------------------------------------------------- flags

def _links(tmp_path):
    """What flags_for reads of gpu_env.LibraryLinks, for a usable cuDNN."""
    return types.SimpleNamespace(cudnn_usable=True, cudnn_include=str(tmp_path / "cudnn" / "include"),
                                 lib_dir=str(tmp_path / "links"),
                                 cuda_include="/usr/local/cuda/include")


def test_flags_for_devices():
    assert gpu.flags_for("cpu") == "device=cpu,floatX=float32"
    assert gpu.flags_for("cuda") == "device=cuda,floatX=float32,dnn__enabled=False"
    assert gpu.flags_for("gpu1", preallocate=0.5) == (
        "device=cuda1,floatX=float32,dnn__enabled=False,gpuarray__preallocate=0.5")


def test_flags_for_with_cudnn(tmp_path):
    links = _links(tmp_path)
    inc, lib = links.cudnn_include, links.lib_dir
    assert gpu.flags_for("cuda0", links) == (
        f"device=cuda0,floatX=float32,dnn__enabled=auto,dnn__include_path={inc},"
        f"dnn__library_path={lib},dnn__bin_path={lib},cuda__include_path=/usr/local/cuda/include,"
        "dnn__conv__algo_fwd=guess_on_shape_change,dnn__conv__algo_bwd_data=guess_on_shape_change,"
        "dnn__conv__algo_bwd_filter=guess_on_shape_change")
    links.lib_dir = str(tmp_path / "a,b")
    with pytest.raises(ValueError, match="cannot hold a path"):
        gpu.flags_for("cuda", links)
    links.cudnn_usable = False  # headers or library missing, or of two versions
    assert gpu.flags_for("cuda", links) == "device=cuda,floatX=float32,dnn__enabled=False"


def test_theano_parses_the_recommended_flags_through_the_backend(tmp_path):
    links = _links(tmp_path)
    flags = gpu.flags_for("cuda", links, preallocate=0.25)
    combined = theano_flags(flags)
    assert combined.endswith("," + flags)  # the user's flags come last, so they win
    # Theano-PyMC 1.1.2 knows every flag name and value (device=cpu: no GPU here).
    code = ("import theano; c = theano.config; print(c.dnn__enabled, c.dnn__include_path, "
            "c.dnn__library_path, c.dnn__bin_path, c.cuda__include_path, c.dnn__conv__algo_fwd, "
            "c.dnn__conv__algo_bwd_data, c.dnn__conv__algo_bwd_filter, c.gpuarray__preallocate)")
    env = dict(os.environ, THEANO_FLAGS=combined.replace("device=cuda", "device=cpu"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["auto", links.cudnn_include, links.lib_dir, links.lib_dir,
                                  "/usr/local/cuda/include"] + ["guess_on_shape_change"] * 3 + [
                                      "0.25"]


# ---------------------------------------------------------------- registry files

def _deps_dir():
    return cache_dir("test-deps")


def _pip_download(name, version, dest):
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
           "--python-version", "3.11", "--platform", "manylinux_2_27_x86_64",
           "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
           "-d", dest]
    for spec in (f"{name}=={version}", name):  # the pinned version, else the latest
        if subprocess.run(cmd + [spec], capture_output=True, timeout=900).returncode == 0:
            wheels = [f for f in os.listdir(dest) if f.endswith(".whl")]
            if wheels:
                return os.path.join(dest, wheels[0])
    raise RuntimeError(f"pip could not download {name}")


def _extract(wheel, dest, keep):
    with zipfile.ZipFile(wheel) as zf:
        for member in zf.namelist():
            if keep(member):
                zf.extract(member, dest)


@pytest.fixture(scope="session")
def cuda_headers():
    """cuDNN 9 headers and libcudnn.so.9, CUDA 13 headers (PyPI, cached)."""
    import filelock
    base = _deps_dir()
    os.makedirs(base, exist_ok=True)
    done = os.path.join(base, "cuda.done")
    with filelock.FileLock(os.path.join(base, "cuda.lock")):
        if not os.path.exists(done):
            tmp = os.path.join(base, "download")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(os.path.join(base, "nvidia"), ignore_errors=True)
            try:
                for name, version in (CUDNN_WHEEL,) + CUDA_WHEELS:
                    os.makedirs(tmp)
                    wheel = _pip_download(name, version, tmp)
                    _extract(wheel, base, lambda m: "/include/" in m
                             or m.endswith("/lib/libcudnn.so.9"))
                    shutil.rmtree(tmp)
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                _unavailable(f"CUDA/cuDNN headers from PyPI: {exc}")
            open(done, "w").close()
    paths = {"cudnn_include": os.path.join(base, "nvidia", "cudnn_jit", "include"),
             "cudnn_lib": os.path.join(base, "nvidia", "cudnn_jit", "lib"),
             "cuda_include": os.path.join(base, "nvidia", "cu13", "include")}
    if not all(os.path.isdir(p) for p in paths.values()):
        _unavailable(f"unexpected wheel layout under {base}")
    return paths


@pytest.fixture(scope="session")
def debian_gpuarray():
    """Debian's pygpu/libgpuarray 0.7.6, unpacked (cached)."""
    import filelock
    base = _deps_dir()
    os.makedirs(base, exist_ok=True)
    prefix = os.path.join(base, "gpuarray")
    with filelock.FileLock(os.path.join(base, "gpuarray.lock")):
        if gpu_env.find_gpuarray_prefix([prefix]) is None:
            if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
                _unavailable("Debian's pygpu: needs apt-get and dpkg")
            try:
                gpu_env.fetch_debian_gpuarray(prefix)
            except (subprocess.SubprocessError, OSError):
                try:  # no package lists yet
                    if os.geteuid() != 0:
                        raise
                    gpu_env.fetch_debian_gpuarray(prefix, apt_update=True)
                except (subprocess.SubprocessError, OSError) as exc:
                    _unavailable(f"Debian's pygpu/libgpuarray: {exc}")
    return prefix


def _cxx_check(args, source):
    return subprocess.run([CXX, "-fsyntax-only", "-x", "c++", *args, "-"], input=source,
                          capture_output=True, text=True, timeout=300)


_CALL_SITE_DECLARATIONS = {
    "dnn_fwd.c": "cudnnTensorDescriptor_t input; cudnnFilterDescriptor_t kerns; "
                 "cudnnTensorDescriptor_t output; cudnnConvolutionFwdAlgo_t algo;",
    "dnn_gi.c": "cudnnFilterDescriptor_t kerns; cudnnTensorDescriptor_t output; "
                "cudnnTensorDescriptor_t input; cudnnConvolutionBwdDataAlgo_t algo;",
    "dnn_gw.c": "cudnnTensorDescriptor_t input; cudnnTensorDescriptor_t output; "
                "cudnnFilterDescriptor_t kerns; cudnnConvolutionBwdFilterAlgo_t algo;",
}


def _call_site_unit(patched):
    """The algorithm-selection call of each file, with the stand-ins when patched."""
    unit = ["#include <cudnn.h>", "#define APPLY_SPECIFIC(x) x",
            "struct params_t { cudnnHandle_t handle; };"]
    for i, name in enumerate(sorted(CONV_FILES)):
        code = gpu.patch_c_source(_read(name)) if patched else _read(name)
        call = re.search(r"err = (srcnn_)?cudnnGetConvolution\w+Algorithm\([^;]*\);", code).group(0)
        if patched:
            unit.append(code.split("#section support_code\n")[-1])
        unit.append(f"int call{i}(params_t *params, cudnnConvolutionDescriptor_t desc, "
                    f"size_t maxfree) {{\n  cudnnStatus_t err; {_CALL_SITE_DECLARATIONS[name]}\n"
                    f"  {call}\n  return (int)err + (int)algo;\n}}")
    return "\n".join(unit) + "\n"


@pytest.mark.skipif(CXX is None, reason="needs a C++ compiler")
def test_patched_call_sites_compile_against_cudnn9_headers(cuda_headers):
    args = ["-Wall", "-Wextra", "-Werror", "-I", cuda_headers["cudnn_include"],
            "-I", cuda_headers["cuda_include"]]
    assert gpu_env.cudnn_header_version(cuda_headers["cudnn_include"]) >= 90000
    result = _cxx_check(args, _call_site_unit(patched=True))
    assert result.returncode == 0, result.stderr
    result = _cxx_check(args, _call_site_unit(patched=False))
    assert result.returncode != 0
    for removed in CONV_FILES.values():
        assert f"'{removed}' was not declared" in result.stderr.replace("‘", "'").replace("’", "'")


_MOCK_CUDNN = r"""
#include <cudnn.h>
#include <stdio.h>
#include <string.h>
static cudnnConvolutionFwdAlgoPerf_t fake[8];
static int fake_count = 0;
static cudnnStatus_t fake_err = CUDNN_STATUS_SUCCESS;
extern "C" cudnnStatus_t CUDNNWINAPI cudnnGetConvolutionForwardAlgorithmMaxCount(
    cudnnHandle_t, int *count) { *count = 8; return CUDNN_STATUS_SUCCESS; }
extern "C" cudnnStatus_t CUDNNWINAPI cudnnGetConvolutionForwardAlgorithm_v7(
    cudnnHandle_t, const cudnnTensorDescriptor_t, const cudnnFilterDescriptor_t,
    const cudnnConvolutionDescriptor_t, const cudnnTensorDescriptor_t, const int requested,
    int *returned, cudnnConvolutionFwdAlgoPerf_t *perf) {
  if (fake_err != CUDNN_STATUS_SUCCESS) return fake_err;
  *returned = fake_count < requested ? fake_count : requested;
  memcpy(perf, fake, sizeof(*perf) * *returned);
  return CUDNN_STATUS_SUCCESS;
}
static void add(cudnnConvolutionFwdAlgo_t algo, cudnnStatus_t status, size_t memory) {
  fake[fake_count].algo = algo; fake[fake_count].status = status;
  fake[fake_count].memory = memory; fake_count++;
}
static void pick(int preference, size_t limit) {
  cudnnConvolutionFwdAlgo_t algo = (cudnnConvolutionFwdAlgo_t)-1;
  cudnnStatus_t err = srcnn_cudnnGetConvolutionForwardAlgorithm(
      NULL, NULL, NULL, NULL, NULL, preference, limit, &algo);
  printf("%s:%d ", err == CUDNN_STATUS_SUCCESS ? "ok" :
         err == CUDNN_STATUS_BAD_PARAM ? "bad_param" : "other", (int)algo);
}
int main(void) {
  add(CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD, CUDNN_STATUS_NOT_SUPPORTED, 0);  /* fastest, unusable */
  add(CUDNN_CONVOLUTION_FWD_ALGO_FFT, CUDNN_STATUS_SUCCESS, 1000);
  add(CUDNN_CONVOLUTION_FWD_ALGO_GEMM, CUDNN_STATUS_SUCCESS, 10);
  add(CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, CUDNN_STATUS_SUCCESS, 0);
  pick(SRCNN_CONV_PREF_SPECIFY_WORKSPACE_LIMIT, 5000);  /* FFT: fastest that fits */
  pick(SRCNN_CONV_PREF_SPECIFY_WORKSPACE_LIMIT, 999);   /* GEMM */
  pick(SRCNN_CONV_PREF_NO_WORKSPACE, 5000);              /* PRECOMP_GEMM: needs none */
  pick(SRCNN_CONV_PREF_PREFER_FASTEST, 0);               /* FFT: no limit */
  fake_count = 1;
  pick(SRCNN_CONV_PREF_SPECIFY_WORKSPACE_LIMIT, 5000);  /* none usable: IMPLICIT_GEMM */
  fake_err = CUDNN_STATUS_BAD_PARAM;
  pick(SRCNN_CONV_PREF_SPECIFY_WORKSPACE_LIMIT, 5000);  /* errors are passed on */
  return 0;
}
"""


@pytest.mark.skipif(CXX is None, reason="needs a C++ compiler")
def test_stand_in_picks_the_fastest_usable_algorithm_that_fits(cuda_headers, tmp_path):
    stand_ins = gpu.patch_c_source(_read("dnn_fwd.c")).split("#section support_code\n")[-1]
    source = _MOCK_CUDNN.replace("#include <string.h>\n", "#include <string.h>\n" + stand_ins)
    (tmp_path / "mock.cpp").write_text(source)
    subprocess.run([CXX, "-I", cuda_headers["cudnn_include"], "-I", cuda_headers["cuda_include"],
                    str(tmp_path / "mock.cpp"), "-o", str(tmp_path / "mock")], check=True)
    out = subprocess.run([str(tmp_path / "mock")], capture_output=True, text=True, check=True)
    fft, gemm, precomp, implicit = 4, 2, 1, 0  # cudnnConvolutionFwdAlgo_t values
    assert out.stdout.split() == [f"ok:{fft}", f"ok:{gemm}", f"ok:{precomp}", f"ok:{fft}",
                                  f"ok:{implicit}", "bad_param:-1"]


_GENERATE = r"""
import json, sys
from srcnn_theano import gpu
import theano
from theano.gpuarray import dnn
from theano.gpuarray import type as gtype
from theano.gpuarray.type import GpuArrayType
from theano.graph.basic import Constant
from theano.graph.fg import FunctionGraph
from theano.link.c.basic import CLinker
from theano.link.c.cmodule import std_include_dirs

out_dir, patch = sys.argv[1], sys.argv[2] == "1"
assert dnn.pygpu is not None, "pygpu did not import"
# No GPU here: a context stand-in, and the cuDNN version as the headers say.
class Context:
    kind, bin_id, cudnn_handle_param = b"cuda", "sm_90", None
gtype._context_reg[None] = Context()
dnn.dnn_present.avail, dnn.version.v = True, int(sys.argv[3])
if patch:
    gpu.patch_theano_dnn(dnn)

def gpu_var(name):
    return GpuArrayType("float32", (False,) * 4, context_name=None)(name)

desc = dnn.GpuDnnConvDesc(border_mode="valid", subsample=(1, 1), dilation=(1, 1),
                          conv_mode="conv", precision="float32")(theano.tensor.lvector("kshape"))
d = desc.type("desc")
outputs = {"desc": desc,
           "fwd": dnn.GpuDnnConv(algo="guess_once")(gpu_var("i"), gpu_var("k"), gpu_var("o"), d),
           "gw": dnn.GpuDnnConvGradW(algo="guess_once")(gpu_var("i"), gpu_var("t"), gpu_var("k"), d),
           "gi": dnn.GpuDnnConvGradI(algo="guess_once")(gpu_var("k"), gpu_var("t"), gpu_var("i"), d)}
meta = {}
for name, var in outputs.items():
    node = var.owner
    inputs = [i.type() if i.owner is not None else i for i in node.inputs]  # one node per module
    out = node.op(*inputs)
    linker = CLinker().accept(FunctionGraph([i for i in inputs if not isinstance(i, Constant)],
                                            [out], clone=False))
    with open(f"{out_dir}/{name}.cpp", "w") as f:
        f.write(linker.get_src_code())
    meta[name] = {"include_dirs": linker.header_dirs() + std_include_dirs(),
                  "libraries": linker.libraries(), "patched": gpu.is_patched(node.op) if name != "desc" else None}
print(json.dumps(meta))
"""


@pytest.mark.slow
@pytest.mark.skipif(CXX is None, reason="needs a C++ compiler")
def test_theano_cudnn_modules_compile_link_and_load_with_cudnn9(cuda_headers, debian_gpuarray,
                                                                  tmp_path):
    """The complete modules Theano generates for GpuDnnConvDesc, GpuDnnConv,
    GpuDnnConvGradW and GpuDnnConvGradI, against cuDNN 9.27 and CUDA 13.5
    headers and Debian's libgpuarray 0.7.6 headers."""
    usr = os.path.join(debian_gpuarray, "usr")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT, os.path.join(usr, "lib", "python3", "dist-packages")]),
        LD_LIBRARY_PATH=os.path.join(usr, "lib"),
        THEANO_FLAGS=f"device=cpu,blas__ldflags=,compiledir={tmp_path / 'compiledir'}")
    version = str(gpu_env.cudnn_header_version(cuda_headers["cudnn_include"]))
    meta = {}
    for patched in ("0", "1"):
        out_dir = tmp_path / f"src{patched}"
        out_dir.mkdir()
        gen = subprocess.run([sys.executable, "-c", _GENERATE, str(out_dir), patched, version],
                             env=env, capture_output=True, text=True, timeout=600)
        assert gen.returncode == 0, gen.stderr[-3000:]
        meta[patched] = json.loads(gen.stdout.strip().splitlines()[-1])
    assert meta["1"]["fwd"]["patched"] and not meta["0"]["fwd"]["patched"]

    def flags(name, patched):
        dirs = meta[patched][name]["include_dirs"] + [
            os.path.join(usr, "include"), cuda_headers["cudnn_include"],
            cuda_headers["cuda_include"]]
        return ["-DNPY_NO_DEPRECATED_API=NPY_1_7_API_VERSION", "-fPIC"] + [f"-I{d}" for d in dirs]

    def source(name, patched):
        return (tmp_path / f"src{patched}" / f"{name}.cpp").read_text()

    # Unpatched, cuDNN 9 rejects exactly the removed calls.
    for name, removed in (("fwd", "cudnnGetConvolutionForwardAlgorithm"),
                          ("gi", "cudnnGetConvolutionBackwardDataAlgorithm")):
        result = _cxx_check(flags(name, "0"), source(name, "0"))
        errors = [line for line in result.stderr.splitlines() if "error:" in line]
        assert result.returncode != 0 and len(errors) == 2, result.stderr[-3000:]
        assert removed in errors[1] and "SPECIFY_WORKSPACE_LIMIT" in errors[0]
    result = _cxx_check(flags("desc", "1"), source("desc", "1"))
    assert result.returncode == 0, result.stderr[-3000:]

    # Patched: each convolution module compiles, links with -lcudnn -lgpuarray
    # through the folder of links, and loads with every symbol bound.
    links = gpu_env.make_library_links(str(tmp_path / "links"),
                                   [cuda_headers["cudnn_lib"], os.path.join(usr, "lib")],
                                   names=("cudnn", "gpuarray"))
    assert links.missing == []
    for name in ("fwd", "gw", "gi"):
        module = re.search(r"PyInit_(\w+)", source(name, "1")).group(1)
        so = tmp_path / f"{module}.so"
        build = subprocess.run(
            [CXX, "-shared", "-O0", "-x", "c++", *flags(name, "1"), "-fvisibility=hidden",
             str(tmp_path / "src1" / f"{name}.cpp"), "-o", str(so), f"-L{links.lib_dir}",
             f"-Wl,-rpath,{links.lib_dir}"] + [f"-l{lib}" for lib in meta["1"][name]["libraries"]],
            capture_output=True, text=True, timeout=600)
        assert build.returncode == 0, build.stderr[-3000:]
        load = subprocess.run(
            [sys.executable, "-c", f"import pygpu.gpuarray, {module}; print('loaded')"],
            env=dict(env, LD_BIND_NOW="1", PYTHONPATH=env["PYTHONPATH"] + os.pathsep + str(tmp_path)),
            capture_output=True, text=True, timeout=300)
        assert load.stdout.strip() == "loaded", load.stderr[-3000:]
        symbols = subprocess.run(["nm", "-D", "--undefined-only", str(so)], capture_output=True,
                                 text=True).stdout
        assert "_v7@libcudnn.so.9" in symbols and "MaxCount@libcudnn.so.9" in symbols
