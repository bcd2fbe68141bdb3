"""Ollama's wire types (its `api/types.go`), shared by the server that writes them, the client
that reads them, and the CLI that shows them.

They are TypedDicts: at run time a reply stays a plain dict, so key order and omitted empty
fields (Go's `omitempty`) are exactly what the code writes, while mypy checks every place that
builds or reads one. `NotRequired` marks a field Ollama omits when empty. Durations are integer
nanoseconds; times are RFC 3339 strings. Requests are parsed from hostile JSON by
`api/fields.py`, never trusted as these types; the client builds them.
"""

import sys
from typing import Any, final

from rkollama.models.progress import Progress

if sys.version_info >= (3, 11):
    from typing import NotRequired, TypedDict
else:  # Python 3.10 (Ubuntu 22.04 board images): its TypedDict ignores NotRequired
    from typing_extensions import NotRequired, TypedDict


class ToolCallFunction(TypedDict):
    index: NotRequired[int]
    name: str
    arguments: dict[str, Any]


class ToolCall(TypedDict):
    id: NotRequired[str]
    function: ToolCallFunction


class Message(TypedDict):
    role: str
    content: str
    thinking: NotRequired[str]
    images: NotRequired[list[str]]
    """Base64 image data (no data: prefix)."""
    tool_calls: NotRequired[list[ToolCall]]
    tool_name: NotRequired[str]


class Logprob(TypedDict):
    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: NotRequired[list["Logprob"]]


class Metrics(TypedDict, total=False):
    """The final object's timings and counts; zero values are omitted."""

    total_duration: int
    load_duration: int
    prompt_eval_count: int
    prompt_eval_duration: int
    eval_count: int
    eval_duration: int


@final  # so `"message" in reply` tells a chat answer from a generate one
class ChatResponse(Metrics):
    model: str
    created_at: str
    message: Message
    done: bool
    done_reason: NotRequired[str]
    """stop, length, load or unload (final object only)."""
    _debug_info: NotRequired["DebugInfo"]
    logprobs: NotRequired[list[Logprob]]


@final
class GenerateResponse(Metrics):
    model: str
    created_at: str
    response: str
    thinking: NotRequired[str]
    done: bool
    done_reason: NotRequired[str]
    context: NotRequired[list[int]]
    """Token ids of prompt and answer, to continue from (final object of a non-raw generate)."""
    _debug_info: NotRequired["DebugInfo"]
    logprobs: NotRequired[list[Logprob]]


class DebugInfo(TypedDict):
    """`debug_render_only`'s answer: the prompt as the template rendered it."""

    rendered_template: str
    image_count: int


class RequestBase(TypedDict, total=False):
    """What chat and generate requests share."""

    model: str
    stream: bool
    format: str | dict[str, Any]
    """"json" or a JSON Schema."""
    options: dict[str, Any]
    keep_alive: str | int | float
    """A Go duration ("5m") or seconds; 0 unloads after the reply, negative keeps loaded."""
    think: bool | str
    """True/False, or a level: "low", "medium", "high"."""


class ChatRequest(RequestBase, total=False):
    messages: list[Message]
    tools: list[dict[str, Any]]


class GenerateRequest(RequestBase, total=False):
    prompt: str
    system: str
    raw: bool
    images: list[str]


ProgressResponse = Progress
"""One line of /api/pull, /api/create and /api/push progress (made by models/, declared there)."""


class ModelDetails(TypedDict):
    parent_model: str
    format: str
    family: str
    families: list[str]
    parameter_size: str
    quantization_level: str
    context_length: NotRequired[int]
    embedding_length: NotRequired[int]


class ListModel(TypedDict):
    """One entry of /api/tags."""

    name: str
    model: str
    modified_at: str
    size: int
    """Bytes on disk."""
    digest: str
    details: ModelDetails
    capabilities: list[str]


class ProcessModel(TypedDict):
    """One entry of /api/ps."""

    name: str
    model: str
    size: int
    """Bytes in memory."""
    digest: str
    details: ModelDetails
    expires_at: str
    size_vram: int
    """Bytes on the accelerator (the NPU's share; 0 on the CPU engine)."""
    context_length: int


class ShowResponse(TypedDict):
    license: NotRequired[str]
    modelfile: str
    parameters: NotRequired[str]
    template: NotRequired[str]
    system: NotRequired[str]
    renderer: NotRequired[str]
    parser: NotRequired[str]
    details: ModelDetails
    messages: NotRequired[list[Message]]
    model_info: dict[str, Any]
    projector_info: NotRequired[dict[str, Any]]
    tensors: NotRequired[list[dict[str, Any]]]
    capabilities: list[str]
    modified_at: str
    requires: NotRequired[str]


class EmbedResponse(TypedDict):
    model: str
    embeddings: list[list[float]]
    total_duration: NotRequired[int]
    load_duration: NotRequired[int]
    prompt_eval_count: NotRequired[int]


class ErrorResponse(TypedDict):
    error: str
