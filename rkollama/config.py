"""Every setting of rkollama in one table: env name(s), default, help.

`Settings.from_env()` reads them once; the object is passed down explicitly. `serve --help` and
docs/configuration.md are generated from `SETTINGS` (a test keeps the doc in sync).
"""

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_PORT = 11434


@dataclass(frozen=True)
class Setting:
    field: str
    envs: tuple[str, ...]
    default: str
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("host", ("RKOLLAMA_HOST", "OLLAMA_HOST"), "127.0.0.1:11434",
            "Address the daemon listens on and the CLI talks to ([scheme://]host[:port])"),
    Setting("models", ("RKOLLAMA_MODELS", "OLLAMA_MODELS"), "~/.rkollama/models",
            "Model store: blobs/ and manifests/"),
    Setting("keep_alive", ("RKOLLAMA_KEEP_ALIVE", "OLLAMA_KEEP_ALIVE"), "5m",
            "How long an idle model stays loaded (duration or seconds; negative = forever)"),
    Setting("context_length", ("RKOLLAMA_CONTEXT_LENGTH", "OLLAMA_CONTEXT_LENGTH"), "4096",
            "Default num_ctx in tokens (capped at the model's training context)"),
    Setting("load_timeout", ("RKOLLAMA_LOAD_TIMEOUT", "OLLAMA_LOAD_TIMEOUT"), "5m",
            "How long a model may take to load before its runner is stopped (duration; 0 = no limit)"),
    Setting("max_loaded_models", ("RKOLLAMA_MAX_LOADED_MODELS", "OLLAMA_MAX_LOADED_MODELS"), "1",
            "Models resident at once; the least recently used idle one is unloaded first"),
    Setting("max_queue", ("RKOLLAMA_MAX_QUEUE", "OLLAMA_MAX_QUEUE"), "512",
            "Requests that may wait for a model before new ones get 503"),
    Setting("num_threads", ("RKOLLAMA_NUM_THREADS",), "0",
            "CPU engine threads for prompt and decode (0 = all cores)"),
    Setting("backend", ("RKOLLAMA_BACKEND",), "auto",
            "Engine: auto (chosen by the model's format), llamacpp, or fake (scripted, for tests)"),
    Setting("platform", ("RKOLLAMA_PLATFORM",), "auto",
            "Platform whose model sources are used: auto, cpu, rk3588, rk3576"),
    Setting("rkllm_lib", ("RKOLLAMA_RKLLM_LIB",), "",
            "Path of librkllmrt.so (default: external/, then the system library paths)"),
    Setting("isolation", ("RKOLLAMA_ISOLATION", "RKOLLAMA_NPU_ISOLATION"), "true",
            "Run each loaded model in a runner process, so an engine crash cannot take the daemon down"),
    Setting("modelfiles", ("RKOLLAMA_MODELFILES",), "",
            "Extra directory of YAML Modelfiles searched before the built-in ones"),
    Setting("hf_endpoint", ("RKOLLAMA_HF_ENDPOINT", "HF_ENDPOINT"), "https://huggingface.co",
            "Hugging Face Hub (or a mirror) that hf.co/… names and hf sources are pulled from"),
    Setting("hf_token", ("RKOLLAMA_HF_TOKEN", "HF_TOKEN"), "",
            "Hugging Face token for gated or private repositories"),
    Setting("origins", ("RKOLLAMA_ORIGINS", "OLLAMA_ORIGINS"), "",
            "Extra allowed CORS origins (comma-separated, * wildcards)"),
    Setting("http_threads", ("RKOLLAMA_HTTP_THREADS",), "16",
            "HTTP threads for running long requests (generating, pulling), beyond one per queued "
            "request; control routes (/api/tags, /api/ps, …) have threads of their own"),
    Setting("max_connections", ("RKOLLAMA_MAX_CONNECTIONS",), "4096",
            "Client connections held open at once (idle and slow ones included)"),
    Setting("connection_timeout", ("RKOLLAMA_CONNECTION_TIMEOUT",), "60",
            "Seconds an idle client connection stays open"),
    Setting("max_body_bytes", ("RKOLLAMA_MAX_BODY_BYTES",), "33554432",
            "Largest request body in bytes (413 beyond it)"),
    Setting("max_blob_bytes", ("RKOLLAMA_MAX_BLOB_BYTES",), "68719476736",
            "Largest model file an /api/blobs upload may bring, in bytes"),
    Setting("debug", ("RKOLLAMA_DEBUG", "OLLAMA_DEBUG"), "false", "Log debug information"),
    Setting("nohistory", ("RKOLLAMA_NOHISTORY", "OLLAMA_NOHISTORY"), "false",
            "CLI: keep no history of what is typed in `rkollama run` (~/.rkollama/history)"),
    Setting("no_autostart", ("RKOLLAMA_NO_AUTOSTART",), "false",
            "CLI: never start a background daemon when none answers"),
)


def _parse_bool(text: str) -> bool:
    """Go ParseBool, where an unparsable non-empty value counts as true (as Ollama does)."""
    value = text.strip().strip("'\"").lower()
    if value in ("", "0", "f", "false"):
        return False
    return True


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1:11434"
    models: Path = Path("~/.rkollama/models")
    keep_alive: str = "5m"
    context_length: int = 4096
    load_timeout: str = "5m"
    max_loaded_models: int = 1
    max_queue: int = 512
    num_threads: int = 0
    backend: str = "auto"
    platform: str = "auto"
    rkllm_lib: str = ""
    isolation: bool = True
    modelfiles: str = ""
    hf_endpoint: str = "https://huggingface.co"
    hf_token: str = ""
    origins: str = ""
    http_threads: int = 16
    max_connections: int = 4096
    connection_timeout: int = 60
    max_body_bytes: int = 33554432
    max_blob_bytes: int = 68719476736
    debug: bool = False
    nohistory: bool = False
    no_autostart: bool = False

    @classmethod
    def from_env(cls, environ=None, **overrides) -> "Settings":
        """Read every setting from `environ` (default os.environ); `overrides` win."""
        environ = os.environ if environ is None else environ
        values = {}
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        for setting in SETTINGS:
            raw = setting.default
            for env in setting.envs:
                if environ.get(env, "").strip():
                    raw = environ[env].strip().strip("'\"")
                    break
            values[setting.field] = _convert(setting, raw, types[setting.field])
        values.update(overrides)
        values["models"] = Path(os.path.expanduser(str(values["models"])))
        return cls(**values)

    @property
    def threads(self) -> int:
        """CPU threads for the CPU engine."""
        return self.num_threads if self.num_threads > 0 else max(1, os.cpu_count() or 1)

    def bind_address(self) -> tuple[str, int]:
        """(host, port) for the daemon to listen on."""
        _, host, port = parse_host(self.host)
        return host, port

    def base_url(self) -> str:
        """URL the client connects to; an unspecified bind address maps to loopback."""
        scheme, host, port = parse_host(self.host)
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{port}"


def _convert(setting: Setting, raw: str, kind):
    if kind in (int, "int"):
        try:
            return int(raw)
        except ValueError:
            raise SystemExit(f"Error: {setting.envs[0]} must be an integer, got {raw!r}")
    if kind in (bool, "bool"):
        return _parse_bool(raw)
    return raw


def parse_host(value: str) -> tuple[str, str, int]:
    """Parse OLLAMA_HOST forms: host, host:port, :port, scheme://host[:port][/path]."""
    value = value.strip().strip("'\"") or "127.0.0.1:11434"
    scheme, default_port = "http", DEFAULT_PORT
    if "://" in value:
        scheme = value.split("://", 1)[0].lower()
        default_port = 443 if scheme == "https" else 80
    else:
        value = "http://" + value
    parts = urlsplit(value)
    host = parts.hostname or "127.0.0.1"
    try:
        port = parts.port or default_port
    except ValueError:
        port = default_port
    return scheme, host, port


def describe() -> list[tuple[str, str, str]]:
    """Rows (env names, default, help) for `serve --help` and docs/configuration.md."""
    return [(", ".join(s.envs), s.default, s.help) for s in SETTINGS]


def markdown_table() -> str:
    """The settings table of docs/configuration.md (regenerate it with
    `python -c "from rkollama.config import markdown_table; print(markdown_table())"`)."""
    rows = [f"| `{'`, `'.join(s.envs)}` | `{s.default}` | {s.help} |" for s in SETTINGS]
    return "\n".join(["| Environment variable | Default | Meaning |", "|---|---|---|", *rows])
