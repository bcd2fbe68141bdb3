"""The one internal request (`Generation`) and event stream (`Token`…, `Done`) of rkollama."""

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

JSONObject = dict[str, Any]
"""A decoded JSON object whose keys a client or a model chose: tool definitions, tool-call
arguments, schemas, raw request bodies before `api/fields.Fields` reads them."""

NamedEvent = tuple[str, Mapping[str, object]]
"""A server-sent event with a name (Anthropic's Messages, OpenAI's Responses): name and data."""


class DoneReason(enum.Enum):
    STOP = "stop"
    LENGTH = "length"
    CANCELLED = "cancelled"
    TOOL_CALLS = "tool_calls"


@dataclass
class Message:
    role: str
    content: str = ""
    images: list[str] = field(default_factory=list)
    """Base64 image data."""
    tool_calls: list[JSONObject] = field(default_factory=list)
    """Ollama's shape: {"function": {"name", "arguments"}, "id"?}."""
    tool_name: str = ""
    thinking: str = ""


@dataclass(frozen=True)
class LoadOptions:
    """Options fixed when a model is loaded; None means the default (the settings' or the
    Modelfile's), so a request that names none runs at the defaults, never at another
    request's values."""

    num_ctx: int | None = None
    num_batch: int | None = None
    num_thread: int | None = None
    use_mmap: bool | None = None
    npu_domain: int | None = None
    """NPU IOMMU domain the scheduler gives each loaded NPU model (not a user option)."""

    def compatible_with(self, loaded: "LoadOptions") -> bool:
        """True when a model loaded with `loaded` can serve a request asking for `self`: the
        same options, defaults included (as Ollama reloads when a request's differ)."""
        return all(getattr(self, name) == getattr(loaded, name)
                   for name in ("num_ctx", "num_batch", "num_thread", "use_mmap"))


@dataclass
class SamplingOptions:
    """Per-request sampling; changing these never reloads a model. Ollama's names, and its
    built-in defaults (api/types.go DefaultOptions): the one home of those defaults."""

    num_keep: int = 4
    seed: int = -1
    num_predict: int = -1
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_last_n: int = 64
    temperature: float = 0.8
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: list[str] = field(default_factory=list)


@dataclass
class Generation:
    """What to generate. Exactly one of `messages` (chat, templated by the engine) or `prompt`
    (already final text, `raw`) is set."""

    messages: list[Message] | None = None
    prompt: str | None = None
    images: list[str] = field(default_factory=list)
    """With `prompt`: its images (base64), placed where it writes `[img-N]` (core.media)."""
    options: SamplingOptions = field(default_factory=SamplingOptions)
    format: object = None
    think: object = None
    tools: list[JSONObject] = field(default_factory=list)
    """Tool definitions in OpenAI/Ollama shape; the engine renders them into the prompt."""
    parse_thinking: bool = False
    """The model may open a `<think>` block: split it out of the answer."""
    tool_choice: str | None = None
    """None lets the model choose; "required" or a tool's name forces a call where the engine
    can constrain sampling (the CPU engine does, with a grammar)."""
    truncate: bool = True
    """A prompt longer than the window is fitted (old messages dropped, then tokens after the
    first num_keep); False refuses it with a 400."""
    context: list[int] = field(default_factory=list)
    """Token ids of an earlier /api/generate exchange that this prompt continues."""
    logprobs: bool = False
    """Return each generated token's log-probability (engines that can: the CPU engine)."""
    top_logprobs: int = 0
    """With `logprobs`: this many most likely alternatives per token (0-20)."""
    shift: bool = True
    """An answer that fills the window shifts it (num_keep tokens stay, half of the rest goes);
    False ends it with LENGTH."""


@dataclass(frozen=True)
class Token:
    text: str
    thinking: bool = False
    logprobs: tuple["TokenLogprob", ...] = ()
    """Log-probabilities of the engine tokens this text came from (when the request asks)."""


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: its text, natural-log probability, UTF-8 bytes, and the most likely
    alternatives at that step (`top_logprobs`), in Ollama's and OpenAI's shape."""

    token: str
    logprob: float
    bytes: tuple[int, ...]
    top: tuple["TokenLogprob", ...] = ()



@dataclass(frozen=True)
class ToolCall:
    """A complete tool call parsed from the model's output. `arguments` is an object."""

    name: str
    arguments: JSONObject
    id: str = ""
    index: int = 0


@dataclass(frozen=True)
class Done:
    """The last event of every generation.

    `prompt_tokens` counts the whole prompt including any prefix served from cache (Ollama's
    `prompt_eval_count`); `prompt_ms` and `eval_ms` are wall times in milliseconds of the prefill
    and decode phases; `eval_tokens` counts generated tokens.
    """

    reason: DoneReason
    prompt_tokens: int = 0
    prompt_ms: float = 0.0
    eval_tokens: int = 0
    eval_ms: float = 0.0
    context: tuple[int, ...] = ()
    """Token ids of the window at the end (prompt and answer), for /api/generate's `context`;
    empty where the engine does not expose tokens (the NPU runtime's text path)."""
    stop_sequence: str = ""
    """The request's stop sequence that ended the answer, if one did (Anthropic reports it)."""

    def relabelled(self, reason: DoneReason) -> "Done":
        """The same counts under another reason (a stop sequence matched; tools were called)."""
        return replace(self, reason=reason)


Event = Token | ToolCall | Done
"""What an engine's stream yields: text, parsed tool calls, and one final Done."""
