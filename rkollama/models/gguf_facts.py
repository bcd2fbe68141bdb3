"""What a GGUF file says about itself (read with the `gguf` package): the chat template, the
details `/api/tags` and `/api/show` report, and the capabilities its template implies."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rkollama.errors import PullFailed


@dataclass
class GGUFFacts:
    template: str | None = None
    details: dict[str, Any] = field(default_factory=dict[str, Any])
    capabilities: list[str] = field(default_factory=lambda: ["completion"])
    model_info: dict[str, Any] = field(default_factory=dict[str, Any])
    """The header's key/values as /api/show's `model_info`: arrays empty (Ollama fills them only
    with `verbose`), plus `general.parameter_count`."""


def read(path: Path) -> GGUFFacts:
    """The facts of the GGUF at `path`; PullFailed when it is not a readable GGUF."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # the reader's own errors are of any type: the file is not a GGUF
        raise PullFailed(f"the downloaded file is not a valid GGUF: {type(exc).__name__}: {exc}") from None

    def value(key: str) -> Any:
        item = reader.fields.get(key)
        try:
            return item.contents() if item is not None else None
        except Exception:  # an odd field type: treat as absent
            return None

    arch = value("general.architecture") or ""
    details: dict[str, Any] = {"format": "gguf"}
    if arch:
        details["family"] = arch
    count = sum(int(t.n_elements) for t in reader.tensors)
    size_label = value("general.size_label")
    details["parameter_size"] = size_label if isinstance(size_label, str) and size_label else _label(count)
    file_type = value("general.file_type")
    if isinstance(file_type, int):
        try:
            details["quantization_level"] = gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_")
        except ValueError:
            pass
    for key, name in (("context_length", "context_length"), ("embedding_length", "embedding_length")):
        number = value(f"{arch}.{key}")
        if isinstance(number, int):
            details[name] = number
    template = value("tokenizer.chat_template")
    template = template if isinstance(template, str) and template else None
    embedding = value(f"{arch}.pooling_type") is not None  # as Ollama: a pooling model only embeds
    return GGUFFacts(template, details, capabilities_of(template, embedding), _model_info(reader, count))


def _model_info(reader: Any, parameter_count: int, arrays: bool = False) -> dict[str, Any]:
    info: dict[str, Any] = {}
    for key, item in reader.fields.items():
        if key.startswith("GGUF.") or key == "tokenizer.chat_template":
            continue  # the container's own fields; the template is shown as `template`
        try:
            content = item.contents()
        except Exception:  # an odd field type: left out
            continue
        if isinstance(content, list) and not arrays:
            content = []
        info[key] = content
    info["general.parameter_count"] = parameter_count
    return dict(sorted(info.items()))


def verbose(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(model_info with its arrays, tensors [{name, type, shape}]) for `/api/show` `verbose`."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # the reader's own errors are of any type
        raise PullFailed(f"cannot read the model file: {type(exc).__name__}: {exc}") from None
    count = sum(int(t.n_elements) for t in reader.tensors)
    tensors = [{"name": t.name, "type": t.tensor_type.name, "shape": [int(n) for n in t.shape]}
               for t in reader.tensors]
    return _model_info(reader, count, arrays=True), tensors


def capabilities_of(template: str | None, embedding: bool = False) -> list[str]:
    """A model's capabilities, as Ollama reads them from a GGUF: `embedding` for a model that
    pools (its header has a pooling type), else `completion`; then its template's."""
    return ["embedding" if embedding else "completion"] + template_capabilities(template)


def template_capabilities(template: str | None) -> list[str]:
    """Capabilities a chat template implies: tools when it renders them, thinking when it knows
    a think block (as Ollama infers them from the template)."""
    caps = []
    if template:
        if "tools" in template:
            caps.append("tools")
        if "<think>" in template or "enable_thinking" in template:
            caps.append("thinking")
    return caps


def _label(count: int) -> str:
    """A parameter count the way Ollama prints it: 135M, 1.7B."""
    if count >= 1e9:
        return f"{count / 1e9:.1f}B"
    if count >= 1e6:
        return f"{count / 1e6:.0f}M"
    return str(count)
