#!/usr/bin/env bash
# Builds llama.cpp's own server (`llama-server`) from the llama.cpp that the pinned
# llama-cpp-python vendors (setup.cfg), with the CPU flags install.sh gives the binding, for
# benchmarks/bench_peer.py --peer llama-server. Prints the binary's path; kept in a cache keyed
# by the pin and the flags, so a second run prints it at once. About 10 minutes on 2 cores.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
pin="$(sed -n 's/^ *\(llama-cpp-python==[^ ]*\).*/\1/p' "$here/setup.cfg")"
args="-DGGML_NATIVE=OFF"  # as install.sh: no AMX kernels (they crash on some x86-64 VMs)
if [ "$(uname -m)" = x86_64 ] && grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
  args="$args -DGGML_AVX512=ON"
  for feature in vbmi vnni bf16; do
    grep -qw "avx512_\?$feature" /proc/cpuinfo && args="$args -DGGML_AVX512_${feature^^}=ON"
  done
fi
cache="${XDG_CACHE_HOME:-$HOME/.cache}/rkollama/llama-server/$(printf '%s %s' "$pin" "$args" | sha256sum | cut -c1-16)"
if [ ! -x "$cache/bin/llama-server" ]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  "$here/.venv/bin/python" -m pip download -q --no-deps --no-binary :all: -d "$work" "$pin" >&2
  tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
  src="$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp)"
  # shellcheck disable=SC2086
  cmake -S "$src" -B "$work/build" $args -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF -DCMAKE_BUILD_TYPE=Release >&2
  cmake --build "$work/build" --target llama-server -j"$(nproc)" >&2
  mkdir -p "$cache/bin"
  cp "$work/build/bin/llama-server" "$cache/bin/llama-server.tmp"
  mv "$cache/bin/llama-server.tmp" "$cache/bin/llama-server"
fi
echo "$cache/bin/llama-server"
