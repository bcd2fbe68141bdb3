"""YAML Modelfiles: strict validation, and flattening a family file into one `name:tag` entry.

A family file (modelfiles/qwen3.yaml) holds shared fields and a `tags:` map; each tag has its own
sources per platform and may override `details`, `parameters` and `rkllm`. The store keeps the
flattened entry of the tag that was pulled (`Modelfile`), so `show` needs no catalogue.
"""

from dataclasses import asdict, dataclass, field
from pathlib import Path

from rkollama.errors import ModelfileError
from rkollama.models import rkllm_section
from rkollama.models.options import OPTIONS, coerce_option
from rkollama.models.rkllm_section import RKLLMSection

PLATFORMS = ("cpu", "rk3588", "rk3576", "rk3562", "rv1126b")
CAPABILITIES = ("completion", "tools", "thinking", "vision", "embedding", "insert")
FORMATS = ("gguf", "rkllm")

ANY = object()  # marker: any YAML mapping (keys checked elsewhere)

_SOURCE = {
    "url": str,
    "path": str,
    "pypi": {"packages": [str], "files": [str]},
    "hf": str,          # a Hugging Face repository: the file is chosen at pull time (models/hf.py)
    "file": str,        # with hf: a file name or quantization to choose
    "repo": str,        # recorded at pull time: where an hf file came from
    "revision": str,    # recorded at pull time: the commit it was pinned to
    "sha256": str,
    "size": int,
    "format": str,
}
_DETAILS = {
    "family": str, "parameter_size": str, "quantization_level": str, "context_length": int,
    "embedding_length": int, "format": str,
}
_MESSAGE = {"role": str, "content": str}
_COMMON = {
    "description": str, "template": str, "system": str, "license": str, "homepage": str,
    "parameters": "parameters", "rkllm": "rkllm", "capabilities": [str], "details": _DETAILS,
    "messages": [_MESSAGE], "model_info": ANY,
}
_TAG = dict(_COMMON, default=bool, sources=dict.fromkeys(PLATFORMS, _SOURCE))
_FAMILY = dict(_COMMON, name=str, tags=ANY)
_ENTRY = dict(_COMMON, name=str, tag=str, source=dict(_SOURCE, platform=str))


@dataclass
class Modelfile:
    """One model as registered in the store: everything `show`, the scheduler and backends need."""

    name: str
    tag: str
    description: str = ""
    template: str = "builtin"
    system: str = ""
    license: str = ""
    homepage: str = ""
    parameters: dict = field(default_factory=dict)
    rkllm: dict = field(default_factory=dict)
    capabilities: list = field(default_factory=lambda: ["completion"])
    details: dict = field(default_factory=dict)
    messages: list = field(default_factory=list)
    source: dict = field(default_factory=dict)
    model_info: dict = field(default_factory=dict)
    """The model file's header as `/api/show` reports it (GGUF key/values), read at pull time."""

    @property
    def format(self) -> str:
        return source_format(self.source)

    def rkllm_section(self) -> RKLLMSection:
        """The `rkllm` mapping typed, with the engine's defaults for what it leaves out."""
        try:
            return rkllm_section.parse(self.rkllm)
        except ValueError as exc:  # a stored entry is validated when read; this is a backstop
            raise ModelfileError(f"{self.name}:{self.tag}: {exc}") from None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data, origin: str = "<modelfile>") -> "Modelfile":
        _check(data, _ENTRY, origin, "")
        for required in ("name", "tag"):
            if required not in data:
                raise ModelfileError(f"{origin}: missing key '{required}'")
        _check_semantics(data, origin, "")
        return cls(**data)


@dataclass
class Family:
    """A parsed family file: shared fields plus a raw `tags` map, all validated."""

    name: str
    path: Path
    data: dict

    def default_tag(self) -> str:
        tags = self.data["tags"]
        for tag, spec in tags.items():
            if spec.get("default"):
                return tag
        return next(iter(tags))

    def entry(self, tag: str, platform: str) -> Modelfile | None:
        """Flatten `tag` for `platform`: its source there, or the `cpu` one as fallback."""
        tags = {str(t).lower(): spec for t, spec in self.data["tags"].items()}
        spec = tags.get("latest" if tag.lower() == "latest" else tag.lower())
        if spec is None and tag.lower() == "latest":
            spec = tags[self.default_tag().lower()]
        if spec is None:
            return None
        sources = spec.get("sources", {})
        chosen = platform if platform in sources else "cpu"
        if chosen not in sources:
            return None
        merged = {k: v for k, v in self.data.items() if k not in ("tags",)}
        for key, value in spec.items():
            if key in ("default", "sources"):
                continue
            if key in ("parameters", "rkllm", "details") and isinstance(value, dict):
                merged[key] = {**merged.get(key, {}), **value}
            else:
                merged[key] = value
        merged["name"], merged["tag"] = self.name, tag
        source = dict(sources[chosen], platform=chosen)
        if "path" in source and not Path(source["path"]).is_absolute():
            source["path"] = str((self.path.parent / source["path"]).resolve())
        merged["source"] = source
        return Modelfile(**merged)


def load_family(path: Path) -> Family:
    """Read and strictly validate one YAML family file; errors name the file and the key."""
    import yaml

    origin = str(path)
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8-sig"))
    except (OSError, ValueError, yaml.YAMLError) as exc:  # ValueError: not UTF-8
        raise ModelfileError(f"{origin}: cannot read Modelfile: {exc}") from None
    _check(data, _FAMILY, origin, "")
    if "name" not in data:
        raise ModelfileError(f"{origin}: missing key 'name'")
    tags = data.get("tags")
    if not isinstance(tags, dict) or not tags:
        raise ModelfileError(f"{origin}: 'tags' must be a non-empty mapping of tag -> spec")
    data["tags"] = {str(tag): spec for tag, spec in tags.items()}
    _check_semantics(data, origin, "")
    for tag, spec in data["tags"].items():
        where = f"tags.{tag}"
        _check(spec, _TAG, origin, where)
        if not spec.get("sources"):
            raise ModelfileError(f"{origin}: {where}.sources must name at least one platform")
        for platform, source in spec["sources"].items():
            _check_source(source, origin, f"{where}.sources.{platform}")
        _check_semantics(spec, origin, where)
    return Family(str(data["name"]), Path(path), data)


def source_format(source: dict) -> str:
    if source.get("format"):
        return source["format"]
    if "hf" in source:  # chosen at pull time: the .rkllm on an NPU platform, else a GGUF
        return "gguf" if source.get("platform", "cpu") == "cpu" else "rkllm"
    names = [source.get("url", ""), source.get("path", "")] + source.get("pypi", {}).get("files", [])
    for name in names:
        if name.endswith(".rkllm"):
            return "rkllm"
    return "gguf"


def _check_source(source: dict, origin: str, where: str) -> None:
    kinds = [k for k in ("url", "path", "pypi", "hf") if k in source]
    if len(kinds) != 1:
        raise ModelfileError(f"{origin}: {where} needs exactly one of 'url', 'path', 'pypi' or 'hf'")
    if "pypi" in source:
        pypi = source["pypi"]
        if not pypi.get("packages") or not pypi.get("files"):
            raise ModelfileError(f"{origin}: {where}.pypi needs 'packages' and 'files'")
    sha = source.get("sha256", "")
    if sha and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
        raise ModelfileError(f"{origin}: {where}.sha256 must be 64 lowercase hex digits")
    if source.get("format", "gguf") not in FORMATS:
        raise ModelfileError(f"{origin}: {where}.format must be one of {', '.join(FORMATS)}")


def _check_semantics(data: dict, origin: str, where: str) -> None:
    prefix = f"{where}." if where else ""
    for cap in data.get("capabilities", []):
        if cap not in CAPABILITIES:
            raise ModelfileError(f"{origin}: {prefix}capabilities: unknown capability '{cap}'")
    for message in data.get("messages", []):
        if message.get("role") not in ("system", "user", "assistant"):
            raise ModelfileError(
                f'{origin}: {prefix}messages: role must be one of "system", "user", or "assistant"')


def _check(value, schema, origin: str, where: str) -> None:
    """Validate `value` against a tiny schema language: types, [item], {key: schema}, ANY."""
    label = where or "top level"
    if schema is ANY:
        return
    if schema == "rkllm":  # typed and bounded by its pydantic model
        try:
            rkllm_section.parse(value, label)
        except ValueError as exc:
            raise ModelfileError(f"{origin}: {exc}") from None
        return
    if schema == "parameters":
        if not isinstance(value, dict):
            raise ModelfileError(f"{origin}: {label} must be a mapping")
        for name, item in value.items():
            if name not in OPTIONS:
                raise ModelfileError(f"{origin}: unknown parameter '{name}' in {label}")
            try:
                value[name] = coerce_option(name, item)
            except Exception as exc:
                raise ModelfileError(f"{origin}: {label}.{name}: {exc}") from None
        return
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise ModelfileError(f"{origin}: {label} must be a mapping")
        for key, item in value.items():
            if key not in schema:
                raise ModelfileError(f"{origin}: unknown key '{key}' in {label}")
            _check(item, schema[key], origin, f"{where}.{key}" if where else str(key))
        return
    if isinstance(schema, list):
        if not isinstance(value, list):
            raise ModelfileError(f"{origin}: {label} must be a list")
        for index, item in enumerate(value):
            _check(item, schema[0], origin, f"{where}[{index}]")
        return
    if schema is float and isinstance(value, int) and not isinstance(value, bool):
        return
    if schema is int and isinstance(value, bool):
        raise ModelfileError(f"{origin}: {label} must be an integer")
    if not isinstance(value, schema):
        raise ModelfileError(f"{origin}: {label} must be of type {schema.__name__}")
