"""YAML Modelfiles: validated by models/schema.py, and a family file flattened into one
`name:tag` entry.

A family file (modelfiles/qwen3.yaml) holds shared fields and a `tags:` map; each tag has its own
sources per platform and may override `details`, `parameters` and `rkllm`. The store keeps the
flattened entry of the tag that was pulled (`Modelfile`), so `show` needs no catalogue.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rkollama.errors import ModelfileError
from rkollama.models import schema
from rkollama.models.rkllm_section import RKLLMSection


class Modelfile(schema.Entry):
    """One model as registered in the store: everything `show`, the scheduler and backends need,
    typed (its keys are declared once, by schema.Entry). Built from trusted or validated data;
    `from_dict` validates what the store read."""

    @property
    def format(self) -> str:
        return self.source.file_format()

    def rkllm_section(self) -> RKLLMSection:
        """The `rkllm` section typed, with the engine's defaults for what it leaves out."""
        return self.rkllm

    def to_dict(self) -> dict[str, Any]:
        """The keys set, as the store writes them (JSON types)."""
        return self.model_dump(mode="json", exclude_unset=True)

    @classmethod
    def from_dict(cls, data: Any, origin: str = "<modelfile>") -> "Modelfile":
        """A stored entry, validated; ModelfileError names the key at fault."""
        return cls.model_validate(_validated(data, schema.Entry, origin))

    def changed(self, **fields: Any) -> "Modelfile":
        """This entry with `fields` replaced (validated as the rest)."""
        return Modelfile.model_validate({**self.to_dict(), **fields})


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
        return Modelfile.model_validate(merged)


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


def _validated(data: Any, model: type, origin: str) -> dict[str, Any]:
    try:
        return schema.validate(data, model, origin)
    except ValueError as exc:
        raise ModelfileError(str(exc)) from None
