"""The `rkllm` section of a Modelfile: RKLLM runtime parameters for the NPU engine, typed and
bounded (pydantic), with the defaults the engine uses when a key is absent.

Sampling keys left unset (None) fall back to the Modelfile's `parameters`, then Ollama's
defaults; `max_context_len` to the request's num_ctx, then RKOLLAMA_CONTEXT_LENGTH;
`enabled_cpus_mask` to the platform's big cores; `base_domain_id` to the NPU domain the
scheduler assigns. The dict form stays what a Modelfile and the store hold; this is how the
engine reads it.
"""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rkollama.models.pydantic_words import describe

MAX_BATCH = 8
"""Most requests one rkllm_run takes (n_batch)."""
MAX_CONTEXT = 1 << 20
"""Largest max_context_len accepted, in tokens (as num_ctx)."""


class _Strict(BaseModel):
    # strict: YAML `true` is not an int and "5" is not a number; forbid: a misspelt key is an error.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, use_attribute_docstrings=True)


class LoraAdapter(_Strict):
    path: str = Field(min_length=1)
    """The adapter file (an .rkllm-lora built with rkllm-toolkit)."""
    name: str = Field(min_length=1)
    scale: float = Field(1.0, ge=0.0, le=10.0)


class RKLLMSection(_Strict):
    max_context_len: int | None = Field(None, ge=1, le=MAX_CONTEXT)
    """Context window in tokens; at most what the model was converted for."""
    max_new_tokens: int | None = Field(None, ge=-1, le=MAX_CONTEXT)
    """Longest answer in tokens (default: the context length; -1 none)."""
    n_keep: int = Field(-1, ge=-1, le=MAX_CONTEXT)
    """Tokens kept when the window shifts (-1: the runtime's choice)."""
    top_k: int | None = Field(None, ge=0, le=2**31 - 1)
    """Sampling at init (what 1.2.x runtimes use for every run); unset: `parameters`, then
    Ollama's default. The same for the five below."""
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    """As top_k."""
    temperature: float | None = Field(None, ge=0.0, le=100.0)
    """As top_k."""
    repeat_penalty: float | None = Field(None, ge=0.0, le=100.0)
    """As top_k."""
    frequency_penalty: float | None = Field(None, ge=-100.0, le=100.0)
    """As top_k."""
    presence_penalty: float | None = Field(None, ge=-100.0, le=100.0)
    """As top_k."""
    mirostat: int = Field(0, ge=0, le=2)
    """Mirostat sampling at init: 0 off, 1 or 2."""
    mirostat_tau: float = Field(5.0, ge=0.0, le=100.0)
    """Mirostat target entropy."""
    mirostat_eta: float = Field(0.1, ge=0.0, le=1.0)
    """Mirostat learning rate."""
    skip_special_token: bool = True
    """Leave special tokens out of the text."""
    ignore_eos_token: bool = False
    """Keep generating past end-of-sequence (1.3.x runtimes only)."""
    embed_flash: bool = True
    """Keep the embedding table in flash (saves memory; the runtime's default)."""
    base_domain_id: int | None = Field(None, ge=0, le=255)
    """NPU IOMMU domain; default: the one the scheduler gives each loaded model."""
    enabled_cpus_num: int | None = Field(None, ge=1, le=64)
    """How many CPU cores the runtime uses (default: the cores in enabled_cpus_mask)."""
    enabled_cpus_mask: int | None = Field(None, ge=1, le=2**32 - 1)
    """CPU cores the runtime may use, as a bit mask (default: the platform's big cores)."""
    n_batch: int = Field(1, ge=1, le=MAX_BATCH)
    """Concurrent requests served in one forward pass (needs a known runtime version)."""
    batch_window_ms: int = Field(20, ge=0, le=10_000)
    """How long a request waits for others to share its batch, in milliseconds."""
    use_cross_attn: bool = False
    """Accepted for Rockchip's parameter set; cross-attention is not used by rkollama."""
    img_start: str = ""
    """A vision model's image start tag (e.g. `<img>`): where the runtime begins an image's
    embeddings (in RKLLMParam on 1.2.x runtimes, in each multimodal input on 1.3.x)."""
    img_end: str = ""
    """A vision model's image end tag (e.g. `</img>`)."""
    img_content: str = ""
    """A vision model's image content tag (e.g. `<IMG_CONTEXT>`), one per embedding."""
    prompt_cache: str = ""
    """A prompt cache file to load after init (rkllm_load_prompt_cache)."""
    lora: list[LoraAdapter] = Field(default_factory=list)
    """Adapters loaded after init; the first applies to every run."""
    system_template: str | None = None
    """With prompt_prefix: the runtime template's system part, `{system}` where the prompt goes."""
    prompt_prefix: str | None = None
    """The runtime template's text before each user message."""
    prompt_postfix: str = ""
    """The runtime template's text after each user message."""


def markdown_table() -> str:
    """The `rkllm` key table of docs/modelfiles.md (regenerate it with
    `python -c "from rkollama.models.rkllm_section import markdown_table; print(markdown_table())"`)."""
    rows = []
    for name, field in RKLLMSection.model_fields.items():
        kind = str(field.annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")
        kind = kind.replace("rkollama.models.rkllm_section.LoraAdapter", "{path, name, scale}")
        kind = kind.replace(" | None", "")  # optional keys show `unset` as their default
        low = next((m.ge for m in field.metadata if hasattr(m, "ge")), None)
        high = next((m.le for m in field.metadata if hasattr(m, "le")), None)
        bounds = f"{low} to {high}" if low is not None else ""
        default = "[]" if field.default_factory else "unset" if field.default is None else repr(field.default)
        about = " ".join((field.description or "").split())
        rows.append(f"| `{name}` | {kind} | {bounds} | `{default}` | {about} |")
    return "\n".join(["| Key | Type | Range | Default | Meaning |", "|---|---|---|---|---|", *rows])


def parse(data: Any, label: str = "rkllm") -> RKLLMSection:
    """The typed section of a Modelfile's `rkllm` mapping (found at `label`); raises ValueError
    with one line naming the key and what is wrong, for the first problem."""
    try:
        return RKLLMSection.model_validate(data)
    except ValidationError as exc:
        raise ValueError(describe(exc.errors()[0], label)) from None
