"""Every setting of rkollama in one table: env name(s), default, kind, allowed values, help.

Three sources, later ones winning: the configuration files (`/etc/rkollama/config.yaml`, or the
file `RKOLLAMA_CONFIG` names, then `~/.rkollama/config.yaml`), the environment, and `rkollama
serve --flag`s. `Settings.load()` reads them once and the object is passed down explicitly; a bad
file or value is one `ConfigError` line naming where it came from, the key and what is allowed,
so the daemon never starts half-configured. `serve --help` and docs/configuration.md are
generated from `SETTINGS` (a test keeps the doc in sync).
"""

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from rkollama import cpu_cores
from rkollama.platform import PLATFORMS

DEFAULT_PORT = 11434
SYSTEM_CONFIG = Path("/etc/rkollama/config.yaml")
USER_CONFIG = Path("~/.rkollama/config.yaml")


class ConfigError(Exception):
    """A setting that cannot be used, in one line that names its source and key."""


@dataclass(frozen=True)
class Setting:
    field: str
    envs: tuple[str, ...]
    default: str
    help: str
    kind: str = "str"
    """str, int, bool, auto_bool ("auto" or a boolean), duration (Go duration or seconds), list
    (comma-separated) or path."""
    choices: tuple[str, ...] = ()
    low: int | None = None
    """Smallest allowed value of an int setting."""
    zero: str | None = None
    """What 0 stands for in an int setting where Ollama gives 0 a meaning (DEFAULT: the default);
    None: 0 is checked against `low` like any value."""

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")




def _parse_bool(text: str) -> bool:
    """Go ParseBool, where an unparsable non-empty value counts as true (as Ollama does)."""
    value = text.strip().strip("'\"").lower()
    if value in ("", "0", "f", "false"):
        return False
    return True


DEFAULT = "default"
"""Setting.zero: 0 means the setting's default (Ollama's "0 = automatic")."""


def setting(envs: tuple[str, ...], default: str, help: str, kind: str = "str",
            choices: tuple[str, ...] = (), low: int | None = None, zero: str | None = None) -> Any:
    """A field of Settings: its default converted from `default` (the text the docs show), the
    rest kept for SETTINGS. `kind` "path" is text that becomes a Path."""
    spec = Setting("", envs, default, help, kind, choices, low, zero)
    value = Path(default) if kind == "path" else convert(spec, default, "the default")
    return dataclasses.field(default=value, metadata={"setting": spec})


def convert(setting: Setting, raw: object, source: str) -> Any:
    """`raw` (text, or a YAML scalar from a file) as the setting's kind; ConfigError otherwise."""
    where = f"{source}: {setting.field}"
    if setting.kind == "list":
        items = raw if isinstance(raw, list) else str(raw).split(",")
        return tuple(str(item).strip() for item in items if str(item).strip())
    if isinstance(raw, (dict, list)):
        raise ConfigError(f"{where} must be a single value, got {type(raw).__name__}")
    text = str(raw).strip().strip("'\"") if not isinstance(raw, bool) else str(raw).lower()
    kind = _KINDS.get(setting.kind)
    if kind is not None:
        return kind(setting, text, source, where)
    if setting.choices and text not in setting.choices:
        raise ConfigError(f"{where} must be one of {', '.join(setting.choices)}, got {text!r}")
    return text


def _int(setting: Setting, text: str, source: str, where: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{where} must be an integer, got {text!r}") from None
    if value == 0 and setting.zero is not None:  # an Ollama setup's 0 starts rkollama too
        return int(setting.default if setting.zero == DEFAULT else setting.zero)
    if setting.low is not None and value < setting.low:
        raise ConfigError(f"{where} must be at least {setting.low}, got {value}")
    return value


def _bool(setting: Setting, text: str, source: str, where: str) -> bool:
    if source.startswith("environment"):
        return _parse_bool(text)  # Ollama's leniency for environment variables
    if text.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        raise ConfigError(f"{where} must be true or false, got {text!r}")
    return text.lower() in ("true", "1", "yes", "on")


def _auto_bool(setting: Setting, text: str, source: str, where: str) -> str:
    """"auto", else "true" or "false" by the boolean rules."""
    if text.lower() == "auto":
        return "auto"
    try:
        return str(_bool(setting, text, source, where)).lower()
    except ConfigError:
        raise ConfigError(f"{where} must be auto, true or false, got {text!r}") from None


def _duration(setting: Setting, text: str, source: str, where: str) -> str:
    from rkollama.durations import parse_keep_alive
    from rkollama.errors import BadRequest

    try:
        parse_keep_alive(text)
    except BadRequest:
        raise ConfigError(f"{where} must be a duration such as 5m, 1h30m or 300 (seconds), "
                          f"got {text!r}") from None
    return text


_KINDS = MappingProxyType({"int": _int, "bool": _bool, "auto_bool": _auto_bool, "duration": _duration})
"""How each kind's text becomes its value: (setting, text, source, where) -> value."""


def read_file(path: Path) -> dict[str, object]:
    """The settings of one YAML file (absent file: none), checked key by key."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
    import yaml  # only when there is a file: client commands start faster without it
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{line}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a mapping of setting: value")
    values: dict[str, object] = {}
    for key, raw in data.items():
        name = str(key).replace("-", "_").lower()
        setting = _BY_FIELD.get(name)
        if setting is None or name == "config":
            allowed = ", ".join(s.field for s in SETTINGS if s.field != "config")
            raise ConfigError(f"{path}: unknown setting {key!r} (known: {allowed})")
        values[name] = convert(setting, "" if raw is None else raw, str(path))
    return values


@dataclass(frozen=True)
class Settings:
    """Every setting, each in one place: its name and type here, and in `setting(...)` its
    environment names, default (as text), help and kind. SETTINGS (env, flags, file keys, `serve
    --help`, docs/configuration.md) is derived from these fields."""

    config: str = setting(("RKOLLAMA_CONFIG",), str(SYSTEM_CONFIG),
        "System configuration file (YAML, keys as in this table); ~/.rkollama/config.yaml "
        "is read after it. Environment only")
    host: str = setting(("RKOLLAMA_HOST", "OLLAMA_HOST"), "127.0.0.1:11434",
        "Address the daemon listens on and the CLI talks to ([scheme://]host[:port])")
    models: Path = setting(("RKOLLAMA_MODELS", "OLLAMA_MODELS"), "~/.rkollama/models",
        "Model store: blobs/ and manifests/", kind="path")
    keep_alive: str = setting(("RKOLLAMA_KEEP_ALIVE", "OLLAMA_KEEP_ALIVE"), "5m",
        "How long an idle model stays loaded (duration or seconds; negative = forever)",
        kind="duration")
    context_length: int = setting(("RKOLLAMA_CONTEXT_LENGTH", "OLLAMA_CONTEXT_LENGTH"), "4096",
        "Default num_ctx in tokens (capped at the model's training context); 0 = this default, "
        "Ollama's automatic choice without a GPU", kind="int", low=4, zero=DEFAULT)
    load_timeout: str = setting(("RKOLLAMA_LOAD_TIMEOUT", "OLLAMA_LOAD_TIMEOUT"), "5m",
        "How long a model may take to load before its runner is stopped (duration; 0 = no limit)",
        kind="duration")
    num_parallel: int = setting(("RKOLLAMA_NUM_PARALLEL", "OLLAMA_NUM_PARALLEL"), "1",
        "Requests a model on the CPU engine answers at once, batched together (each with a KV cache of "
        "num_ctx tokens; 0 counts as 1, as in Ollama); NPU models take theirs from rkllm.n_batch",
        kind="int", low=1, zero=DEFAULT)
    flash_attention: str = setting(("RKOLLAMA_FLASH_ATTENTION", "OLLAMA_FLASH_ATTENTION"), "auto",
        "Flash attention on the CPU engine: auto (llama.cpp decides: on for the CPU), true or false. On "
        "decodes short conversations ~10% faster; off reads a new turn of a long one ~25% faster "
        "(docs/benchmarking.md)", kind="auto_bool")
    prompt_cache_mb: int = setting(("RKOLLAMA_PROMPT_CACHE_MB",), "1024",
        "MiB of RAM a model on the CPU engine keeps conversations' KV caches in when another request "
        "takes their slot, to put back when they return (never more than half the memory available "
        "at the time); 0 = off", kind="int", low=0)
    stall_timeout: str = setting(("RKOLLAMA_STALL_TIMEOUT",), "5m",
        "How long a generating engine may send nothing (no token; the CPU engine also reports each "
        "prefill batch) before its runner is stopped and the request fails (duration; 0 = no limit)",
        kind="duration")
    max_loaded_models: int = setting(("RKOLLAMA_MAX_LOADED_MODELS", "OLLAMA_MAX_LOADED_MODELS"), "1",
        "Models resident at once; the least recently used idle one is unloaded first (0 = this "
        "default, Ollama's automatic)", kind="int", low=1, zero=DEFAULT)
    max_queue: int = setting(("RKOLLAMA_MAX_QUEUE", "OLLAMA_MAX_QUEUE"), "512",
        "Requests that may wait for a model before new ones get 503 (0 counts as 1: Ollama's "
        "unbuffered queue takes one)", kind="int", low=1, zero="1")
    num_threads: int = setting(("RKOLLAMA_NUM_THREADS",), "0",
        "CPU engine threads for prompt and decode (0 = one per physical core of the fastest kind: "
        "the big cores of a big.LITTLE SoC)", kind="int", low=0)
    backend: str = setting(("RKOLLAMA_BACKEND",), "auto",
        "Engine: auto (chosen by the model's format), llamacpp, or fake (scripted, for tests)",
        choices=("auto", "llamacpp", "fake"))
    platform: str = setting(("RKOLLAMA_PLATFORM",), "auto",
        "Platform whose model sources are used: auto (detected), " + ", ".join(PLATFORMS),
        choices=("auto", *PLATFORMS))
    rkllm_lib: str = setting(("RKOLLAMA_RKLLM_LIB",), "",
        "Path of librkllmrt.so (default: external/, then the system library paths)")
    rknn_lib: str = setting(("RKOLLAMA_RKNN_LIB",), "",
        "Path of librknnrt.so, which runs vision models' image encoders on the NPU (default: "
        "external/, then the system library paths)")
    rkllm_abi: str = setting(("RKOLLAMA_RKLLM_ABI",), "",
        "ABI to use with an RKLLM runtime rkollama does not know (a newer or beta release): "
        "1.2, 1.3 or 1.3.1; empty = decide from the file. A wrong one crashes the model's runner",
        choices=("", "1.2", "1.3", "1.3.1"))
    npu_driver_check: bool = setting(("RKOLLAMA_NPU_DRIVER_CHECK",), "true",
        "Refuse NPU loads on an RKNPU driver known not to work (below 0.9.0) and warn below "
        "0.9.8; false skips the check", kind="bool")
    isolation: bool = setting(("RKOLLAMA_ISOLATION", "RKOLLAMA_NPU_ISOLATION"), "true",
        "Run each loaded model in a runner process, so an engine crash cannot take the daemon down",
        kind="bool")
    modelfiles: str = setting(("RKOLLAMA_MODELFILES",), "",
        "Extra directory of YAML Modelfiles searched before the built-in ones")
    hf_endpoint: str = setting(("RKOLLAMA_HF_ENDPOINT", "HF_ENDPOINT"), "https://huggingface.co",
        "Hugging Face Hub (or a mirror) that hf.co/… names and hf sources are pulled from")
    hf_token: str = setting(("RKOLLAMA_HF_TOKEN", "HF_TOKEN"), "",
        "Hugging Face token for gated or private repositories")
    origins: tuple[str, ...] = setting(("RKOLLAMA_ORIGINS", "OLLAMA_ORIGINS"), "",
        "Extra allowed CORS origins (comma-separated, * wildcards)", kind="list")
    api_key: tuple[str, ...] = setting(("RKOLLAMA_API_KEY",), "",
        "API keys (comma-separated): when set, every route but / and /v1/health needs "
        "`Authorization: Bearer KEY`", kind="list")
    rate_limit: int = setting(("RKOLLAMA_RATE_LIMIT",), "0",
        "Requests per minute allowed to each API key (or client address without keys); "
        "0 = no limit. Beyond it: 429 with Retry-After", kind="int", low=0)
    http_threads: int = setting(("RKOLLAMA_HTTP_THREADS",), "16",
        "HTTP threads for running long requests (generating, pulling), beyond one per queued "
        "request; control routes (/api/tags, /api/ps, …) have threads of their own",
        kind="int", low=1)
    max_connections: int = setting(("RKOLLAMA_MAX_CONNECTIONS",), "4096",
        "Client connections held open at once (idle and slow ones included)", kind="int", low=1)
    connection_timeout: int = setting(("RKOLLAMA_CONNECTION_TIMEOUT",), "60",
        "Seconds an idle client connection stays open", kind="int", low=1)
    max_body_bytes: int = setting(("RKOLLAMA_MAX_BODY_BYTES",), "33554432",
        "Largest request body in bytes (413 beyond it)", kind="int", low=1024)
    max_blob_bytes: int = setting(("RKOLLAMA_MAX_BLOB_BYTES",), "68719476736",
        "Largest model file an /api/blobs upload may bring, in bytes", kind="int", low=1)
    debug: bool = setting(("RKOLLAMA_DEBUG", "OLLAMA_DEBUG"), "false", "Log debug information",
        kind="bool")
    nohistory: bool = setting(("RKOLLAMA_NOHISTORY", "OLLAMA_NOHISTORY"), "false",
        "CLI: keep no history of what is typed in `rkollama run` (~/.rkollama/history)",
        kind="bool")
    no_autostart: bool = setting(("RKOLLAMA_NO_AUTOSTART",), "false",
        "CLI: never start a background daemon when none answers", kind="bool")

    def __post_init__(self) -> None:
        # Overrides given in code (Settings.from_env(..., origins="a,b")) get the table's kinds too.
        for spec in SETTINGS:
            value = getattr(self, spec.field)
            if spec.kind == "list" and isinstance(value, str):
                object.__setattr__(self, spec.field, convert(spec, value, "an override"))
            elif spec.kind == "path" and isinstance(value, str):
                object.__setattr__(self, spec.field, Path(os.path.expanduser(value)))

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, flags: Mapping[str, str] | None = None,
             files: Sequence[Path] | None = None) -> "Settings":
        """Files, then the environment (default os.environ), then `flags` ({field: text})."""
        environ = os.environ if environ is None else environ
        if files is None:
            system = Path(environ.get("RKOLLAMA_CONFIG", "").strip() or SYSTEM_CONFIG)
            files = [system, Path(os.path.expanduser(str(USER_CONFIG)))]
        values: dict[str, object] = {}
        for path in files:
            values.update(read_file(path))
        for setting in SETTINGS:
            for env in setting.envs:
                if environ.get(env, "").strip():
                    values[setting.field] = convert(setting, environ[env], f"environment {env}")
                    break
        for name, text in (flags or {}).items():
            values[name] = convert(_BY_FIELD[name], text, f"flag {_BY_FIELD[name].flag}")
        for spec in SETTINGS:
            if spec.kind == "path":
                values[spec.field] = Path(os.path.expanduser(str(values.get(spec.field, spec.default))))
        return cls(**values)  # type: ignore[arg-type]  # each value converted by its field's kind above

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """The environment alone (no files): what tests and benchmarks build on; `overrides` win."""
        return dataclasses.replace(cls.load(environ, files=[]), **overrides)

    def thread_choice(self) -> tuple[int, str]:
        """The CPU engine's default thread count, and what it is and where it comes from in
        words (for the load log and `doctor`)."""
        if self.num_threads > 0:
            return self.num_threads, f"{self.num_threads} (RKOLLAMA_NUM_THREADS)"
        choice = cpu_cores.choose()
        return choice.threads, choice.describe()

    def bind_address(self) -> tuple[str, int]:
        """(host, port) for the daemon to listen on."""
        _, host, port = parse_host(self.host)
        return host, port

    def store_fingerprint(self) -> str:
        """16 hex digits naming the model store (its resolved path, hashed: the daemon tells
        clients which store it uses without telling them where it is)."""
        import hashlib

        path = Path(os.path.expanduser(str(self.models))).resolve()
        return hashlib.sha256(str(path).encode()).hexdigest()[:16]

    def base_url(self) -> str:
        """URL the client connects to; an unspecified bind address maps to loopback."""
        scheme, host, port = parse_host(self.host)
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{port}"


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


SETTINGS: tuple[Setting, ...] = tuple(dataclasses.replace(f.metadata["setting"], field=f.name)
                                     for f in dataclasses.fields(Settings))
"""Every setting, in the order of Settings' fields (env names, default, help, kind, bounds)."""
_BY_FIELD = {s.field: s for s in SETTINGS}


def describe() -> list[tuple[str, str, str]]:
    """Rows (env names, default, help) for `serve --help` and docs/configuration.md."""
    return [(", ".join(s.envs), s.default, s.help) for s in SETTINGS]


def flag_settings() -> list[Setting]:
    """The settings `rkollama serve` takes as flags (all but the file's own path)."""
    return [s for s in SETTINGS if s.field != "config"]


def markdown_table() -> str:
    """The settings table of docs/configuration.md (regenerate it with
    `python -c "from rkollama.config import markdown_table; print(markdown_table())"`)."""
    rows = [f"| `{s.field}` | `{'`, `'.join(s.envs)}` | "
            f"{'' if s.field == 'config' else f'`{s.flag}`'} | `{s.default}` | {s.help} |"
            for s in SETTINGS]
    return "\n".join(["| File key | Environment variable | `serve` flag | Default | Meaning |",
                      "|---|---|---|---|---|", *rows])
