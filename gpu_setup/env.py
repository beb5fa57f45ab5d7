"""The environment a GPU process of srcnn-theano needs, built from what the machine has.

Tooling of :mod:`gpu_setup` (the library part, the cuDNN >= 8 patch and the
flags, is :mod:`srcnn_theano.gpu`; docs/gpu.md says how the two fit together).

Library names (:func:`make_library_links`, :func:`gpu_environment`)
    libgpuarray ``dlopen``\\ s ``libcuda.so``, ``libnvrtc.so`` and
    ``libcublas.so``, and Theano links cuDNN with ``-lcudnn``: unversioned
    names which NVIDIA's pip wheels (``nvidia-cudnn-cu12``, ...) and a bare
    driver install do not provide. :func:`make_library_links` makes a folder
    of unversioned symbolic links to the versioned files (found by
    :func:`default_search_dirs` and :func:`find_library`) and
    :func:`gpu_environment` the variables that use it. The dynamic loader
    reads ``LD_LIBRARY_PATH`` once, when a process starts, so it must be set
    before the Python process that imports Theano starts::

        eval "$(python -m gpu_setup.env env)"   # in a shell, then run as usual

    or, from Python, :func:`reexec_with_gpu_env` restarts the program with it.

pygpu/libgpuarray (:func:`fetch_debian_gpuarray`, :func:`find_gpuarray_prefix`)
    Not on PyPI: Debian bookworm's packages, fetched with ``apt-get download``
    and unpacked with ``dpkg -x`` (no root needed).

Command line (from the repository's root, or with it on ``PYTHONPATH``)::

    python -m gpu_setup.env env [--search DIR] [--links-dir DIR] [--gpuarray-prefix DIR]
                                [--device cuda1] [--conv-algo ALGO] [--preallocate F]
    python -m gpu_setup.env links [--search DIR] [--links-dir DIR]
    python -m gpu_setup.env fetch-gpuarray [PREFIX] [--debs DIR] [--apt-update]

Importing this module imports neither Theano nor numpy.
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

from srcnn_theano import gpu  # imports neither Theano nor numpy
from srcnn_theano.files import cache_dir

__all__ = [
    "LIBRARIES", "LibraryLinks", "default_search_dirs", "find_library", "make_library_links",
    "cudnn_header_version", "fetch_debian_gpuarray", "find_gpuarray_prefix", "gpu_environment",
    "shell_exports", "reexec_with_gpu_env", "main",
]

#: The libraries (``lib<name>.so``) that libgpuarray and Theano load by their
#: unversioned names.
LIBRARIES = ("cuda", "nvrtc", "cublas", "cudnn")


# --------------------------------------------------------------------------
# CUDA libraries under their unversioned names
# --------------------------------------------------------------------------

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
    dest = os.path.abspath(dest or cache_dir("cuda-links"))
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
    prefix = os.path.abspath(prefix or cache_dir("gpuarray"))
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
                                 cache_dir("gpuarray")]:
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
        Passed to :func:`srcnn_theano.gpu.flags_for`.

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
    flags = gpu.flags_for(device, links, **flag_options)
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
    restarted process, or a shell that evaluated ``python -m gpu_setup.env
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
    """``python -m gpu_setup.env env|fetch-gpuarray|links``."""
    parser = argparse.ArgumentParser(prog="python -m gpu_setup.env",
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
