"""Run srcnn-theano on an NVIDIA GPU with Theano-PyMC's ``gpuarray`` backend.

Theano-PyMC 1.1.2's GPU backend (pygpu/libgpuarray 0.7) predates cuDNN 8, which
removed ``cudnnGetConvolution{Forward,BackwardData,BackwardFilter}Algorithm``:
the C code of Theano's ``GpuDnnConv``, ``GpuDnnConvGradI`` and
``GpuDnnConvGradW`` calls them and Theano's version check only warns, so every
cuDNN convolution fails to compile. :func:`patch_theano_dnn` rewrites, in
memory, the C code those ops load to call the ``_v7`` functions
(:func:`patch_c_source`), tags their ``c_code_cache_version`` and accepts
cuDNN >= 8; site-packages is not edited. ``srcnn_theano.backend`` calls
:func:`prepare_environment` before it imports Theano and :func:`configure`
after: nothing on the CPU; on a GPU the patch, and a one-line warning when
convolutions fall back to GpuCorrMM (cuBLAS). :func:`flags_for`: the
``THEANO_FLAGS`` we recommend. See docs/gpu.md. The environment of a GPU
process (library links, Debian's pygpu, ``LD_LIBRARY_PATH``) is built by
``python -m gpu_setup.env env``. This module imports neither Theano nor
numpy at import time (the backend imports it before Theano).
"""
import collections
import dataclasses
import os
import re
import warnings

__all__ = ["PATCH_VERSION", "CACHE_VERSION_TAG", "GpuFallbackWarning", "GpuStatus",
           "patch_c_source", "patch_op_sources", "patch_theano_dnn", "is_patched",
           "prepare_environment", "configure", "flags_for"]

#: Bumped whenever the C text that :func:`patch_c_source` produces changes.
PATCH_VERSION = 1

#: Appended to the ops' ``c_code_cache_version`` (see :func:`patch_theano_dnn`).
CACHE_VERSION_TAG = ("srcnn_cudnn8_v7_algo", PATCH_VERSION)

#: Written into every patched C file, so a patched op can be recognised.
PATCH_MARKER = "srcnn-theano: cuDNN >= 8 algorithm selection"

# Calls of the functions cuDNN 8 removed (not their _v7 or MaxCount cousins,
# nor our own srcnn_ stand-ins, which the look-behind excludes).
_REMOVED_CALL_RE = re.compile(
    r"(?<![\w])(cudnnGetConvolution(?:Forward|BackwardData|BackwardFilter)Algorithm)(?=\s*\()")
# The cudnnConvolution*Preference_t values, removed with those functions.
_REMOVED_PREFERENCE_RE = re.compile(
    r"(?<![\w])CUDNN_CONVOLUTION_(?:FWD|BWD_DATA|BWD_FILTER)_"
    r"(SPECIFY_WORKSPACE_LIMIT|PREFER_FASTEST|NO_WORKSPACE)\b")

_CONV_OPS = ("GpuDnnConv", "GpuDnnConvGradI", "GpuDnnConvGradW")  # whose C code calls them
# Theano's own warning, which configure() replaces with an accurate one.
_THEANO_CUDNN_WARNING = r"Your cuDNN version is more recent than Theano"


class GpuFallbackWarning(RuntimeWarning):
    """The GPU, or cuDNN on it, was asked for but cannot be used."""


# ---------------------------------------------------- the C sources patch

#: The removed functions: their algorithm and performance types, the descriptors
#: they take (in the order of the call), the algorithm that needs no workspace.
_AlgoFunction = collections.namedtuple(
    "_AlgoFunction", "removed algo_type perf_type descriptors no_workspace_algo")
_T, _F, _C = "cudnnTensorDescriptor_t", "cudnnFilterDescriptor_t", "cudnnConvolutionDescriptor_t"
_ALGO_FUNCTIONS = {f.removed: f for f in (
    _AlgoFunction("cudnnGetConvolutionForwardAlgorithm", "cudnnConvolutionFwdAlgo_t",
                  "cudnnConvolutionFwdAlgoPerf_t",
                  ((_T, "xDesc"), (_F, "wDesc"), (_C, "convDesc"), (_T, "yDesc")),
                  "CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM"),
    _AlgoFunction("cudnnGetConvolutionBackwardDataAlgorithm", "cudnnConvolutionBwdDataAlgo_t",
                  "cudnnConvolutionBwdDataAlgoPerf_t",
                  ((_F, "wDesc"), (_T, "dyDesc"), (_C, "convDesc"), (_T, "dxDesc")),
                  "CUDNN_CONVOLUTION_BWD_DATA_ALGO_0"),
    _AlgoFunction("cudnnGetConvolutionBackwardFilterAlgorithm", "cudnnConvolutionBwdFilterAlgo_t",
                  "cudnnConvolutionBwdFilterAlgoPerf_t",
                  ((_T, "xDesc"), (_T, "dyDesc"), (_C, "convDesc"), (_F, "dwDesc")),
                  "CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0"),
)}

_PREFERENCE_DEFINES = """\
#ifndef SRCNN_CONV_PREF_NO_WORKSPACE
/* The values of the cudnnConvolution*Preference_t enums cuDNN 8 removed. */
#define SRCNN_CONV_PREF_NO_WORKSPACE 0
#define SRCNN_CONV_PREF_PREFER_FASTEST 1
#define SRCNN_CONV_PREF_SPECIFY_WORKSPACE_LIMIT 2
#define SRCNN_CONV_MAX_ALGOS 32
#endif
"""

_STAND_IN_TEMPLATE = """\
#ifndef SRCNN_HAVE_{removed}
#define SRCNN_HAVE_{removed}
/* {marker} (patch v{version}, srcnn_theano/gpu.py).
   cuDNN 8 removed {removed}: this stand-in takes the same arguments
   (the preference being one of the SRCNN_CONV_PREF_* values) and asks
   {v7} instead, which lists the algorithms sorted by expected speed. */
#if CUDNN_MAJOR < 7
#error "srcnn-theano: the cuDNN >= 8 patch of Theano needs cuDNN 7 or newer"
#endif
static cudnnStatus_t
{stand_in}(cudnnHandle_t handle, {params},
    int preference, size_t memoryLimitInBytes, {algo_type} *algo)
{{
  {perf_type} perf[SRCNN_CONV_MAX_ALGOS];
  int requested = 0, returned = 0, i;
  size_t limit = memoryLimitInBytes;
  cudnnStatus_t err;

  if (preference == SRCNN_CONV_PREF_NO_WORKSPACE)
    limit = 0;
  else if (preference == SRCNN_CONV_PREF_PREFER_FASTEST)
    limit = (size_t)-1;
  err = {max_count}(handle, &requested);
  if (err != CUDNN_STATUS_SUCCESS)
    return err;
  if (requested < 1 || requested > SRCNN_CONV_MAX_ALGOS)
    requested = SRCNN_CONV_MAX_ALGOS;
  err = {v7}(handle, {args},
      requested, &returned, perf);
  if (err != CUDNN_STATUS_SUCCESS)
    return err;
  /* Fastest first: the first algorithm that works for these descriptors and
     whose workspace fits the limit is what the removed function returned. */
  for (i = 0; i < returned; i++) {{
    if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= limit) {{
      *algo = perf[i].algo;
      return CUDNN_STATUS_SUCCESS;
    }}
  }}
  *algo = {no_workspace_algo};  /* needs no workspace */
  return CUDNN_STATUS_SUCCESS;
}}
#endif
"""


def _stand_in_source(function):
    """C definition of the stand-in for one removed function."""
    removed = function.removed
    return _STAND_IN_TEMPLATE.format(
        marker=PATCH_MARKER, version=PATCH_VERSION, removed=removed, v7=removed + "_v7",
        max_count=removed + "MaxCount", stand_in="srcnn_" + removed,
        algo_type=function.algo_type, perf_type=function.perf_type,
        no_workspace_algo=function.no_workspace_algo,
        params=", ".join(f"const {t} {n}" for t, n in function.descriptors),
        args=", ".join(n for _, n in function.descriptors))


def patch_c_source(code):
    """Theano C source (``#section`` format) with the calls cuDNN 8 removed replaced.

    Each ``cudnnGetConvolution*Algorithm(...)`` call becomes a call of a
    ``srcnn_`` stand-in (appended in a new ``#section support_code``) with the
    same arguments, its preference the matching ``SRCNN_CONV_PREF_*``. The
    stand-in asks ``..._v7`` for the algorithms sorted by expected speed and
    returns the first that works and whose workspace fits the limit, else the
    one that needs none, as the removed function did. Lines before the
    appended section keep their numbers (Theano's ``#line`` directives stay
    right). ``code`` itself when it calls no removed function (once patched).
    """
    used = [_ALGO_FUNCTIONS[name] for name in
            sorted(set(m.group(1) for m in _REMOVED_CALL_RE.finditer(code)))]
    if not used:
        return code
    code = _REMOVED_CALL_RE.sub(lambda m: "srcnn_" + m.group(1), code)
    code = _REMOVED_PREFERENCE_RE.sub(lambda m: "SRCNN_CONV_PREF_" + m.group(1), code)
    extra = "".join(_stand_in_source(f) for f in used)
    if not code.endswith("\n"):
        code += "\n"
    return code + "\n#section support_code\n" + _PREFERENCE_DEFINES + extra


def _split_sections(codes, section_re, sections):
    """Split C files in ``#section`` format into a dict, by the rules of
    ``ExternalCOp.load_c_code`` (sections of one name concatenated in file order)."""
    result = {}
    for code in codes:
        split = section_re.split(code)
        if split[0].strip():
            raise ValueError("stray code before the first #section")
        for name, body in zip(split[1::2], split[2::2]):
            if name not in sections:
                raise ValueError(f"unknown section type: {name}")
            result[name] = result.get(name, "") + body
    return result


def patch_op_sources(op):
    """Patch the C code an ``ExternalCOp`` (``GpuDnnConv``, ...) has loaded, in place;
    True when it changed."""
    codes = [patch_c_source(c) for c in op.func_codes]
    if codes == list(op.func_codes):
        return False
    op.code_sections = _split_sections(codes, op.section_re, op.SECTIONS)
    op.func_codes = codes
    return True


def is_patched(op):
    """True when the C code of ``op`` (an ``ExternalCOp``) calls none of the removed functions."""
    text = "".join(op.code_sections.values())
    return PATCH_MARKER in text and _REMOVED_CALL_RE.search(text) is None


def _patch_class(cls):
    """Make every instance of ``cls`` load patched C code."""
    if "_srcnn_cudnn8_patch" in cls.__dict__:
        return
    originals = {"load_c_code": cls.load_c_code,
                 "c_code_cache_version": cls.c_code_cache_version,
                 "__setstate__": getattr(cls, "__setstate__", None)}

    def load_c_code(self, func_files, _orig=originals["load_c_code"]):
        _orig(self, func_files)
        patch_op_sources(self)

    def c_code_cache_version(self, _orig=originals["c_code_cache_version"]):
        return (_orig(self), CACHE_VERSION_TAG)

    def __setstate__(self, state, _orig=originals["__setstate__"]):
        # Ops unpickled from an old compiled function carry the C code they
        # were pickled with: patch that too.
        if _orig is not None:
            _orig(self, state)
        else:
            self.__dict__.update(state)
        if getattr(self, "func_codes", None):
            patch_op_sources(self)

    cls.load_c_code = load_c_code
    cls.c_code_cache_version = c_code_cache_version
    cls.__setstate__ = __setstate__
    cls._srcnn_original_methods = originals
    cls._srcnn_cudnn8_patch = PATCH_VERSION


def _make_version_check(dnn):
    """A ``_dnn_check_version`` for patched ops: cuDNN >= 5, no upper bound."""
    def _dnn_check_version():
        v = dnn.version()
        if v < 5000:
            return (False, f"cuDNN version is too old. Update to v5* or higher, was {int(v)}.")
        return True, None
    _dnn_check_version._srcnn_patched = True
    return _dnn_check_version


def patch_theano_dnn(dnn=None):
    """Make Theano's cuDNN convolutions compile against cuDNN 7, 8 and 9; idempotent.

    Patches ``load_c_code``, ``c_code_cache_version`` and ``__setstate__`` of
    ``GpuDnnConv``, ``GpuDnnConvGradI`` and ``GpuDnnConvGradW`` (originals in
    ``cls._srcnn_original_methods``) and ``dnn._dnn_check_version`` (original:
    ``dnn._srcnn_original_check_version``) of ``dnn`` (``theano.gpuarray.dnn``
    by default). Returns the names of the patched classes; raises RuntimeError
    when a new op still calls a removed function (a Theano we do not know).
    """
    if dnn is None:
        from theano.gpuarray import dnn
    for name in _CONV_OPS:
        _patch_class(getattr(dnn, name))
    if not getattr(dnn._dnn_check_version, "_srcnn_patched", False):
        dnn._srcnn_original_check_version = dnn._dnn_check_version
        dnn._dnn_check_version = _make_version_check(dnn)
    for name in _CONV_OPS:
        op = getattr(dnn, name)()
        if not is_patched(op):
            raise RuntimeError(f"the cuDNN >= 8 patch did not apply to {name}: "
                               "its C code is not the one srcnn_theano knows")
    return list(_CONV_OPS)


# ---------------------------------------------------- set-up around Theano's import

def _wants_gpu(device):
    """True for Theano device names of the GPU backend (``cuda``, ``cuda0``, ``gpu``)."""
    device = (device or "").strip().lower()
    return device.startswith(("cuda", "gpu", "opencl"))


def _flags_want_gpu(theano_flags):
    """True when a ``THEANO_FLAGS`` string asks for a GPU device or context."""
    for item in theano_flags.split(","):
        key, _, value = item.partition("=")
        key = key.strip().replace(".", "__")
        if key in ("device", "init_gpu_device") and _wants_gpu(value):
            return True
        if key == "contexts" and value.strip():
            return True
    return False


def prepare_environment(environ=None):
    """Set-up that must precede ``import theano``, in ``environ`` (``os.environ``).

    Silences Theano's "cuDNN version is more recent than Theano" warning
    (:func:`configure` says what is usable). When ``THEANO_FLAGS`` asks for a
    GPU, sets ``NVIDIA_TF32_OVERRIDE=0`` unless set: cuDNN >= 8 and cuBLAS would
    use TF32 (10-bit mantissa) for float32 on Ampere and later GPUs.
    """
    warnings.filterwarnings("ignore", message=_THEANO_CUDNN_WARNING, category=UserWarning,
                            module=r"theano\.gpuarray\.dnn")
    env = os.environ if environ is None else environ
    if _flags_want_gpu(env.get("THEANO_FLAGS", "")):
        env.setdefault("NVIDIA_TF32_OVERRIDE", "0")


@dataclasses.dataclass
class GpuStatus:
    """What :func:`configure` found."""

    device: str  # the Theano device asked for
    gpu: bool = False  # a GPU context is active
    device_name: str = None  # the GPU's name
    cudnn: bool = False  # convolutions will use cuDNN
    cudnn_version: int = None  # theano.gpuarray.dnn.version() (e.g. 91300) when cuDNN is present
    patched: bool = False  # the cuDNN >= 8 patch is in place
    conv: str = "cpu"  # what runs convolutions: 'cudnn', 'gpucorrmm' or 'cpu'
    reason: str = None  # why the GPU or cuDNN is not used


_WARNED = set()


def _warn_once(key, message):
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, GpuFallbackWarning, stacklevel=3)


def fallback_message(reason, limit=240):
    """The one-line warning given when cuDNN cannot be used, for Theano's
    ``reason`` (possibly a multi-line compiler error, shortened to ``limit``)."""
    text = " ".join(str(reason or "unknown reason").split())
    text = text if len(text) <= limit else text[:limit - 3] + "..."
    return f"cuDNN is not usable ({text}); GPU convolutions use GpuCorrMM (cuBLAS) instead"


def configure(theano_module=None, device=None):
    """Set up GPU support after ``import theano``; a no-op on the CPU. Returns a :class:`GpuStatus`.

    On a GPU: patches the cuDNN ops (cuDNN >= 7), then checks cuDNN. When it is
    unusable, Theano's optimiser uses GpuCorrMM (cuBLAS) and we warn once, on
    one line (:class:`GpuFallbackWarning`); ``dnn__enabled=True`` raises
    RuntimeError instead, ``dnn__enabled=False`` says nothing. When the GPU did
    not start (no pygpu, no driver) we warn once too: Theano runs on the CPU.
    ``device`` overrides ``theano.config.device`` (for tests).
    """
    if theano_module is None:
        import theano as theano_module
    config = theano_module.config
    device = config.device if device is None else device
    status = GpuStatus(device=device)
    if not (_wants_gpu(device) or _wants_gpu(config.init_gpu_device) or config.contexts):
        return status

    import theano.gpuarray as gpuarray
    from theano.gpuarray import dnn

    version = dnn.version(raises=False) if dnn.dnn_present() else -1
    status.cudnn_version = version if version > 0 else None
    patch_error = None
    if version < 0 or version >= 7000:
        try:
            patch_theano_dnn(dnn)
            status.patched = True
        except Exception as exc:  # an unknown Theano: fall back, don't crash
            patch_error = f"the cuDNN >= 8 patch failed: {exc}"

    status.gpu = bool(getattr(gpuarray, "pygpu_activated", False))
    if not status.gpu:
        status.reason = ("pygpu/libgpuarray could not start the GPU (see Theano's error above, "
                         "and docs/gpu.md)")
        _warn_once("gpu", f"GPU requested (device={device}) but {status.reason}; "
                          "Theano computes on the CPU")
        return status
    contexts = list(getattr(gpuarray.init_dev, "devmap", {}).values())
    status.device_name = getattr(contexts[0], "devname", None) if contexts else None

    status.conv = "gpucorrmm"
    if config.dnn__enabled == "False":
        status.reason = "cuDNN disabled by dnn__enabled=False"
        return status
    if dnn.dnn_present() and version >= 8000 and not status.patched:
        # dnn_present()/dnn_available() answer False from now on.
        dnn.dnn_present.avail = False
        dnn.dnn_present.msg = dnn.dnn_available.msg = patch_error
    if not dnn.dnn_available(None):
        status.reason = dnn.dnn_available.msg or dnn.dnn_present.msg
        if config.dnn__enabled == "True":
            raise RuntimeError(f"dnn__enabled=True but cuDNN cannot be used: {status.reason}")
        _warn_once("cudnn", fallback_message(status.reason))
        return status
    status.cudnn = True
    status.conv = "cudnn"
    return status


def flags_for(device="cuda", links=None, *, conv_algo="guess_on_shape_change",
              preallocate=None, floatx="float32"):
    """The ``THEANO_FLAGS`` we recommend for ``device`` (``cpu``, ``cuda``, ``cudaN``;
    ``gpuN`` means ``cudaN``), as a string.

    ``links`` says where cuDNN is: ``gpu_setup/env.py``'s ``LibraryLinks``,
    or any object with ``cudnn_usable``, ``cudnn_include``, ``cuda_include``
    and ``lib_dir``. Without it, or not ``cudnn_usable``: ``dnn__enabled=False``
    (GpuCorrMM); with it, ``dnn__enabled=auto`` (Theano's check decides and
    :func:`configure` warns if it fails) and ``conv_algo`` for the three
    convolution ops (``guess_on_shape_change``: cuDNN's heuristic, once per
    input shape). ``preallocate``: ``gpuarray__preallocate`` (a fraction of
    the GPU memory or MiB), omitted by default. Raises ValueError for a path
    THEANO_FLAGS cannot hold (with ',' or '=').
    """
    device = device.strip().lower()
    if device.startswith("gpu"):
        device = "cuda" + device[3:]
    flags = [f"device={device}", f"floatX={floatx}"]
    if not _wants_gpu(device):
        return ",".join(flags)
    if links is not None and links.cudnn_usable:
        paths = [("dnn__include_path", links.cudnn_include),
                 ("dnn__library_path", links.lib_dir), ("dnn__bin_path", links.lib_dir)]
        if links.cuda_include:
            paths.append(("cuda__include_path", links.cuda_include))
        for key, path in paths:
            if "," in path or "=" in path:
                raise ValueError(f"{key}: THEANO_FLAGS cannot hold a path with ',' or '=': {path}")
        flags.append("dnn__enabled=auto")
        flags += [f"{key}={path}" for key, path in paths]
        flags += [f"dnn__conv__algo_fwd={conv_algo}", f"dnn__conv__algo_bwd_data={conv_algo}",
                  f"dnn__conv__algo_bwd_filter={conv_algo}"]
    else:
        flags.append("dnn__enabled=False")
    if preallocate is not None:
        flags.append(f"gpuarray__preallocate={preallocate}")
    return ",".join(flags)
