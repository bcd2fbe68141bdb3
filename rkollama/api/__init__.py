"""Ollama's native wire protocol: request parsing and response shapes, shared by server and client."""
