"""OpenAI's API (/v1/*), translated to and from the same core as the native routes."""


from collections.abc import Callable, Iterator, Mapping, Sequence

from flask import Blueprint, Response

from rkollama.api.fields import parse_body
from rkollama.core.collect import collect
from rkollama.core.embed import shape
from rkollama.core.request import Request
from rkollama.core.types import DoneReason, Event, JSONObject, Token, TokenLogprob, ToolCall
from rkollama.errors import BadRequest, ModelNotFound, RkollamaError
from rkollama.openai import convert, responses
from rkollama.openai.types import ChatCompletionChunk, Delta
from rkollama.server import embedding, pipeline
from rkollama.server.deps import deps
from rkollama.server.streaming import EventStream, dumps, event_stream, json_response, named_events

bp = Blueprint("openai", __name__, url_prefix="/v1")


def _body() -> JSONObject:
    from flask import request

    return parse_body(request.get_data(cache=False))


def _plain_json(obj: object) -> Response:
    """JSON with `Content-Type: application/json` exactly (no charset), as Ollama's model
    listing and model routes send it."""
    reply = json_response(obj)
    reply.content_type = "application/json"
    return reply


@bp.route("/models", methods=["GET"])
def models() -> Response:
    return _plain_json({"object": "list",
                        "data": [convert.model_entry(s) for s in deps().store.list()]})


@bp.route("/models/<path:model>", methods=["GET"])
def model(model: str) -> Response:
    try:
        spec = deps().store.resolve(model)
    except (ModelNotFound, RkollamaError):
        raise ModelNotFound(f"model '{model}' not found") from None
    return _plain_json(dict(convert.model_entry(spec), id=model))


@bp.route("/embeddings", methods=["POST"])
def embeddings() -> Response:
    name, texts, encoding, dimensions = convert.parse_embedding_request(_body())
    vectors, tokens, _ = embedding.embed(name, texts, True, None, None)
    return json_response(convert.to_embeddings(name, shape(vectors, dimensions), encoding, tokens))


@bp.route("/audio/transcriptions", methods=["POST"])
def audio_transcriptions() -> Response:
    """OpenAI's transcription form, checked as Ollama checks it. Ollama then chats the clip to a
    model that hears, under a transcribing system prompt; no model here hears (neither engine
    takes sound), so a clip for a model that exists is the capability 400 a chat with
    `input_audio` gets."""
    from flask import request

    if request.mimetype != "multipart/form-data":
        raise BadRequest("failed to parse multipart form: request Content-Type isn't multipart/form-data")
    model = request.form.get("model", "")
    if not model:
        raise BadRequest("model is required")
    clip = request.files.get("file")
    if clip is None:
        raise BadRequest("file is required: http: no such file")
    if not clip.stream.read(1):
        raise BadRequest("audio file is empty")
    pipeline.prepare(Request(model=model, stream=False, audio=1), "chat")  # the model's or capability error
    raise BadRequest("no engine here takes sound")  # while no model's capabilities can say "audio"


@bp.route("/chat/completions", methods=["POST"])
def chat_completions() -> Response:
    req = convert.from_chat_request(_body())
    stream = pipeline.submit(req, pipeline.prepare(req, "chat"))
    cid, created = convert.new_id("chatcmpl"), convert.now()
    if not req.stream:
        return json_response(convert.to_chat_completion(req, collect(stream), cid, created))

    def chunk(delta: Delta, finish: str | None = None,
              scored: Sequence[TokenLogprob] = ()) -> ChatCompletionChunk:
        return convert.chat_chunk(req, cid, created, delta, finish, scored)

    def frames(events: Iterator[Event]) -> Iterator[Mapping[str, object]]:
        yield chunk({"role": "assistant", "content": ""})
        for event in events:
            if isinstance(event, Token):
                yield chunk({"reasoning": event.text} if event.thinking else {"content": event.text},
                            scored=event.logprobs)
            elif isinstance(event, ToolCall):
                yield chunk({"tool_calls": convert.tool_calls([event])})
            elif event.reason is not DoneReason.CANCELLED:
                yield chunk({}, convert.finish_reason(event.reason))
                if req.include_usage:
                    yield convert.usage_chunk(req, cid, created, "chat.completion.chunk", event)

    return _sse(stream, frames)


@bp.route("/completions", methods=["POST"])
def completions() -> Response:
    req = convert.from_completion_request(_body())
    stream = pipeline.submit(req, pipeline.prepare(req, "generate"))
    cid, created = convert.new_id("cmpl"), convert.now()
    if not req.stream:
        return json_response(convert.to_completion(req, collect(stream), cid, created))

    def frames(events: Iterator[Event]) -> Iterator[Mapping[str, object]]:
        offset = 0  # characters of completion text sent so far, for `text_offset`
        for event in events:
            if isinstance(event, Token):
                if not event.thinking:
                    yield convert.completion_chunk(req, cid, created, event.text, scored=event.logprobs,
                                                   offset=offset)
                    offset += sum(len(lp.token) for lp in event.logprobs)
            elif not isinstance(event, ToolCall) and event.reason is not DoneReason.CANCELLED:
                yield convert.completion_chunk(req, cid, created, "", convert.finish_reason(event.reason))
                if req.include_usage:
                    yield convert.usage_chunk(req, cid, created, "text_completion", event)

    return _sse(stream, frames)


Frames = Callable[[Iterator[Event]], Iterator[Mapping[str, object]]]
"""Core events to the `data:` objects of an OpenAI stream."""


def _sse(stream: EventStream, frames: Frames) -> Response:
    """Server-sent events: `data: {json}` frames, `data: [DONE]`; an error after the first frame
    becomes an OpenAI-shaped error frame (the openai SDK raises it)."""
    def lines(events: Iterator[Event]) -> Iterator[str]:
        for frame in frames(events):
            yield f"data: {dumps(frame)}\n\n"
        yield "data: [DONE]\n\n"

    return event_stream(stream, lines,
                        lambda message, status: f"data: {dumps(convert.error_body(message, status))}\n\n")


@bp.route("/responses", methods=["POST"])
def responses_create() -> Response:
    req, echo = responses.from_responses_request(_body())
    stream = pipeline.submit(req, pipeline.prepare(req, "chat"))
    rid = responses.new_id("resp")
    if not req.stream:
        return json_response(responses.to_response(req, echo, collect(stream), rid))
    return named_events(stream, responses.StreamWriter(req, echo, rid), convert.error_body)
