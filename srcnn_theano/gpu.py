"""Run srcnn-theano on an NVIDIA GPU with Theano-PyMC's ``gpuarray`` backend.

Theano-PyMC 1.1.2's GPU backend (``theano.gpuarray``, on pygpu/libgpuarray
0.7) predates CUDA 11 and cuDNN 8. This module makes it work on a current
machine (CUDA 12 or 13, cuDNN 9) without editing anything in site-packages.

cuDNN 8 and later (:func:`patch_theano_dnn`)
    cuDNN 8 removed ``cudnnGetConvolutionForwardAlgorithm``,
    ``cudnnGetConvolutionBackwardDataAlgorithm`` and
    ``cudnnGetConvolutionBackwardFilterAlgorithm``. The C code of Theano's
    ``GpuDnnConv``, ``GpuDnnConvGradI`` and ``GpuDnnConvGradW``
    (``theano/gpuarray/c_code/dnn_{fwd,gi,gw}.c``) calls them, and Theano's
    version check only warns about a recent cuDNN, so cuDNN looks available
    and then every cuDNN convolution fails to compile. The patch rewrites, in
    memory, the C code those ops load (``ExternalCOp.load_c_code``) so that it
    calls the ``_v7`` functions instead (:func:`patch_c_source`), adds a tag to
    their ``c_code_cache_version`` so that patched and unpatched modules never
    share an entry of Theano's compile cache, and replaces the version check so
    that cuDNN >= 8 is accepted without a warning.

Library names (:func:`make_library_links`, :func:`gpu_environment`)
    libgpuarray ``dlopen``\\ s ``libcuda.so``, ``libnvrtc.so`` and
    ``libcublas.so``, and Theano links cuDNN with ``-lcudnn``: unversioned
    names which NVIDIA's pip wheels (``nvidia-cudnn-cu12``, ...) and a bare
    driver install do not provide. :func:`make_library_links` makes a folder
    of unversioned symbolic links to the versioned files and
    :func:`gpu_environment` the variables that use it. The dynamic loader
    reads ``LD_LIBRARY_PATH`` once, when a process starts, so it must be set
    before the Python process that imports Theano starts::

        eval "$(python -m srcnn_theano.gpu env)"   # in a shell, then run as usual

    or, from Python, :func:`reexec_with_gpu_env` restarts the program with it.

Configuration (:func:`prepare_environment`, :func:`configure`, :func:`flags_for`)
    ``srcnn_theano.backend`` calls :func:`prepare_environment` before it
    imports Theano and :func:`configure` right after. :func:`configure` does
    nothing on the CPU; on a GPU it applies the patch, and when cuDNN cannot be
    used it warns once, on one line, that convolutions run as GpuCorrMM
    (cuBLAS) instead. :func:`flags_for` gives the ``THEANO_FLAGS`` we
    recommend for a device.

This module imports neither Theano nor numpy at import time, so that
``python -m srcnn_theano.gpu env`` works before Theano is set up.
"""
import argparse
import dataclasses
import glob
import os
import re
import shlex
import site
import subprocess
import sys
import tempfile
import warnings

__all__ = [
    "PATCH_VERSION", "CACHE_VERSION_TAG", "GpuFallbackWarning", "GpuStatus",
    "LibraryLinks", "patch_c_source", "patch_op_sources", "patch_theano_dnn",
    "is_patched", "prepare_environment", "configure", "flags_for",
    "default_search_dirs", "find_library", "make_library_links",
    "cudnn_header_version", "gpu_environment", "shell_exports",
    "fetch_debian_gpuarray", "find_gpuarray_prefix", "reexec_with_gpu_env",
    "main",
]

#: Bumped whenever the C text that :func:`patch_c_source` produces changes.
PATCH_VERSION = 1

#: Appended to the ops' ``c_code_cache_version`` (see :func:`patch_theano_dnn`).
CACHE_VERSION_TAG = ("srcnn_cudnn8_v7_algo", PATCH_VERSION)

#: Written into every patched C file, so a patched op can be recognised.
PATCH_MARKER = "srcnn-theano: cuDNN >= 8 algorithm selection"

#: The cuDNN libraries (``lib<name>.so``) that libgpuarray and Theano load by
#: their unversioned names.
LIBRARIES = ("cuda", "nvrtc", "cublas", "cudnn")

# Calls of the functions cuDNN 8 removed (not their _v7 or MaxCount cousins,
# nor our own srcnn_ stand-ins, which the look-behind excludes).
_REMOVED_CALL_RE = re.compile(
    r"(?<![\w])(cudnnGetConvolution(?:Forward|BackwardData|BackwardFilter)Algorithm)(?=\s*\()")
# The cudnnConvolution*Preference_t values, removed with those functions.
_REMOVED_PREFERENCE_RE = re.compile(
    r"(?<![\w])CUDNN_CONVOLUTION_(?:FWD|BWD_DATA|BWD_FILTER)_"
    r"(SPECIFY_WORKSPACE_LIMIT|PREFER_FASTEST|NO_WORKSPACE)\b")

# The ops whose C code calls the removed functions.
_CONV_OPS = ("GpuDnnConv", "GpuDnnConvGradI", "GpuDnnConvGradW")

# Theano's own warning, which configure() replaces with an accurate one.
_THEANO_CUDNN_WARNING = r"Your cuDNN version is more recent than Theano"


class GpuFallbackWarning(RuntimeWarning):
    """The GPU, or cuDNN on it, was asked for but cannot be used."""


# --------------------------------------------------------------------------
# The cuDNN >= 8 patch of the C sources
# --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _AlgoFunction:
    """One removed ``cudnnGet*Algorithm`` function and its cuDNN 7+ replacement."""

    removed: str
    algo_type: str
    perf_type: str
    descriptors: tuple  # ((C type, name), ...) in the order of the call
    no_workspace_algo: str

    @property
    def v7(self):
        return self.removed + "_v7"

    @property
    def max_count(self):
        return self.removed + "MaxCount"

    @property
    def stand_in(self):
        return "srcnn_" + self.removed


_ALGO_FUNCTIONS = {f.removed: f for f in (
    _AlgoFunction(
        "cudnnGetConvolutionForwardAlgorithm",
        "cudnnConvolutionFwdAlgo_t", "cudnnConvolutionFwdAlgoPerf_t",
        (("cudnnTensorDescriptor_t", "xDesc"), ("cudnnFilterDescriptor_t", "wDesc"),
         ("cudnnConvolutionDescriptor_t", "convDesc"), ("cudnnTensorDescriptor_t", "yDesc")),
        "CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM"),
    _AlgoFunction(
        "cudnnGetConvolutionBackwardDataAlgorithm",
        "cudnnConvolutionBwdDataAlgo_t", "cudnnConvolutionBwdDataAlgoPerf_t",
        (("cudnnFilterDescriptor_t", "wDesc"), ("cudnnTensorDescriptor_t", "dyDesc"),
         ("cudnnConvolutionDescriptor_t", "convDesc"), ("cudnnTensorDescriptor_t", "dxDesc")),
        "CUDNN_CONVOLUTION_BWD_DATA_ALGO_0"),
    _AlgoFunction(
        "cudnnGetConvolutionBackwardFilterAlgorithm",
        "cudnnConvolutionBwdFilterAlgo_t", "cudnnConvolutionBwdFilterAlgoPerf_t",
        (("cudnnTensorDescriptor_t", "xDesc"), ("cudnnTensorDescriptor_t", "dyDesc"),
         ("cudnnConvolutionDescriptor_t", "convDesc"), ("cudnnFilterDescriptor_t", "dwDesc")),
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
    return _STAND_IN_TEMPLATE.format(
        marker=PATCH_MARKER, version=PATCH_VERSION, removed=function.removed,
        v7=function.v7, max_count=function.max_count, stand_in=function.stand_in,
        algo_type=function.algo_type, perf_type=function.perf_type,
        no_workspace_algo=function.no_workspace_algo,
        params=", ".join(f"const {t} {n}" for t, n in function.descriptors),
        args=", ".join(n for _, n in function.descriptors))


def patch_c_source(code):
    """Return Theano C source with the calls that cuDNN 8 removed replaced.

    Each call of ``cudnnGetConvolution{Forward,BackwardData,BackwardFilter}
    Algorithm(...)`` becomes a call of a ``srcnn_``-prefixed stand-in with the
    same arguments, the ``CUDNN_CONVOLUTION_*_{SPECIFY_WORKSPACE_LIMIT,
    PREFER_FASTEST,NO_WORKSPACE}`` preference becoming the matching
    ``SRCNN_CONV_PREF_*`` value. The stand-ins, appended in a new
    ``#section support_code``, ask ``cudnnGetConvolution*Algorithm_v7`` for
    the algorithms sorted by expected speed and return the first whose status
    is ``CUDNN_STATUS_SUCCESS`` and whose workspace fits the limit (none for
    ``NO_WORKSPACE``, any for ``PREFER_FASTEST``), or the algorithm that needs
    no workspace if none fits, as the removed functions did.

    Line numbers before the appended section are unchanged, so that Theano's
    ``#line`` directives still point at the right lines of the original file.

    Parameters
    ----------
    code : str
        The text of one of Theano's C files (``#section`` format).

    Returns
    -------
    str
        The patched text; ``code`` itself when it calls none of the removed
        functions (in particular when it is already patched).
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
    """Split C files in ``#section`` format into a dict, as ExternalCOp does.

    The same rules as ``ExternalCOp.load_c_code`` for files with ``#section``
    markers (the only format of the cuDNN ops): sections of one name are
    concatenated in file order.
    """
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
    """Patch the C code an ``ExternalCOp`` instance has loaded, in place.

    Parameters
    ----------
    op : theano.graph.op.ExternalCOp
        Typically a ``GpuDnnConv``, ``GpuDnnConvGradI`` or ``GpuDnnConvGradW``.

    Returns
    -------
    bool
        True when the code changed.
    """
    codes = [patch_c_source(c) for c in op.func_codes]
    if codes == list(op.func_codes):
        return False
    op.code_sections = _split_sections(codes, op.section_re, op.SECTIONS)
    op.func_codes = codes
    return True


def is_patched(op):
    """True when ``op``'s C code calls none of the removed functions.

    Parameters
    ----------
    op : theano.graph.op.ExternalCOp
    """
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
    """Make Theano's cuDNN convolutions compile against cuDNN 7, 8 and 9.

    Idempotent. Patches the classes ``GpuDnnConv``, ``GpuDnnConvGradI`` and
    ``GpuDnnConvGradW`` (their ``load_c_code``, ``c_code_cache_version`` and
    ``__setstate__``) and ``dnn._dnn_check_version``; site-packages is not
    touched. Instances created before the call keep their C code, but Theano
    only creates these ops while it optimises a graph.

    Parameters
    ----------
    dnn : module, optional
        ``theano.gpuarray.dnn``; imported when omitted.

    Returns
    -------
    list of str
        The names of the patched op classes.

    Raises
    ------
    RuntimeError
        When a freshly made op still calls a removed function (a Theano whose
        C code this patch does not know).
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


# --------------------------------------------------------------------------
# Set-up around Theano's import
# --------------------------------------------------------------------------

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
    """Set-up that must precede ``import theano``.

    * Silences Theano's "cuDNN version is more recent than Theano" warning,
      which it emits while it imports (:func:`configure` decides what is
      usable afterwards, and says so).
    * When ``THEANO_FLAGS`` asks for a GPU, sets ``NVIDIA_TF32_OVERRIDE=0``
      unless it is set already: cuDNN >= 8 and cuBLAS would otherwise use
      TF32 tensor cores for float32 on Ampere and later GPUs (10-bit
      mantissa), and results would no longer match the CPU to float32
      precision. Set ``NVIDIA_TF32_OVERRIDE=1`` to allow TF32.

    Parameters
    ----------
    environ : dict, optional
        The environment to read and change; ``os.environ`` by default.
    """
    warnings.filterwarnings("ignore", message=_THEANO_CUDNN_WARNING, category=UserWarning,
                            module=r"theano\.gpuarray\.dnn")
    env = os.environ if environ is None else environ
    if _flags_want_gpu(env.get("THEANO_FLAGS", "")):
        env.setdefault("NVIDIA_TF32_OVERRIDE", "0")


@dataclasses.dataclass
class GpuStatus:
    """What :func:`configure` found.

    Attributes
    ----------
    device : str
        The Theano device asked for.
    gpu : bool
        True when a GPU context is active.
    device_name : str or None
        The GPU's name.
    cudnn : bool
        True when convolutions will use cuDNN.
    cudnn_version : int or None
        ``theano.gpuarray.dnn.version()`` (e.g. 91300), when cuDNN is present.
    patched : bool
        True when the cuDNN >= 8 patch is in place.
    conv : str
        ``'cudnn'``, ``'gpucorrmm'`` or ``'cpu'``: what runs convolutions.
    reason : str or None
        Why the GPU or cuDNN is not used.
    """

    device: str
    gpu: bool = False
    device_name: str = None
    cudnn: bool = False
    cudnn_version: int = None
    patched: bool = False
    conv: str = "cpu"
    reason: str = None


_WARNED = set()


def _warn_once(key, message):
    if key in _WARNED:
        return
    _WARNED.add(key)
    warnings.warn(message, GpuFallbackWarning, stacklevel=3)


def _one_line(text, limit=240):
    text = " ".join(str(text or "unknown reason").split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def fallback_message(reason):
    """The one-line warning given when cuDNN cannot be used.

    Parameters
    ----------
    reason : str
        Theano's explanation (possibly a multi-line compiler error).
    """
    return (f"cuDNN is not usable ({_one_line(reason)}); "
            "GPU convolutions use GpuCorrMM (cuBLAS) instead")


def _disable_dnn(dnn, reason):
    """Make ``dnn_present``/``dnn_available`` answer False from now on."""
    dnn.dnn_present.avail = False
    dnn.dnn_present.msg = reason
    dnn.dnn_available.msg = reason


def configure(theano_module=None, device=None):
    """Set up GPU support after ``import theano``; a no-op on the CPU.

    For a GPU device: patches the cuDNN ops (:func:`patch_theano_dnn`) when
    the cuDNN version is 7 or newer, then checks that cuDNN is usable on the
    device. When it is not (absent, headers missing, cuDNN >= 8 without the
    patch, ``dnn__enabled`` forcing nothing), Theano's optimiser uses
    GpuCorrMM (cuBLAS) for convolutions, and we warn once, on one line, with
    a :class:`GpuFallbackWarning`. When the GPU itself could not be started
    (pygpu missing, no driver), we warn once too: Theano then runs on the CPU.

    Parameters
    ----------
    theano_module : module, optional
        The imported ``theano``.
    device : str, optional
        Overrides ``theano.config.device`` (for tests).

    Returns
    -------
    GpuStatus

    Raises
    ------
    RuntimeError
        If ``dnn__enabled=True`` was asked for and cuDNN cannot be used.
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
    if status.gpu:
        contexts = list(getattr(gpuarray.init_dev, "devmap", {}).values())
        status.device_name = getattr(contexts[0], "devname", None) if contexts else None
    else:
        status.reason = ("pygpu/libgpuarray could not start the GPU (see Theano's error above, "
                         "and docs/gpu.md)")
        _warn_once("gpu", f"GPU requested (device={device}) but {status.reason}; "
                          "Theano computes on the CPU")
        return status

    status.conv = "gpucorrmm"
    if config.dnn__enabled == "False":
        status.reason = "cuDNN disabled by dnn__enabled=False"
        return status
    if dnn.dnn_present() and version >= 8000 and not status.patched:
        _disable_dnn(dnn, patch_error)
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
    """The ``THEANO_FLAGS`` we recommend for a device.

    Parameters
    ----------
    device : str
        ``'cpu'``, ``'cuda'``, ``'cudaN'`` (``'gpu'``/``'gpuN'`` are taken
        as ``'cuda'``/``'cudaN'``).
    links : LibraryLinks, optional
        From :func:`make_library_links`. Without it, or without cuDNN headers
        and library in it, cuDNN is switched off (``dnn__enabled=False``:
        GpuCorrMM). With it, ``dnn__enabled=auto``: Theano's own check decides,
        and :func:`configure` warns if it fails.
    conv_algo : str
        The cuDNN algorithm choice for the three convolution ops. The default,
        ``guess_on_shape_change``, asks cuDNN's heuristic (the patched
        ``_v7`` path) once per input shape, which suits SRCNN's whole-image
        inference on images of many sizes. ``time_on_shape_change`` times the
        algorithms instead; Theano's default, ``small``/``none``, fixes one.
    preallocate : float, optional
        ``gpuarray__preallocate``: a fraction (<= 1) of the GPU memory or a
        number of MiB to reserve at start; omitted by default (libgpuarray's
        allocation cache then grows as needed).
    floatx : str
        ``floatX``.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        For a path that THEANO_FLAGS cannot hold (one with ',' or '=').
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


# --------------------------------------------------------------------------
# CUDA libraries under their unversioned names
# --------------------------------------------------------------------------

def _cache_dir():
    root = os.environ.get("SRCNN_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "srcnn_theano")
    return root


def _site_dirs():
    """Python library folders that may hold NVIDIA's pip wheels."""
    dirs = []
    try:
        dirs += site.getsitepackages()
    except AttributeError:  # virtualenv's old site.py
        pass
    dirs.append(site.getusersitepackages())
    for pattern in ("/opt/*/.venv/lib/python3*/site-packages", "/opt/*/lib/python3*/site-packages",
                    "/opt/conda/lib/python3*/site-packages", "/usr/local/lib/python3*/dist-packages",
                    "/usr/local/lib/python3*/site-packages", "/usr/lib/python3/dist-packages",
                    os.path.expanduser("~/.local/lib/python3*/site-packages")):
        dirs += sorted(glob.glob(pattern))
    return dirs


def _wheel_lib_dirs(site_dir):
    """``nvidia/*/lib`` folders of NVIDIA wheels (``nvidia/cudnn/lib``, ``nvidia/cu13/lib``)."""
    return sorted(glob.glob(os.path.join(site_dir, "nvidia", "*", "lib")))


def _ldconfig_dirs():
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True,
                             timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    dirs = []
    for line in out.splitlines():
        if "=>" in line and re.search(r"lib(cuda|cudnn|cublas|nvrtc)\.so", line):
            dirs.append(os.path.dirname(line.split("=>", 1)[1].strip()))
    return dirs


def default_search_dirs(roots=None):
    """Folders searched for the CUDA libraries, in order of preference.

    Parameters
    ----------
    roots : list of str, optional
        Looked at first. Each may be a library folder, a CUDA/cuDNN install
        (with ``lib64`` or ``lib``) or a site-packages folder with NVIDIA
        wheels (``nvidia/*/lib``).

    Returns
    -------
    list of str
        Existing folders, without duplicates; ``stubs`` folders (the
        toolkit's link-only ``libcuda.so``) excluded. After ``roots`` come
        ``$SRCNN_CUDA_LIB_DIRS``, ``$CUDA_HOME``/``$CUDA_PATH``/``$CUDNN_HOME``,
        ``/usr/local/cuda``, the driver's folders and ``ldconfig``'s, then the
        NVIDIA wheels of the Python installations found.
    """
    candidates = []

    def add_root(root):
        root = os.path.abspath(os.path.expanduser(root))
        candidates.extend(_wheel_lib_dirs(root))
        for sub in ("lib64", "lib", os.path.join("targets", "x86_64-linux", "lib")):
            candidates.append(os.path.join(root, sub))
        candidates.append(root)

    for root in roots or []:
        add_root(root)
    candidates += [d for d in os.environ.get("SRCNN_CUDA_LIB_DIRS", "").split(os.pathsep) if d]
    for var in ("CUDA_HOME", "CUDA_PATH", "CUDNN_HOME", "CUDNN_PATH"):
        if os.environ.get(var):
            add_root(os.environ[var])
    add_root("/usr/local/cuda")
    for root in sorted(glob.glob("/usr/local/cuda-*"), reverse=True):
        add_root(root)
    candidates += ["/usr/local/nvidia/lib64", "/usr/local/nvidia/lib", "/usr/lib/x86_64-linux-gnu",
                   "/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib/wsl/lib"]
    candidates += _ldconfig_dirs()
    for site_dir in _site_dirs():
        candidates += _wheel_lib_dirs(site_dir)
    result = []
    for d in candidates:
        d = os.path.normpath(d)
        if d not in result and os.path.isdir(d) and "stubs" not in d.split(os.sep):
            result.append(d)
    return result


def _version_key(filename, name):
    match = re.fullmatch(rf"lib{re.escape(name)}\.so((?:\.\d+)*)", filename)
    if match is None:
        return None
    return tuple(int(x) for x in match.group(1).split(".")[1:])


def find_library(name, search_dirs):
    """Find ``lib<name>.so*`` in the first folder of ``search_dirs`` that has one.

    Parameters
    ----------
    name : str
        ``'cudnn'``, ``'cublas'``, ...
    search_dirs : list of str

    Returns
    -------
    str or None
        The soname with the highest version (``libcublas.so.13`` rather than
        ``libcublas.so.12`` or ``libcublas.so.13.1.0.3``; ``libcuda.so.1``
        rather than ``libcuda.so.580.95.05``), else the file with the highest
        full version, else ``lib<name>.so`` itself.
    """
    for d in search_dirs:
        found = []
        try:
            entries = os.listdir(d)
        except OSError:
            continue
        for entry in entries:
            key = _version_key(entry, name)
            path = os.path.join(d, entry)
            if key is not None and os.path.exists(path):
                found.append((key, entry))
        versioned = [(k, e) for k, e in found if k]
        if versioned:  # sonames (fewest numbers) first, then the highest version
            fewest = min(len(k) for k, _ in versioned)
            return os.path.join(d, max((k, e) for k, e in versioned if len(k) == fewest)[1])
        if found:
            return os.path.join(d, found[0][1])
    return None


def cudnn_header_version(include_dir):
    """The ``CUDNN_VERSION`` of the headers in ``include_dir`` (e.g. 91300), or None.

    cuDNN 9 numbers versions ``major * 10000 + minor * 100 + patch``, older
    ones ``major * 1000 + minor * 100 + patch``, as ``CUDNN_VERSION`` does and
    Theano's ``dnn.version()`` returns.
    """
    values = {}
    for header in ("cudnn_version.h", "cudnn.h"):
        path = os.path.join(include_dir, header)
        if not os.path.exists(path):
            continue
        with open(path, errors="replace") as f:
            text = f.read()
        for key in ("MAJOR", "MINOR", "PATCHLEVEL"):
            m = re.search(rf"#define\s+CUDNN_{key}\s+(\d+)", text)
            if m and key not in values:
                values[key] = int(m.group(1))
    if len(values) < 3:
        return None
    factor = 10000 if values["MAJOR"] >= 9 else 1000
    return values["MAJOR"] * factor + values["MINOR"] * 100 + values["PATCHLEVEL"]


def _find_include(header, candidates, also=()):
    for d in candidates:
        if d and os.path.exists(os.path.join(d, header)) and all(
                os.path.exists(os.path.join(d, a)) for a in also):
            return os.path.normpath(d)
    return None


def _include_candidates(lib_path):
    dirs = []
    if lib_path:
        lib_dir = os.path.dirname(lib_path)
        dirs += [os.path.join(lib_dir, "..", "include"), os.path.join(lib_dir, "..", "..", "include")]
    for var in ("CUDNN_HOME", "CUDNN_PATH", "CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            dirs.append(os.path.join(os.environ[var], "include"))
    dirs += ["/usr/local/cuda/include", "/usr/include", "/usr/include/x86_64-linux-gnu"]
    return dirs


@dataclasses.dataclass
class LibraryLinks:
    """A folder of unversioned links to the CUDA libraries, and what it found.

    Attributes
    ----------
    lib_dir : str
        The folder of links (``libcudnn.so -> .../libcudnn.so.9``, ...).
    libraries : dict
        ``{'cudnn': '/real/path/libcudnn.so.9', ...}`` for those found.
    missing : list of str
        Names of :data:`LIBRARIES` not found.
    real_dirs : list of str
        The folders the libraries were found in (for ``LD_LIBRARY_PATH``:
        their siblings, such as ``libcudnn_graph.so.9``, load from there).
    cudnn_include : str or None
        Folder with ``cudnn.h``, next to the library when possible.
    cuda_include : str or None
        Folder with ``cuda_runtime_api.h`` (which ``cudnn.h`` includes) and ``cuda.h``.
    cudnn_version : int or None
        Version of the headers in ``cudnn_include``.
    """

    lib_dir: str
    libraries: dict
    missing: list
    real_dirs: list
    cudnn_include: str = None
    cuda_include: str = None
    cudnn_version: int = None

    @property
    def cudnn_file_version(self):
        """The cuDNN library's version as its files say, e.g. ``(9, 13, 0)``, or None.

        From the real file's name (``libcudnn.so.9.13.0``); for a pip wheel,
        whose file is just ``libcudnn.so.9``, from the wheel's ``.dist-info``
        folder (``nvidia_cudnn_cu13-9.13.0.50.dist-info``).
        """
        if "cudnn" not in self.libraries:
            return None
        path = os.path.realpath(self.libraries["cudnn"])
        version = _version_key(os.path.basename(path), "cudnn") or ()
        site_dir = os.path.normpath(os.path.join(os.path.dirname(path), "..", "..", ".."))
        if len(version) < 2 and os.path.basename(os.path.dirname(os.path.dirname(
                os.path.dirname(path)))) == "nvidia":
            for info in sorted(glob.glob(os.path.join(site_dir, "nvidia_cudnn_cu*-*.dist-info"))):
                m = re.search(r"-(\d+(?:\.\d+)+)\.dist-info$", info)
                if m and (not version or int(m.group(1).split(".")[0]) == version[0]):
                    return tuple(int(x) for x in m.group(1).split(".")[:3])
        return version or None

    @property
    def cudnn_usable(self):
        """True when cuDNN's library, its headers and the CUDA headers were found.

        Headers of another cuDNN version than the library's file name says
        count as not found: Theano refuses to import with mismatched cuDNN
        headers and library ("Mixed dnn version").
        """
        if not ("cudnn" in self.libraries and self.cudnn_include and self.cuda_include):
            return False
        lib, hdr = self.cudnn_file_version, self.cudnn_version
        if lib and hdr:
            factor = 10000 if hdr >= 90000 else 1000
            header = (hdr // factor, hdr % factor // 100, hdr % 100)
            if header[:len(lib)] != tuple(lib[:3]):
                return False
        return True


def _symlink(target, link):
    """Create or replace the symbolic link ``link -> target`` atomically."""
    tmp = f"{link}.tmp{os.getpid()}"
    if os.path.lexists(tmp):
        os.remove(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def make_library_links(dest=None, search_dirs=None, names=LIBRARIES):
    """Make a folder of unversioned links to the CUDA libraries.

    For each library found (:func:`find_library`), ``lib<name>.so`` links to
    the versioned file, and the files beside it whose names start with
    ``lib<name>`` (``libcudnn_graph.so.9``, ``libcublasLt.so.13``,
    ``libnvrtc-builtins.so.13.0``, ...) are linked under their own names, so
    that libraries loaded through the links also find their companions.
    Links that exist are replaced; the versioned files are never touched.

    Parameters
    ----------
    dest : str, optional
        The folder to fill; ``~/.cache/srcnn_theano/cuda-links`` by default.
    search_dirs : list of str, optional
        Where to look, in order; :func:`default_search_dirs` by default.
    names : sequence of str
        The libraries, by name without ``lib`` and ``.so``.

    Returns
    -------
    LibraryLinks
    """
    dest = os.path.abspath(dest or os.path.join(_cache_dir(), "cuda-links"))
    os.makedirs(dest, exist_ok=True)
    if search_dirs is None:
        search_dirs = default_search_dirs()
    libraries, missing, real_dirs = {}, [], []
    for name in names:
        path = find_library(name, search_dirs)
        if path is None:
            missing.append(name)
            continue
        path = os.path.abspath(path)
        libraries[name] = path
        lib_dir = os.path.dirname(path)
        if lib_dir not in real_dirs:
            real_dirs.append(lib_dir)
        if name != "cuda":  # libcuda* also matches libcudart, libcudadebugger...
            for entry in sorted(os.listdir(lib_dir)):
                if entry.startswith("lib" + name) and re.search(r"\.so(\.\d+)*$", entry):
                    _symlink(os.path.join(lib_dir, entry), os.path.join(dest, entry))
        else:
            _symlink(path, os.path.join(dest, os.path.basename(path)))
        _symlink(path, os.path.join(dest, f"lib{name}.so"))
    cudnn_include = _find_include("cudnn.h", _include_candidates(libraries.get("cudnn")))
    cuda_candidates = [os.path.join(d, "..", "include") for d in real_dirs]
    for d in real_dirs:  # NVIDIA wheels: nvidia/cudnn/lib beside nvidia/cu13/include
        cuda_candidates += sorted(glob.glob(os.path.join(d, "..", "..", "*", "include")))
    cuda_candidates += _include_candidates(None)
    cuda_include = (_find_include("cuda_runtime_api.h", cuda_candidates,
                                  also=("cuda.h", os.path.join("crt", "host_defines.h")))
                    or _find_include("cuda_runtime_api.h", cuda_candidates))
    return LibraryLinks(lib_dir=dest, libraries=libraries, missing=missing, real_dirs=real_dirs,
                        cudnn_include=cudnn_include, cuda_include=cuda_include,
                        cudnn_version=cudnn_header_version(cudnn_include) if cudnn_include else None)


# --------------------------------------------------------------------------
# pygpu/libgpuarray from Debian, and the environment
# --------------------------------------------------------------------------

#: Debian bookworm packages of pygpu/libgpuarray 0.7.6 for Python 3.11.
DEBIAN_GPUARRAY_PACKAGES = ("python3-pygpu", "libgpuarray3", "libgpuarray-dev",
                            "python3-mako", "python3-markupsafe", "python3-six")


def fetch_debian_gpuarray(prefix=None, debs_dir=None, apt_update=False):
    """Unpack Debian's pygpu/libgpuarray packages into a folder (no root needed).

    ``apt-get download`` fetches the ``.deb`` files (unless ``debs_dir`` holds
    them already) and ``dpkg -x`` unpacks them under ``prefix``, giving
    ``prefix/usr/lib/python3/dist-packages/pygpu``, ``prefix/usr/lib/
    libgpuarray.so.3`` and ``prefix/usr/include/gpuarray``. Nothing is
    installed system-wide; :func:`gpu_environment` points Python, the compiler
    and the loader there.

    Parameters
    ----------
    prefix : str, optional
        ``~/.cache/srcnn_theano/gpuarray`` by default.
    debs_dir : str, optional
        A folder of ``.deb`` files to use instead of downloading.
    apt_update : bool
        Run ``apt-get update`` first (needs root).

    Returns
    -------
    str
        ``prefix``.
    """
    prefix = os.path.abspath(prefix or os.path.join(_cache_dir(), "gpuarray"))
    with tempfile.TemporaryDirectory() as tmp:
        if debs_dir is None:
            if apt_update:
                subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=300)
            subprocess.run(["apt-get", "download", *DEBIAN_GPUARRAY_PACKAGES], cwd=tmp,
                           check=True, timeout=300, stdout=subprocess.DEVNULL)
            debs_dir = tmp
        debs = sorted(glob.glob(os.path.join(debs_dir, "*.deb")))
        if not debs:
            raise FileNotFoundError(f"no .deb files in {debs_dir}")
        os.makedirs(prefix, exist_ok=True)
        for deb in debs:
            subprocess.run(["dpkg", "-x", deb, prefix], check=True, timeout=120)
    return prefix


def find_gpuarray_prefix(candidates=None):
    """A folder where :func:`fetch_debian_gpuarray` unpacked pygpu, or None."""
    for prefix in candidates or [os.environ.get("SRCNN_GPUARRAY_PREFIX"),
                                 os.path.join(_cache_dir(), "gpuarray")]:
        if prefix and os.path.isdir(os.path.join(prefix, "usr", "lib", "python3",
                                                 "dist-packages", "pygpu")):
            return os.path.abspath(prefix)
    return None


def _join_path(first, existing):
    parts = [p for p in first if p]
    parts += [p for p in (existing or "").split(os.pathsep) if p and p not in parts]
    return os.pathsep.join(parts)


def gpu_environment(links, gpuarray_prefix=None, environ=None, device="cuda", **flag_options):
    """The environment variables that make Theano use the GPU.

    Parameters
    ----------
    links : LibraryLinks
        From :func:`make_library_links`.
    gpuarray_prefix : str, optional
        Where Debian's pygpu/libgpuarray were unpacked
        (:func:`fetch_debian_gpuarray`); not needed when pygpu is installed.
    environ : dict, optional
        The current environment (``os.environ``), whose paths are kept after ours
        and whose ``THEANO_FLAGS`` come after ours (so the user's win).
    device : str
        The Theano device.
    **flag_options
        Passed to :func:`flags_for`.

    Returns
    -------
    dict
        ``LD_LIBRARY_PATH``, ``LIBRARY_PATH`` (for ``-lcudnn``/``-lgpuarray``),
        ``CPATH`` (``gpuarray/*.h``, ``cuda.h``), ``PYTHONPATH`` (pygpu),
        ``THEANO_FLAGS``, ``NVIDIA_TF32_OVERRIDE`` and ``SRCNN_GPU_ENV=1``.
        ``LD_LIBRARY_PATH`` takes effect only in a process started with it.
    """
    environ = os.environ if environ is None else environ
    lib_dirs, include_dirs, python_dirs = [links.lib_dir], [], []
    if gpuarray_prefix:
        lib_dirs.append(os.path.join(gpuarray_prefix, "usr", "lib"))
        include_dirs.append(os.path.join(gpuarray_prefix, "usr", "include"))
        python_dirs.append(os.path.join(gpuarray_prefix, "usr", "lib", "python3", "dist-packages"))
    include_dirs += [d for d in (links.cuda_include, links.cudnn_include) if d]
    flags = flags_for(device, links, **flag_options)
    user_flags = environ.get("THEANO_FLAGS", "")
    env = {
        "LD_LIBRARY_PATH": _join_path(lib_dirs + links.real_dirs, environ.get("LD_LIBRARY_PATH")),
        "LIBRARY_PATH": _join_path(lib_dirs, environ.get("LIBRARY_PATH")),
        "CPATH": _join_path(include_dirs, environ.get("CPATH")),
        "THEANO_FLAGS": flags + ("," + user_flags if user_flags else ""),
        "NVIDIA_TF32_OVERRIDE": environ.get("NVIDIA_TF32_OVERRIDE", "0"),
        "SRCNN_GPU_ENV": "1",
    }
    if python_dirs:
        env["PYTHONPATH"] = _join_path(python_dirs, environ.get("PYTHONPATH"))
    return env


def shell_exports(env):
    """``export NAME='value'`` lines for a shell's ``eval``."""
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))


def reexec_with_gpu_env(argv=None, links_dir=None, search_roots=None, gpuarray_prefix=None):
    """Restart this Python program with :func:`gpu_environment` in force.

    Call it first thing in a program that will use the GPU, before anything
    imports Theano. Does nothing when ``SRCNN_GPU_ENV=1`` is set already (the
    restarted process, or a shell that evaluated ``python -m srcnn_theano.gpu
    env``); otherwise it never returns.

    Parameters
    ----------
    argv : list of str, optional
        The program's arguments; ``sys.argv`` by default.
    links_dir, search_roots, gpuarray_prefix
        As for :func:`make_library_links`, :func:`default_search_dirs` and
        :func:`gpu_environment`.
    """
    if os.environ.get("SRCNN_GPU_ENV") == "1":
        return
    links = make_library_links(links_dir, default_search_dirs(search_roots))
    env = dict(os.environ)
    env.update(gpu_environment(links, gpuarray_prefix or find_gpuarray_prefix()))
    argv = list(sys.argv if argv is None else argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable] + argv, env)


def main(argv=None):
    """``python -m srcnn_theano.gpu env|fetch-gpuarray|links``."""
    parser = argparse.ArgumentParser(prog="python -m srcnn_theano.gpu",
                                     description="GPU set-up for srcnn-theano (docs/gpu.md).")
    sub = parser.add_subparsers(dest="command", required=True)
    p_env = sub.add_parser("env", help="print shell exports for the GPU (eval them)")
    p_links = sub.add_parser("links", help="make the folder of unversioned library links")
    for p in (p_env, p_links):
        p.add_argument("--links-dir", help="folder of links (default ~/.cache/srcnn_theano/cuda-links)")
        p.add_argument("--search", action="append", default=[],
                       help="CUDA/cuDNN install, library folder or site-packages to search first")
    p_env.add_argument("--gpuarray-prefix", help="where Debian's pygpu was unpacked")
    p_env.add_argument("--device", default="cuda")
    p_env.add_argument("--conv-algo", default="guess_on_shape_change")
    p_env.add_argument("--preallocate", type=float)
    p_fetch = sub.add_parser("fetch-gpuarray", help="unpack Debian's pygpu/libgpuarray")
    p_fetch.add_argument("prefix", nargs="?")
    p_fetch.add_argument("--debs", help="folder of .deb files to use instead of apt-get download")
    p_fetch.add_argument("--apt-update", action="store_true")
    args = parser.parse_args(argv)

    if args.command == "fetch-gpuarray":
        print(fetch_debian_gpuarray(args.prefix, args.debs, args.apt_update))
        return 0
    links = make_library_links(args.links_dir, default_search_dirs(args.search))
    for name in links.missing:
        print(f"# not found: lib{name}.so", file=sys.stderr)
    if args.command == "links":
        for name, path in links.libraries.items():
            print(f"{os.path.join(links.lib_dir, 'lib' + name + '.so')} -> {path}")
        return 0 if not links.missing else 1
    if not links.cudnn_usable:
        print("# cuDNN library or headers not found: convolutions will use GpuCorrMM",
              file=sys.stderr)
    env = gpu_environment(links, args.gpuarray_prefix or find_gpuarray_prefix(),
                          device=args.device, conv_algo=args.conv_algo,
                          preallocate=args.preallocate)
    sys.stdout.write(shell_exports(env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
