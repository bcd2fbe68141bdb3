"""The engine-neutral request both dialects convert to, and how it becomes a `Generation`:
prompt assembly, option precedence and capability checks, the same for /api and /v1."""

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from rkollama.core import images, structured
from rkollama.core.options import DEFAULTS, LOAD_OPTIONS, NUM_CTX_FLOOR, merge_request_options
from rkollama.core.types import Generation, JSONObject, LoadOptions, Message, SamplingOptions
from rkollama.errors import BadRequest


class _Name(Protocol):
    def full(self) -> str: ...


class _Turn(Protocol):
    """One of a Modelfile's MESSAGE lines."""

    @property
    def role(self) -> str: ...
    @property
    def content(self) -> str: ...


class _Settings(Protocol):
    """What a model's Modelfile says that shapes a request."""

    @property
    def parameters(self) -> JSONObject: ...
    @property
    def messages(self) -> Sequence[_Turn]: ...
    @property
    def system(self) -> str: ...


class ModelFacts(Protocol):
    """What preparing a request needs to know of the model (models.store.ModelSpec is one;
    core does not import the store)."""

    @property
    def name(self) -> _Name: ...
    @property
    def modelfile(self) -> _Settings: ...
    @property
    def capabilities(self) -> list[str]: ...

THINK_LEVELS = ("low", "medium", "high", "max")


@dataclass
class Request:
    """One request of either dialect (/api/chat, /api/generate, /v1/chat/completions, …)."""

    model: str
    stream: bool = True
    options: JSONObject | None = None
    keep_alive: float | None = None
    format: object = None
    think: object = None
    messages: list[Any] = field(default_factory=list[Any])
    prompt: str = ""
    system: str | None = None
    raw: bool = False
    images: list[Any] = field(default_factory=list[Any])
    suffix: str = ""
    tools: list[Any] = field(default_factory=list[Any])
    include_usage: bool = False
    tool_choice: str | None = None  # None (auto), "required", or the name of one tool
    truncate: bool = True  # fit a prompt that is too long (Ollama's default), else 400
    context: list[Any] = field(default_factory=list[Any])  # /api/generate: token ids to continue from
    debug_render_only: bool = False  # answer the rendered prompt instead of generating
    logprobs: bool = False
    top_logprobs: int = 0
    shift: bool = True     # shift the context when the answer fills it, else stop at "length"
    audio: int = 0  # sound clips (OpenAI input_audio, /v1/audio/transcriptions): no model here hears


def check_capabilities(spec: ModelFacts, req: Request, endpoint: str) -> None:
    """Ollama's capability errors: embedding-only models, think without `thinking`, …"""
    caps = spec.capabilities
    if "completion" not in caps:
        raise BadRequest(f'"{req.model}" does not support {endpoint}')
    if req.think not in (None, False) and "thinking" not in caps:
        raise BadRequest(f'"{req.model}" does not support thinking')
    if req.suffix and "insert" not in caps:
        raise BadRequest(f"{spec.name.full()} does not support insert")
    if req.tools and "tools" not in caps:
        raise BadRequest(f"{spec.name.full()} does not support tools")
    if req.audio and "audio" not in caps:
        raise BadRequest(f"{spec.name.full()} does not support audio")
    pictures = request_images(req)
    if pictures and "vision" not in caps and not req.debug_render_only:  # Ollama renders them anyway
        raise BadRequest(f"{spec.name.full()} does not support vision")
    for picture in pictures:  # every image whole and of a bounded size before any engine work
        try:
            images.check(picture)
        except images.BadImage as exc:
            raise BadRequest(f"invalid image: {exc}") from None


def request_images(req: Request) -> list[str]:
    """Every image of the request (base64), in order."""
    return list(req.images) + [image for m in req.messages for image in m.images]


def effective_options(spec: ModelFacts, request_options: object) -> JSONObject:
    """Built-in defaults < Modelfile parameters < request options (unknown keys ignored)."""
    return merge_request_options({**DEFAULTS, **spec.modelfile.parameters}, request_options)


def load_options(options: JSONObject) -> LoadOptions:
    """The load-time part of merged options; 0 (and absent) mean the default, a num_ctx under
    Ollama's floor becomes the floor."""
    values = {k: options.get(k) for k in LOAD_OPTIONS if k in LoadOptions.__dataclass_fields__}
    for name in ("num_ctx", "num_batch", "num_thread"):
        if not values.get(name):
            values[name] = None
    if values["num_ctx"] is not None:
        values["num_ctx"] = max(NUM_CTX_FLOOR, values["num_ctx"])
    return LoadOptions(**values)


def sampling_options(options: JSONObject) -> SamplingOptions:
    names = SamplingOptions.__dataclass_fields__
    return SamplingOptions(**{k: v for k, v in options.items() if k in names})


def to_generation(spec: ModelFacts, req: Request, options: JSONObject) -> Generation:
    """Assemble the prompt as Ollama does: Modelfile MESSAGEs first, the Modelfile SYSTEM only when
    the request brings no system message of its own; /api/generate becomes one user turn."""
    sampling = sampling_options(options)
    if isinstance(req.format, dict):  # every dialect's schema passes here, before any engine
        fault = structured.schema_fault(req.format)
        if fault:
            raise BadRequest(f"invalid JSON schema in format: {fault}")
    if req.tools and req.tool_choice:  # a forced call becomes a grammar of the tools' parameters
        for tool in req.tools:
            fault = structured.cost_fault(tool.get("function", {}).get("parameters"))
            if fault:
                raise BadRequest(f"invalid JSON schema in tool parameters: {fault}")
    think = req.think
    if think is None and "thinking" in spec.capabilities:
        think = True
    if req.raw:
        return Generation(prompt=req.prompt, images=list(req.images), options=sampling,
                          format=req.format, think=think, truncate=req.truncate,
                          parse_thinking="thinking" in spec.capabilities, shift=req.shift,
                          logprobs=req.logprobs, top_logprobs=req.top_logprobs)
    modelfile = spec.modelfile
    history = [Message(m.role, m.content) for m in modelfile.messages]
    if req.messages or req.prompt:
        turns = req.messages or [Message("user", req.prompt, images=req.images)]
    else:
        turns = []
    system = req.system if req.system is not None else modelfile.system
    has_system = any(m.role == "system" for m in turns[:1])
    prefix = [Message("system", system)] if system and not has_system else []
    return Generation(messages=prefix + history + turns, options=sampling, format=req.format,
                      think=think, tools=req.tools, parse_thinking="thinking" in spec.capabilities,
                      tool_choice=req.tool_choice if req.tools else None, truncate=req.truncate,
                      shift=req.shift, context=list(req.context), logprobs=req.logprobs,
                      top_logprobs=req.top_logprobs)


MAX_TOP_LOGPROBS = 20


def check_top_logprobs(value: object) -> None:
    """`top_logprobs` must be 0-20 (Ollama's and OpenAI's bound)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOP_LOGPROBS:
        raise BadRequest(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}")


def validate_tools(tools: object) -> list[JSONObject]:
    """Tool definitions must be `{"type": "function", "function": {"name": …}}` objects."""
    if not isinstance(tools, list):
        raise BadRequest("tools must be an array")
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) \
                or not function["name"]:
            raise BadRequest('invalid tool: each tool needs {"type": "function", "function": {"name": …}}')
    return cast("list[JSONObject]", tools)  # each checked above to be an object


def normalise_tool_calls(calls: object, json_arguments: bool = False) -> list[JSONObject]:
    """Tool calls of an earlier assistant turn, in the shape chat templates expect (arguments an
    object; `id` kept when given). `json_arguments`: arguments may arrive as a JSON string, as
    OpenAI sends them."""
    if not isinstance(calls, list):
        raise BadRequest("tool_calls must be an array")
    out = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise BadRequest("invalid tool call: it needs function.name")
        arguments = function.get("arguments", {})
        if json_arguments and (arguments is None or isinstance(arguments, str)):
            try:
                arguments = json.loads(arguments or "{}")
            except (ValueError, RecursionError):  # nested past the parser's limit
                raise BadRequest("invalid tool call arguments") from None
        if not isinstance(arguments, dict):
            raise BadRequest("invalid tool call arguments")
        item: JSONObject = {"type": "function",
                            "function": {"name": function["name"], "arguments": arguments}}
        if isinstance(call.get("id"), str):
            item["id"] = call["id"]
        out.append(item)
    return out
