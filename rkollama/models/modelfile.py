"""YAML Modelfiles: validated by models/schema.py, and a family file flattened into one
`name:tag` entry.

A family file (modelfiles/qwen3.yaml) holds shared fields and a `tags:` map; each tag has its own
sources per platform and may override `details`, `parameters` and `rkllm`. The store keeps the
flattened entry of the tag that was pulled (`Modelfile`), so `show` needs no catalogue.
"""

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rkollama.errors import ModelfileError
from rkollama.models import rkllm_section, schema
from rkollama.models.rkllm_section import RKLLMSection


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
    parameters: dict[str, Any] = field(default_factory=dict[str, Any])
    rkllm: dict[str, Any] = field(default_factory=dict[str, Any])
    capabilities: list[Any] = field(default_factory=lambda: ["completion"])
    details: dict[str, Any] = field(default_factory=dict[str, Any])
    messages: list[Any] = field(default_factory=list[Any])
    source: dict[str, Any] = field(default_factory=dict[str, Any])
    model_info: dict[str, Any] = field(default_factory=dict[str, Any])
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, origin: str = "<modelfile>") -> "Modelfile":
        """A stored entry, validated (models/schema.py)."""
        return cls(**_validated(data, schema.Entry, origin))


@dataclass
class Family:
    """A parsed family file: shared fields plus a raw `tags` map, all validated."""

    name: str
    path: Path
    data: dict[str, Any]

    def default_tag(self) -> str:
        tags = self.data["tags"]
        for tag, spec in tags.items():
            if spec.get("default"):
                return str(tag)
        return str(next(iter(tags)))

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
    data = _validated(data, schema.Family, origin)
    return Family(str(data["name"]), Path(path), data)


def source_format(source: dict[str, Any]) -> str:
    if source.get("format"):
        return str(source["format"])
    if "hf" in source:  # chosen at pull time: the .rkllm on an NPU platform, else a GGUF
        return "gguf" if source.get("platform", "cpu") == "cpu" else "rkllm"
    names = [source.get("url", ""), source.get("path", "")] + source.get("pypi", {}).get("files", [])
    for name in names:
        if name.endswith(".rkllm"):
            return "rkllm"
    return "gguf"


def _validated(data: Any, model: type, origin: str) -> dict[str, Any]:
    try:
        return schema.validate(data, model, origin)
    except ValueError as exc:
        raise ModelfileError(str(exc)) from None
