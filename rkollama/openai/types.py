"""OpenAI's wire types as Ollama's OpenAI layer writes them (`openai/openai.go`): the replies of
chat completions, completions, models, embeddings and the Responses API.

TypedDicts, as `api/types.py` for Ollama's own dialect: a reply stays a plain dict (key order
and omitted fields are what the converter writes) while mypy checks every builder. Requests are
hostile JSON read through `api/fields.Fields`, so they stay `JSONObject` until converted.
"""

import sys

from rkollama.api.types import Logprob
from rkollama.core.types import JSONObject

if sys.version_info >= (3, 11):
    from typing import NotRequired, TypedDict
else:  # Python 3.10: its TypedDict ignores NotRequired
    from typing_extensions import NotRequired, TypedDict


class ErrorDetail(TypedDict):
    message: str
    type: str
    param: None
    code: None


class ErrorBody(TypedDict):
    error: ErrorDetail


class Usage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class FunctionCall(TypedDict):
    name: str
    arguments: str
    """The arguments object as a JSON string."""


class ToolCall(TypedDict):
    id: str
    index: int
    type: str
    function: FunctionCall


class ChatMessage(TypedDict):
    role: str
    content: str
    reasoning: NotRequired[str]
    tool_calls: NotRequired[list[ToolCall]]


class Delta(TypedDict, total=False):
    """A streamed chunk's change to the message: only the fields that changed."""

    role: str
    content: str
    reasoning: str
    tool_calls: list[ToolCall]


class ChatLogprobs(TypedDict):
    content: list[Logprob]
    refusal: None


class ChatChoice(TypedDict):
    index: int
    message: ChatMessage
    logprobs: ChatLogprobs | None
    finish_reason: str


class ChunkChoice(TypedDict):
    index: int
    delta: Delta
    finish_reason: str | None
    logprobs: NotRequired[ChatLogprobs]


class ChatCompletion(TypedDict):
    id: str
    object: str
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChoice]
    usage: Usage


class ChatCompletionChunk(TypedDict):
    id: str
    object: str
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChunkChoice]
    usage: NotRequired[Usage]


class CompletionLogprobs(TypedDict):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]
    content: list[Logprob]


class CompletionChoice(TypedDict):
    text: str
    index: int
    finish_reason: str | None
    logprobs: NotRequired[CompletionLogprobs]


class Completion(TypedDict):
    id: str
    object: str
    created: int
    model: str
    system_fingerprint: str
    choices: list[CompletionChoice]
    usage: NotRequired[Usage]


class Model(TypedDict):
    id: str
    object: str
    created: int
    owned_by: str


class ModelList(TypedDict):
    object: str
    data: list[Model]


class Embedding(TypedDict):
    object: str
    embedding: str | list[float]
    """Floats, or little-endian float32 bytes in base64 when `encoding_format` asked for it."""
    index: int


class EmbeddingUsage(TypedDict):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(TypedDict):
    object: str
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage



# -- the Responses API ---------------------------------------------------------------------------
class Echo(TypedDict):
    """What a Responses reply repeats of its request."""

    instructions: str | None
    tools: list[JSONObject]
    temperature: float
    top_p: float
    max_output_tokens: int | None
    text: JSONObject
    reasoning: JSONObject | None
    truncation: str
    top_logprobs: int


class TokensDetail(TypedDict, total=False):
    cached_tokens: int
    reasoning_tokens: int


class ResponseUsage(TypedDict):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: TokensDetail
    output_tokens_details: TokensDetail


class SummaryText(TypedDict):
    type: str
    text: str


class ReasoningItem(TypedDict):
    id: str
    type: str
    summary: list[SummaryText]
    encrypted_content: NotRequired[str]


class FunctionCallItem(TypedDict):
    id: str
    type: str
    status: str
    call_id: str
    name: str
    arguments: str


class OutputText(TypedDict):
    type: str
    text: str
    annotations: list[JSONObject]
    logprobs: list[Logprob]


class MessageItem(TypedDict):
    id: str
    type: str
    status: str
    role: str
    content: list[OutputText]


OutputItem = ReasoningItem | FunctionCallItem | MessageItem


class Response(TypedDict):
    id: str
    object: str
    created_at: int
    completed_at: int | None
    status: str
    incomplete_details: None
    model: str
    previous_response_id: None
    instructions: str | None
    output: list[OutputItem]
    error: None
    tools: list[JSONObject]
    tool_choice: str
    truncation: str
    parallel_tool_calls: bool
    text: JSONObject
    top_p: float
    presence_penalty: float
    frequency_penalty: float
    top_logprobs: int
    temperature: float
    reasoning: JSONObject | None
    usage: ResponseUsage | None
    max_output_tokens: int | None
    max_tool_calls: None
    store: bool
    background: bool
    service_tier: str
    metadata: JSONObject
    safety_identifier: None
    prompt_cache_key: None
