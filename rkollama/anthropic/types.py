"""Anthropic's Messages wire types as Ollama's Anthropic layer writes them: the reply, its
content blocks, usage and errors (stream events are `core.types.NamedEvent`s whose data are
built from these).

TypedDicts, as `api/types.py` for Ollama's dialect: plain dicts at run time, checked by mypy.
"""

import sys

from rkollama.core.types import JSONObject

if sys.version_info >= (3, 11):
    from typing import TypedDict
else:  # Python 3.10
    from typing_extensions import TypedDict


class ErrorDetail(TypedDict):
    type: str
    message: str


class ErrorBody(TypedDict):
    type: str
    error: ErrorDetail
    request_id: str


class Usage(TypedDict):
    input_tokens: int
    output_tokens: int


class TextBlock(TypedDict):
    type: str
    text: str


class ThinkingBlock(TypedDict):
    type: str
    thinking: str
    signature: str


class ToolUseBlock(TypedDict):
    type: str
    id: str
    name: str
    input: JSONObject


ContentBlock = TextBlock | ThinkingBlock | ToolUseBlock


class MessageReply(TypedDict):
    id: str
    type: str
    role: str
    model: str
    content: list[ContentBlock]
    stop_reason: str | None
    stop_sequence: str | None
    usage: Usage


class TokenCount(TypedDict):
    input_tokens: int
