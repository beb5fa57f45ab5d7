"""The GPU environment tooling (gpu_setup/env.py), tested without a GPU.

* Library discovery (search folders, the soname chosen, cuDNN header and file
  versions) and the folder of unversioned links, with fake versioned files,
  and with a real shared library that the linker and loader find through it.
* The environment (``gpu_environment``, ``shell_exports``), the restart with it
  (``reexec_with_gpu_env``), Debian's pygpu unpacked from ``.deb`` files, and
  the command line (``python -m gpu_setup.env env|links|fetch-gpuarray``).
"""
import os
import re
import shutil
import subprocess
import sys

import pytest

from gpu_setup import env as gpu_env
from srcnn_theano import gpu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The command line, run from the repository's root (cwd=ROOT).
GPU_ENV = ["-m", "gpu_setup.env"]
CXX = shutil.which("g++") or shutil.which("c++")


def _links(tmp_path, cudnn_version=91300, lib_name="libcudnn.so.9"):
    inc = tmp_path / "cudnn" / "include"
    inc.mkdir(parents=True)
    major, rest = divmod(cudnn_version, 10000)
    (inc / "cudnn_version.h").write_text(
        f"#define CUDNN_MAJOR {major}\n#define CUDNN_MINOR {rest // 100}\n"
        f"#define CUDNN_PATCHLEVEL {rest % 100}\n")
    (inc / "cudnn.h").write_text('#include "cudnn_version.h"\n')
    lib = tmp_path / "cudnn" / "lib"
    lib.mkdir()
    (lib / lib_name).write_bytes(b"")
    return gpu_env.LibraryLinks(lib_dir=str(tmp_path / "links"),
                                libraries={"cudnn": str(lib / lib_name)}, missing=[],
                                real_dirs=[str(lib)], cudnn_include=str(inc),
                                cuda_include="/usr/local/cuda/include",
                                cudnn_version=gpu_env.cudnn_header_version(str(inc)))


def test_importing_the_tooling_imports_neither_theano_nor_numpy():
    code = ("import sys, gpu_setup.env; "
            "print('theano' in sys.modules, 'numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_header_and_library_of_one_cudnn_make_it_usable(tmp_path):
    links = _links(tmp_path)
    assert links.cudnn_version == 91300 and links.cudnn_usable
    assert gpu.flags_for("cuda", links).startswith(
        f"device=cuda,floatX=float32,dnn__enabled=auto,dnn__include_path={links.cudnn_include},")


def test_mismatched_cudnn_headers_switch_cudnn_off(tmp_path):
    # Theano refuses to import with headers and library of different cuDNN versions.
    links = _links(tmp_path, cudnn_version=92700, lib_name="libcudnn.so.9.13.0")
    assert not links.cudnn_usable
    assert "dnn__enabled=False" in gpu.flags_for("cuda", links)


def test_cudnn_wheel_version_comes_from_its_dist_info(tmp_path):
    # NVIDIA's wheels ship libcudnn.so.9 only; the full version is in the .dist-info name.
    sp = tmp_path / "site-packages"
    _touch(sp / "nvidia" / "cudnn" / "lib" / "libcudnn.so.9")
    (sp / "nvidia_cudnn_cu13-9.13.0.50.dist-info").mkdir()
    inc = sp / "nvidia" / "cudnn" / "include"
    inc.mkdir(parents=True)
    links = gpu_env.make_library_links(str(tmp_path / "links"), [str(sp / "nvidia" / "cudnn" / "lib")],
                                   names=("cudnn",))
    links.cuda_include, links.cudnn_include = str(tmp_path), str(inc)
    assert links.cudnn_file_version == (9, 13, 0)
    for header, usable in ((91300, True), (92700, False)):
        (inc / "cudnn.h").write_text(f"#define CUDNN_MAJOR 9\n#define CUDNN_MINOR {header // 100 % 100}"
                                     "\n#define CUDNN_PATCHLEVEL 0\n")
        links.cudnn_version = gpu_env.cudnn_header_version(str(inc))
        assert links.cudnn_usable is usable


def _touch(path, target=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    if target is None:
        path.write_bytes(b"\x7fELF fake")
    else:
        path.symlink_to(target)


def _fake_cuda_install(tmp_path):
    """A driver folder and a site-packages with NVIDIA's wheels' layout."""
    driver = tmp_path / "driver"
    _touch(driver / "libcuda.so.580.159.04")
    _touch(driver / "libcuda.so.1", "libcuda.so.580.159.04")
    _touch(driver / "libcudart.so.13")  # must not be taken for libcuda
    _touch(tmp_path / "cuda" / "lib64" / "stubs" / "libcuda.so")  # link-time stub: never
    sp = tmp_path / "site-packages"
    for name in ("libcudnn.so.9", "libcudnn_graph.so.9", "libcudnn_cnn.so.9"):
        _touch(sp / "nvidia" / "cudnn" / "lib" / name)
    (sp / "nvidia" / "cudnn" / "include").mkdir(parents=True)
    (sp / "nvidia" / "cudnn" / "include" / "cudnn.h").write_text(
        "#define CUDNN_MAJOR 9\n#define CUDNN_MINOR 13\n#define CUDNN_PATCHLEVEL 0\n")
    for name in ("libcublas.so.13", "libcublasLt.so.13", "libnvrtc.so.13",
                 "libnvrtc-builtins.so.13.0", "libcublas.so.12"):
        _touch(sp / "nvidia" / "cu13" / "lib" / name)
    for name in ("cuda_runtime_api.h", "cuda.h", "crt/host_defines.h"):
        _touch(sp / "nvidia" / "cu13" / "include" / name)
    return driver, sp


def test_find_library_prefers_highest_major_by_soname(tmp_path):
    for name in ("libcublas.so.12", "libcublas.so.13", "libcublas.so.13.1.0.3", "libcublasLt.so.13"):
        _touch(tmp_path / name)
    assert gpu_env.find_library("cublas", [str(tmp_path)]) == str(tmp_path / "libcublas.so.13")
    assert gpu_env.find_library("cudnn", [str(tmp_path)]) is None


def test_default_search_dirs_roots_first_without_stubs(tmp_path):
    driver, sp = _fake_cuda_install(tmp_path)
    dirs = gpu_env.default_search_dirs([str(driver), str(sp), str(tmp_path / "cuda")])
    assert dirs[:3] == [str(driver), str(sp / "nvidia" / "cu13" / "lib"),
                        str(sp / "nvidia" / "cudnn" / "lib")]
    assert str(tmp_path / "cuda" / "lib64") in dirs
    assert not any("stubs" in d for d in dirs)


def test_make_library_links(tmp_path):
    driver, sp = _fake_cuda_install(tmp_path)
    search = gpu_env.default_search_dirs([str(tmp_path / "cuda"), str(driver), str(sp)])
    dest = tmp_path / "links"
    links = gpu_env.make_library_links(str(dest), search)
    assert links.missing == []
    expected = {"cuda": driver / "libcuda.so.1", "nvrtc": sp / "nvidia/cu13/lib/libnvrtc.so.13",
                "cublas": sp / "nvidia/cu13/lib/libcublas.so.13",
                "cudnn": sp / "nvidia/cudnn/lib/libcudnn.so.9"}
    assert links.libraries == {k: str(v) for k, v in expected.items()}
    for name, target in expected.items():
        assert os.readlink(dest / f"lib{name}.so") == str(target)
    # Companions that libraries loaded through the links look for by soname.
    for name in ("libcudnn.so.9", "libcudnn_graph.so.9", "libcudnn_cnn.so.9", "libcublasLt.so.13",
                 "libnvrtc-builtins.so.13.0", "libcuda.so.1"):
        assert (dest / name).resolve().exists()
    assert not (dest / "libcudart.so.13").exists()
    assert links.cudnn_include == str(sp / "nvidia" / "cudnn" / "include")
    assert links.cuda_include == str(sp / "nvidia" / "cu13" / "include")
    assert links.cudnn_version == 91300 and links.cudnn_usable
    assert gpu_env.make_library_links(str(dest), search).libraries == links.libraries  # re-run

    env = gpu_env.gpu_environment(links, gpuarray_prefix="/opt/ga",
                              environ={"LD_LIBRARY_PATH": "/old", "THEANO_FLAGS": "optimizer=None"})
    assert env["LD_LIBRARY_PATH"].split(os.pathsep) == [
        str(dest), "/opt/ga/usr/lib", str(driver), str(sp / "nvidia/cu13/lib"),
        str(sp / "nvidia/cudnn/lib"), "/old"]
    assert env["LIBRARY_PATH"] == os.pathsep.join([str(dest), "/opt/ga/usr/lib"])
    assert env["CPATH"].split(os.pathsep)[0] == "/opt/ga/usr/include"
    assert env["PYTHONPATH"] == "/opt/ga/usr/lib/python3/dist-packages"
    assert env["THEANO_FLAGS"] == gpu.flags_for("cuda", links) + ",optimizer=None"
    assert (env["NVIDIA_TF32_OVERRIDE"], env["SRCNN_GPU_ENV"]) == ("0", "1")
    shell = subprocess.run(["bash", "-c", gpu_env.shell_exports(env) + 'printf %s "$THEANO_FLAGS"'],
                           capture_output=True, text=True, check=True)
    assert shell.stdout == env["THEANO_FLAGS"]


@pytest.mark.skipif(CXX is None or shutil.which("gcc") is None, reason="needs gcc")
def test_links_let_the_linker_and_loader_find_versioned_only_libraries(tmp_path):
    wheel_lib = tmp_path / "nvidia" / "cudnn" / "lib"
    wheel_lib.mkdir(parents=True)
    (tmp_path / "fake.c").write_text("int cudnnGetVersion(void) { return 91300; }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libcudnn.so.9", "-o",
                    str(wheel_lib / "libcudnn.so.9"), str(tmp_path / "fake.c")], check=True)
    (tmp_path / "main.c").write_text(
        '#include <stdio.h>\nint cudnnGetVersion(void);\n'
        'int main(void) { printf("%d", cudnnGetVersion()); return 0; }\n')
    build = ["gcc", str(tmp_path / "main.c"), "-o", str(tmp_path / "main"), "-lcudnn"]
    # The wheel's folder alone: no libcudnn.so, -lcudnn fails.
    assert subprocess.run(build + ["-L", str(wheel_lib)], capture_output=True).returncode != 0
    links = gpu_env.make_library_links(str(tmp_path / "links"), [str(wheel_lib)], names=("cudnn",))
    subprocess.run(build + ["-L", links.lib_dir], check=True)
    env = dict(os.environ, LD_LIBRARY_PATH=links.lib_dir)
    out = subprocess.run([str(tmp_path / "main")], env=env, capture_output=True, text=True)
    assert out.stdout == "91300"


def test_command_line_prints_exports(tmp_path):
    driver, sp = _fake_cuda_install(tmp_path)
    env = dict(os.environ, SRCNN_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("PYTHONPATH", None)  # from the repository's root, gpu_setup and srcnn_theano import
    env.pop("THEANO_FLAGS", None)
    out = subprocess.run([sys.executable, *GPU_ENV, "env", "--search", str(driver),
                          "--search", str(sp), "--links-dir", str(tmp_path / "links")],
                         env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    exports = dict(re.findall(r"^export (\w+)=(.*)$", out.stdout, re.M))
    assert exports["SRCNN_GPU_ENV"] == "1"
    assert exports["THEANO_FLAGS"].startswith("device=cuda,floatX=float32,dnn__enabled=auto,")
    assert os.readlink(tmp_path / "links" / "libcudnn.so").endswith("nvidia/cudnn/lib/libcudnn.so.9")
    assert out.stdout.count("export ") == len(exports)
    assert "theano" not in out.stderr.lower()


def test_reexec_restarts_the_program_with_the_environment(tmp_path):
    driver, sp = _fake_cuda_install(tmp_path)
    script = tmp_path / "prog.py"
    script.write_text(
        "import os, sys\n"
        "from gpu_setup import env as gpu_env\n"
        "print('start', os.environ.get('SRCNN_GPU_ENV'), flush=True)\n"
        f"gpu_env.reexec_with_gpu_env(links_dir={str(tmp_path / 'links')!r}, "
        f"search_roots=[{str(driver)!r}, {str(sp)!r}])\n"
        "print('again', os.environ['SRCNN_GPU_ENV'], os.environ['LD_LIBRARY_PATH'].split(':')[0],\n"
        "      os.environ['THEANO_FLAGS'].split(',')[0], sys.argv[1:])\n")
    env = {k: v for k, v in os.environ.items() if k not in ("SRCNN_GPU_ENV", "THEANO_FLAGS")}
    env["SRCNN_CACHE_DIR"] = str(tmp_path / "cache")
    env["PYTHONPATH"] = ROOT  # gpu_setup, a folder of the checkout
    out = subprocess.run([sys.executable, str(script), "a", "b c"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "start None",  # the first process, replaced by the second (os.execve)
        "start 1",
        f"again 1 {tmp_path / 'links'} device=cuda ['a', 'b c']"]
    assert os.readlink(tmp_path / "links" / "libcublas.so").endswith("nvidia/cu13/lib/libcublas.so.13")


def _deb(tmp_path, name, files):
    """A .deb (dpkg-deb --build) with ``files``: {path under /: text}."""
    root = tmp_path / f"{name}-pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\n"
        "Description: test\n")
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    debs = tmp_path / "debs"
    debs.mkdir(exist_ok=True)
    subprocess.run(["dpkg-deb", "--build", str(root), str(debs / f"{name}_1.0_all.deb")],
                   check=True, capture_output=True, timeout=60)
    return debs


@pytest.mark.skipif(shutil.which("dpkg") is None or shutil.which("dpkg-deb") is None,
                    reason="needs dpkg and dpkg-deb")
def test_debian_packages_are_unpacked_where_find_gpuarray_prefix_looks(tmp_path, monkeypatch):
    pygpu = "usr/lib/python3/dist-packages/pygpu/__init__.py"
    _deb(tmp_path, "python3-pygpu", {pygpu: "__version__ = '0.7.6'\n"})
    debs = _deb(tmp_path, "libgpuarray3", {"usr/lib/libgpuarray.so.3": ""})
    prefix = tmp_path / "prefix"
    assert gpu_env.find_gpuarray_prefix([str(prefix)]) is None
    assert gpu_env.fetch_debian_gpuarray(str(prefix), debs_dir=str(debs)) == str(prefix)
    assert (prefix / pygpu).read_text() == "__version__ = '0.7.6'\n"
    assert (prefix / "usr/lib/libgpuarray.so.3").exists()
    assert gpu_env.find_gpuarray_prefix([str(tmp_path / "nothing"), str(prefix)]) == str(prefix)
    monkeypatch.setenv("SRCNN_GPUARRAY_PREFIX", str(prefix))
    monkeypatch.setenv("SRCNN_CACHE_DIR", str(tmp_path / "cache"))
    assert gpu_env.find_gpuarray_prefix() == str(prefix)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .deb files"):
        gpu_env.fetch_debian_gpuarray(str(tmp_path / "p2"), debs_dir=str(tmp_path / "empty"))

    # The command line: fetch-gpuarray, then env exports pygpu's folder.
    env = dict(os.environ, SRCNN_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("SRCNN_GPUARRAY_PREFIX")
    out = subprocess.run([sys.executable, *GPU_ENV, "fetch-gpuarray", str(tmp_path / "p3"), "--debs",
                          str(debs)], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == str(tmp_path / "p3"), out.stderr
    out = subprocess.run([sys.executable, *GPU_ENV, "env", "--links-dir", str(tmp_path / "links"),
                          "--gpuarray-prefix", str(tmp_path / "p3")], env=env, capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert (f"export PYTHONPATH={tmp_path / 'p3' / 'usr/lib/python3/dist-packages'}"
            in out.stdout)


def test_links_command_lists_links_and_fails_when_libraries_are_missing(tmp_path):
    driver, sp = _fake_cuda_install(tmp_path)
    env = dict(os.environ, SRCNN_CACHE_DIR=str(tmp_path / "cache"))
    args = [sys.executable, *GPU_ENV, "links", "--links-dir", str(tmp_path / "links"),
            "--search", str(driver), "--search", str(sp)]
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert f"{tmp_path / 'links' / 'libcudnn.so'} -> {sp / 'nvidia/cudnn/lib/libcudnn.so.9'}" in (
        out.stdout.splitlines())
    # Without the driver's folder (and none on this machine), libcuda is missing.
    if gpu_env.find_library("cuda", gpu_env.default_search_dirs()) is None:
        out = subprocess.run(args[:-4] + ["--search", str(sp)], env=env, capture_output=True,
                             text=True, timeout=120, cwd=ROOT)
        assert out.returncode == 1 and "# not found: libcuda.so" in out.stderr
