"""rkollama: an Ollama-compatible server for Rockchip NPUs (RKLLM) and CPUs (llama.cpp)."""

__version__ = "0.1.0"
