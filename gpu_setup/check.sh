#!/usr/bin/env bash
# SRCNN on an NVIDIA GPU (Theano-PyMC's gpuarray backend, cuDNN 9) against the CPU.
#
#   bash gpu_setup/check.sh prepare   # here: a machine with PyPI and Debian's packages
#   bash gpu_setup/check.sh run       # there: the GPU machine, with .gpu_bundle/ carried
#
# Theano-PyMC 1.1.2 needs Python 3.11 and numpy 1.23.5; a current GPU machine
# has Python 3.12 and numpy 2, and may reach no package registry at all. So
# `prepare` packs, into .gpu_bundle/ (about 45 MB, listed in .git/info/exclude):
#   python.tar.xz   this machine's Python 3.11 (the one of .venv), without site-packages
#   site.tar.xz     $PACKAGES below (pip --target, tests removed)
#   debs/           Debian bookworm's python3-pygpu, libgpuarray3, libgpuarray-dev 0.7.6
#                   (+ python3-mako, python3-markupsafe, python3-six)
#   MANIFEST.json
# and `run` sets them up on the GPU machine, trying in order (each step says
# which way worked, in the log and in the JSON):
#   Python 3.11:   $SRCNN_PY311 | the bundle | python3.11 on PATH | `pip install uv` +
#                  `uv python install 3.11` | apt-get install python3.11
#   packages:      the bundle | pip install --target from PyPI
#   pygpu:         the bundle's .debs | apt-get download | `import pygpu` already works
#   CUDA libraries: found on the machine (driver, /usr/local/cuda, NVIDIA's pip wheels of
#                  any Python, e.g. PyTorch's) | pip download of nvidia-*-cu12 wheels
# then links them under unversioned names (python -m gpu_setup.env env), starts
# the GPU once with pygpu, and runs gpu_setup/check.py: predict and a short
# training on cuda (cuDNN), cuda (GpuCorrMM) and cpu, compared and timed.
#
# Output ($OUT, else ./gpu_check_out): gpu_check.json (result), gpu_check.log,
# children.log. Exit status 0 only if everything ran and matched the CPU.
# Overall limit: SRCNN_GPU_CHECK_BUDGET seconds (default 540), each step bounded.
# SRCNN_GPU_CHECK_CONFIGS picks configurations (default: all five of gpu_check.py).
# Testing the set-up on a CPU machine: SRCNN_GPU_CHECK_DRY_RUN=1 (runs the cpu part only);
# SRCNN_GPU_CHECK_RELOCATE=1 unpacks the bundled Python elsewhere (PYTHONHOME) even
# where its original prefix could be used.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# What srcnn_theano.backend, gpu_check.py and the project's model need (requirements.txt's
# pins; scipy also brings the OpenBLAS the backend links Theano's CPU code with).
PACKAGES="numpy==1.23.5 scipy==1.11.4 theano-pymc==1.1.2 lasagne==0.1 filelock==4.3.1 setuptools==65.5.0"
BUNDLE="${SRCNN_GPU_BUNDLE:-$ROOT/.gpu_bundle}"
MODE="${1:-run}"

# ------------------------------------------------------------------ prepare
prepare() {
  set -e
  local py="${SRCNN_PY311:-$ROOT/.venv/bin/python}"
  "$py" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
    || { echo "prepare: $py is not Python 3.11 (set SRCNN_PY311)"; exit 2; }
  local prefix; prefix="$("$py" -c 'import sys; print(sys.base_prefix)')"
  if [ "$prefix" = /usr ]; then
    echo "prepare: $py is the system's Python (/usr), which cannot be packed alone;"
    echo "         use a self-contained Python 3.11 (pyenv, python-build-standalone): SRCNN_PY311=..."
    exit 2
  fi
  rm -rf "$BUNDLE"; mkdir -p "$BUNDLE/debs"
  local tmp; tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' RETURN

  echo "== python: $prefix"
  tar -C / -cf - \
    --exclude="${prefix#/}/lib/python3.11/site-packages/*" \
    --exclude="${prefix#/}/lib/python3.11/test" --exclude="${prefix#/}/lib/python3.11/idlelib" \
    --exclude="${prefix#/}/lib/python3.11/tkinter" --exclude="${prefix#/}/lib/python3.11/turtledemo" \
    --exclude="${prefix#/}/lib/python3.11/lib2to3/tests" --exclude="*/__pycache__" \
    --exclude="*.a" --exclude="${prefix#/}/share" \
    "${prefix#/}" | xz -T0 -6 > "$BUNDLE/python.tar.xz"

  echo "== packages (pip --target, Python 3.11)"
  "$py" -m pip install -q --no-deps --no-compile --target "$tmp/site" $PACKAGES
  find "$tmp/site" -depth -type d -name tests -path "*/site/*/*" -exec rm -rf {} +
  rm -rf "$tmp/site/bin"
  find "$tmp/site" -name __pycache__ -prune -exec rm -rf {} +
  tar -C "$tmp" -cf - site | xz -T0 -6 > "$BUNDLE/site.tar.xz"

  echo "== pygpu/libgpuarray (.deb)"
  (cd "$BUNDLE/debs" && apt-get download python3-pygpu libgpuarray3 libgpuarray-dev \
     python3-mako python3-markupsafe python3-six 2>&1 | grep -v "unsandboxed" || true)
  ls "$BUNDLE/debs"/python3-pygpu_*.deb >/dev/null || { echo "prepare: apt-get download failed (run apt-get update?)"; exit 2; }

  "$py" - "$BUNDLE" "$prefix" <<'EOF'
import json, os, sys, time
bundle, prefix = sys.argv[1:3]
files = {}
for dirpath, _, names in os.walk(bundle):
    for n in names:
        p = os.path.join(dirpath, n)
        files[os.path.relpath(p, bundle)] = os.path.getsize(p)
json.dump({"created": time.strftime("%Y-%m-%d %H:%M:%S"), "python_prefix": prefix,
           "python": sys.version.split()[0], "files": files,
           "total_mib": round(sum(files.values()) / 2**20, 1)},
          open(os.path.join(bundle, "MANIFEST.json"), "w"), indent=1)
print("bundle: %.1f MiB in %s" % (sum(files.values()) / 2**20, bundle))
EOF
  local exclude="$ROOT/.git/info/exclude"
  if [ -d "$ROOT/.git" ] && ! grep -qx "/.gpu_bundle/" "$exclude" 2>/dev/null; then
    mkdir -p "$(dirname "$exclude")"; echo "/.gpu_bundle/" >> "$exclude"
  fi
  echo "prepare: done. On the GPU machine: bash gpu_setup/check.sh run  (carry .gpu_bundle)"
}

# ------------------------------------------------------------------ run
OUT="${OUT:-$ROOT/gpu_check_out}"
WORK="${SRCNN_GPU_CHECK_WORK:-/tmp/srcnn_gpu_check}"
BUDGET="${SRCNN_GPU_CHECK_BUDGET:-540}"
START=$(date +%s)
DEADLINE=$((START + BUDGET))
STAGES="$WORK/stages.jsonl"
PY=""

left() { echo $((DEADLINE - $(date +%s))); }
log() { echo "[gpu_check $(($(date +%s) - START))s] $*"; }

# record NAME ok|failed|skipped "how" ["detail"]
record() {
  python3 - "$@" >> "$STAGES" 2>/dev/null <<'EOF' || echo "{\"stage\": \"$1\", \"status\": \"$2\"}" >> "$STAGES"
import json, sys
args = sys.argv[1:] + ["", "", ""]
print(json.dumps({"stage": args[0], "status": args[1], "how": args[2], "detail": args[3][-2000:]}))
EOF
  log "stage $1: $2 ${3:-} ${4:+($4)}"
}

# bounded CMD...: run with the time left (at most $1 seconds)
bounded() {
  local limit="$1"; shift
  local l; l=$(left)
  [ "$l" -lt "$limit" ] && limit="$l"
  [ "$limit" -le 5 ] && { log "no time left for: $*"; return 124; }
  timeout -k 5 "$limit" "$@"
}

finish() {
  local status=$1
  sleep 0.5  # let tee catch up
  # The final JSON: gpu_check.py's result (if any) plus the set-up stages.
  python3 - "$OUT" "$STAGES" "$status" "$START" <<'EOF' || true
import json, os, sys, time
out, stages, status, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
result_path = os.path.join(out, "gpu_check_result.json")
report = json.load(open(result_path)) if os.path.exists(result_path) else {"ok": False}
report["setup"] = [json.loads(l) for l in open(stages)] if os.path.exists(stages) else []
report["exit_status"] = status
report["total_s"] = round(time.time() - start, 1)
if status != 0 and report.get("ok"):
    report["ok"] = False
json.dump(report, open(os.path.join(out, "gpu_check.json"), "w"), indent=1)
if os.path.exists(result_path):
    os.remove(result_path)
print("[gpu_check] result:", "OK" if report.get("ok") else "FAILED", "->",
      os.path.join(out, "gpu_check.json"))
for line in report.get("summary", []):
    print("[gpu_check]  ", line)
EOF
  for f in "$WORK"/work/*.log; do
    [ -f "$f" ] && { echo "===== $(basename "$f")"; tail -c 20000 "$f"; }
  done > "$OUT/children.log" 2>/dev/null
  exit "$status"
}

setup_python() {
  local v='import sys, sysconfig, os; assert sys.version_info[:2] == (3, 11); assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")), "no Python.h"; print(sys.executable, sys.version.split()[0])'
  if [ -n "${SRCNN_PY311:-}" ] && "$SRCNN_PY311" -c "$v" >/dev/null 2>&1; then
    PY="$SRCNN_PY311"; record python ok "SRCNN_PY311" "$PY"; return 0
  fi
  if [ -f "$BUNDLE/python.tar.xz" ]; then
    local prefix
    prefix="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["python_prefix"])' "$BUNDLE/MANIFEST.json" 2>/dev/null)"
    # The interpreter finds libpython and its library through absolute paths: the
    # same prefix as on the machine that packed it, else a relocated copy + PYTHONHOME.
    if [ -n "$prefix" ] && [ -z "${SRCNN_GPU_CHECK_RELOCATE:-}" ] && { [ -x "$prefix/bin/python3.11" ] || { mkdir -p "$prefix" 2>/dev/null && bounded 120 tar -C / -xJf "$BUNDLE/python.tar.xz"; }; } \
       && "$prefix/bin/python3.11" -c "$v" >/dev/null 2>&1; then
      PY="$prefix/bin/python3.11"; record python ok "bundle" "$PY"; return 0
    fi
    mkdir -p "$WORK/python"
    if bounded 120 tar -C "$WORK/python" -xJf "$BUNDLE/python.tar.xz"; then
      local home="$WORK/python${prefix}"
      export PYTHONHOME="$home" LD_LIBRARY_PATH="$home/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      if "$home/bin/python3.11" -c "$v" >/dev/null 2>&1; then
        PY="$home/bin/python3.11"; record python ok "bundle (relocated, PYTHONHOME)" "$PY"; return 0
      fi
      unset PYTHONHOME
    fi
    record python-bundle failed "bundle" "could not run the bundled Python"
  fi
  local c
  for c in python3.11 /usr/bin/python3.11 /usr/local/bin/python3.11; do
    if command -v "$c" >/dev/null && "$c" -c "$v" >/dev/null 2>&1; then
      PY="$(command -v "$c")"; record python ok "found on the machine" "$PY"; return 0
    fi
  done
  # Only with a package registry: uv from PyPI fetches python-build-standalone.
  if bounded 90 python3 -m pip install -q --target "$WORK/uv" uv >/dev/null 2>&1 \
     && bounded 120 env UV_PYTHON_INSTALL_DIR="$WORK/uv-python" python3 -c \
        'import sys; sys.path.insert(0, sys.argv[1]); from uv import find_uv_bin; import subprocess; raise SystemExit(subprocess.call([find_uv_bin(), "python", "install", "3.11"]))' "$WORK/uv" >/dev/null 2>&1; then
    c="$(ls "$WORK"/uv-python/cpython-3.11*/bin/python3.11 2>/dev/null | head -1)"
    if [ -n "$c" ] && "$c" -c "$v" >/dev/null 2>&1; then
      PY="$c"; record python ok "uv python install 3.11" "$PY"; return 0
    fi
  fi
  if command -v apt-get >/dev/null && bounded 150 apt-get install -y -qq python3.11 python3.11-dev >/dev/null 2>&1 \
     && /usr/bin/python3.11 -c "$v" >/dev/null 2>&1; then
    PY=/usr/bin/python3.11; record python ok "apt-get install python3.11" "$PY"; return 0
  fi
  record python failed "" "no Python 3.11: carry .gpu_bundle (bash gpu_setup/check.sh prepare), or set SRCNN_PY311"
  return 1
}

setup_packages() {
  local v='import numpy; from srcnn_theano.backend import theano, lasagne; assert numpy.__version__ == "1.23.5", numpy.__version__; print("numpy", numpy.__version__, "theano", theano.__version__, "blas__ldflags", repr(theano.config.blas__ldflags))'
  export PYTHONPATH="$WORK/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  local how=""
  if [ -f "$BUNDLE/site.tar.xz" ] && bounded 120 tar -C "$WORK" -xJf "$BUNDLE/site.tar.xz"; then
    how="bundle"
  elif bounded 240 "$PY" -m pip install -q --no-deps --target "$WORK/site" $PACKAGES >/dev/null 2>&1; then
    how="pip install from PyPI"
  fi
  if [ -n "$how" ] && THEANO_FLAGS="device=cpu,base_compiledir=$WORK/theano-setup" \
       bounded 180 "$PY" -c "$v" >"$WORK/packages.txt" 2>"$WORK/packages.err"; then
    record packages ok "$how" "$(cat "$WORK/packages.txt")"; return 0
  fi
  record packages failed "$how" "$(tail -c 1500 "$WORK/packages.err" 2>/dev/null)"
  return 1
}

setup_pygpu() {
  local v='import pygpu, pygpu.gpuarray; print(pygpu.__version__, pygpu.gpuarray.api_version())'
  local prefix="$WORK/gpuarray" debs=""
  if [ -n "$(ls "$BUNDLE"/debs/*.deb 2>/dev/null)" ]; then
    debs="bundle"
  elif command -v apt-get >/dev/null && mkdir -p "$WORK/debs" && (cd "$WORK/debs" && bounded 120 apt-get download \
         python3-pygpu libgpuarray3 libgpuarray-dev python3-mako python3-markupsafe python3-six >/dev/null 2>&1); then
    debs="apt-get download"
  fi
  if [ -n "$debs" ]; then
    local dir="$BUNDLE/debs"; [ "$debs" = "bundle" ] || dir="$WORK/debs"
    local d; for d in "$dir"/*.deb; do dpkg -x "$d" "$prefix" || break; done
    export PYTHONPATH="$prefix/usr/lib/python3/dist-packages:$PYTHONPATH"
    export LD_LIBRARY_PATH="$prefix/usr/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    if "$PY" -c "$v" >/dev/null 2>"$WORK/pygpu.err"; then
      GPUARRAY_PREFIX="$prefix"; record pygpu ok "$debs (Debian 0.7.6, dpkg -x)" "$("$PY" -c "$v")"; return 0
    fi
  fi
  if "$PY" -c "$v" >/dev/null 2>>"$WORK/pygpu.err"; then
    GPUARRAY_PREFIX=""; record pygpu ok "already importable" "$("$PY" -c "$v")"; return 0
  fi
  record pygpu failed "" "$(tail -c 1500 "$WORK/pygpu.err" 2>/dev/null)"
  return 1
}

setup_cuda_libs() {
  local env_args=(--links-dir "$WORK/links")
  [ -n "${GPUARRAY_PREFIX:-}" ] && env_args+=(--gpuarray-prefix "$GPUARRAY_PREFIX")
  "$PY" -m gpu_setup.env links --links-dir "$WORK/links" > "$WORK/links.txt" 2>&1
  if grep -q "not found: lib\(cudnn\|cublas\|nvrtc\)" "$WORK/links.txt"; then
    # Nothing usable on the machine: NVIDIA's CUDA 12 wheels from PyPI, if it is reachable.
    log "CUDA libraries missing ($(grep -o 'lib[a-z]*\.so' "$WORK/links.txt" | tr '\n' ' ')), trying PyPI"
    mkdir -p "$WORK/nvidia-wheels" "$WORK/nvidia"
    if bounded 240 "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$WORK/nvidia-wheels" \
         nvidia-cudnn-cu12 nvidia-cublas-cu12 nvidia-cuda-nvrtc-cu12 nvidia-cuda-runtime-cu12 >/dev/null 2>&1; then
      local w; for w in "$WORK"/nvidia-wheels/*.whl; do (cd "$WORK/nvidia" && python3 -m zipfile -e "$w" .); done
      # default_search_dirs() reads it, here and in gpu_check.py.
      SRCNN_CUDA_LIB_DIRS="$(ls -d "$WORK"/nvidia/nvidia/*/lib | tr '\n' ':')"
      export SRCNN_CUDA_LIB_DIRS
      record cuda-wheels ok "pip download nvidia-*-cu12" "$SRCNN_CUDA_LIB_DIRS"
    else
      record cuda-wheels failed "pip download nvidia-*-cu12" "no registry reachable?"
    fi
  fi
  if ! "$PY" -m gpu_setup.env env "${env_args[@]}" > "$WORK/gpu_env.sh" 2> "$WORK/gpu_env.err"; then
    record cuda-libs failed "" "$(cat "$WORK/gpu_env.err")"; return 1
  fi
  # shellcheck disable=SC1091
  source "$WORK/gpu_env.sh"
  export SRCNN_GPU_LINKS_DIR="$WORK/links"
  "$PY" -m gpu_setup.env links --links-dir "$WORK/links" > "$WORK/links.txt" 2>&1
  cat "$WORK/gpu_env.sh" "$WORK/links.txt" "$WORK/gpu_env.err"
  if grep -q "not found" "$WORK/links.txt"; then
    record cuda-libs failed "" "$(cat "$WORK/links.txt")"; return 1
  fi
  record cuda-libs ok "$(tr '\n' ';' < "$WORK/links.txt")" "$(cat "$WORK/gpu_env.err")"
}

run() {
  mkdir -p "$OUT" "$WORK"; : > "$STAGES"
  exec > >(tee -a "$OUT/gpu_check.log") 2>&1
  log "budget ${BUDGET}s; repository $ROOT; bundle $BUNDLE; work $WORK"
  {
    echo "--- machine"; uname -a; head -2 /etc/os-release 2>/dev/null
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | head -3
    echo "python3: $(python3 --version 2>&1)  g++: $(g++ --version 2>&1 | head -1)"
    ldconfig -p 2>/dev/null | grep -E "lib(cuda|cudnn|cublas|nvrtc)\.so" | head -8
  } 2>&1
  command -v g++ >/dev/null || { record compiler failed "" "no g++: Theano compiles C++ at run time"; finish 3; }
  command -v python3 >/dev/null || { echo "no python3 for the report"; }
  record machine ok "$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)" ""

  setup_python || finish 3
  setup_packages || finish 3
  setup_pygpu || finish 3
  if [ -n "${SRCNN_GPU_CHECK_DRY_RUN:-}" ]; then  # a CPU machine: check the set-up only
    setup_cuda_libs || log "(dry run: continuing without the CUDA libraries)"
    SRCNN_GPU_CHECK_WORK="$WORK/work" bounded "$(( $(left) - 10 ))" "$PY" -m gpu_setup.check \
        orchestrate --out "$OUT" --deadline "$((DEADLINE - 20))" --configs cpu
    finish $?
  fi
  setup_cuda_libs || finish 3

  log "pygpu.init('cuda0')"
  if bounded 120 "$PY" -c 'import pygpu, time; t = time.time(); c = pygpu.init("cuda0"); print(c.devname, c.bin_id, "%d MiB" % (c.total_gmem // 2**20), "%.1fs" % (time.time() - t))' > "$WORK/init.txt" 2>&1; then
    record gpu-init ok "pygpu.init" "$(cat "$WORK/init.txt")"
  else
    record gpu-init failed "pygpu.init" "$(tail -c 1500 "$WORK/init.txt")"; finish 4
  fi

  log "gpu_setup/check.py (children log to $WORK/work/*.log)"
  SRCNN_GPU_CHECK_WORK="$WORK/work" bounded "$(( $(left) - 10 ))" "$PY" -m gpu_setup.check \
      orchestrate --out "$OUT" --deadline "$((DEADLINE - 20))" \
      --configs "${SRCNN_GPU_CHECK_CONFIGS:-cuda-dnn,cuda-corrmm,cpu,cuda-project,cpu-project}"
  local status=$?
  record check "$([ $status -eq 0 ] && echo ok || echo failed)" "gpu_check.py" "exit $status"
  finish "$status"
}

case "$MODE" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: bash gpu_setup/check.sh prepare|run"; exit 2 ;;
esac
