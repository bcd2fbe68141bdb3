"""Ollama's native API (/api/*). Each handler: parse → resolve → convert → scheduler → render."""

import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, current_app, request

from rkollama.api import convert
from rkollama.api.fields import Fields, parse_body
from rkollama.api.types import ProgressResponse
from rkollama.core.collect import collect
from rkollama.core.embed import shape
from rkollama.core.request import Request
from rkollama.core.types import Done, DoneReason, Event, Token, TokenLogprob, ToolCall
from rkollama.durations import keep_alive_seconds
from rkollama.errors import BadRequest, CorruptModel, DigestMismatch, ModelNotFound
from rkollama.models.create import create as create_model
from rkollama.models.hf import HubConfig
from rkollama.models.names import ModelName
from rkollama.models.pull import pull as pull_model
from rkollama.server import describe, embedding, pipeline
from rkollama.server.deps import deps, disconnected
from rkollama.server.metrics import Metrics
from rkollama.server.streaming import json_response, ndjson, primed

OLLAMA_VERSION = "0.12.0"

bp = Blueprint("ollama", __name__)


_deps = deps
_disconnected = disconnected


def _body() -> dict[str, Any]:
    return parse_body(request.get_data(cache=False))


def _named(f: Fields) -> tuple[Fields, str]:
    """The request's model name: `model`, or the legacy `name`; 400 when neither is given."""
    name = f.get("model", str) or f.get("name", str)
    if not name:
        raise BadRequest("model is required")
    return f, name


@bp.route("/", methods=["GET", "HEAD"])
def root() -> Response:
    return current_app.response_class("Ollama is running", content_type="text/plain; charset=utf-8")


@bp.route("/api/version", methods=["GET", "HEAD"])
def version() -> Response:
    reply = json_response({"version": OLLAMA_VERSION})  # exactly Ollama's body; X-Rkollama-Version has ours
    reply.headers["X-Rkollama-Store"] = _deps().settings.store_fingerprint()  # `pull` compares it
    return reply


@bp.route("/api/tags", methods=["GET", "HEAD"])
def tags() -> Response:
    return json_response({"models": [describe.list_entry(s) for s in _deps().store.list()]})


@bp.route("/api/ps", methods=["GET"])
def ps() -> Response:
    return json_response({"models": [describe.ps_entry(m) for m in _deps().scheduler.ps()]})


@bp.route("/api/show", methods=["POST"])
def show() -> Response:
    f, name = _named(Fields(_body(), "ShowRequest"))
    parsed = ModelName.parse(name)
    try:
        spec = _deps().store.resolve(parsed)
    except ModelNotFound:  # Ollama's show handler names the model normalised (`x:latest`)
        raise ModelNotFound(f"model '{parsed.display()}' not found") from None
    return json_response(describe.show(spec, f.get("verbose", bool, False), _deps().headers))


@bp.route("/api/copy", methods=["POST"])
def copy() -> Response:
    f = Fields(_body(), "CopyRequest")
    source, destination = f.get("source", str, ""), f.get("destination", str, "")
    if not source or not destination:
        raise BadRequest("source and destination are required")
    _deps().store.copy(source, destination)
    return current_app.response_class(b"", status=200)


@bp.route("/api/delete", methods=["DELETE"])
def delete() -> Response:
    f, name = _named(Fields(_body(), "DeleteRequest"))
    deps = _deps()
    try:
        deps.scheduler.unload(deps.store.resolve(name))
    except CorruptModel:
        pass  # a damaged model cannot be loaded either: removing it is all that is left
    deps.store.delete(name)
    return current_app.response_class(b"", status=200)


@bp.route("/api/pull", methods=["POST"])
def pull() -> Response:
    f, name = _named(Fields(_body(), "PullRequest"))
    deps = _deps()
    hub = HubConfig(deps.settings.hf_endpoint, deps.settings.hf_token)
    lines = pull_model(deps.store, deps.catalog, name, deps.platform, hub)
    return _progress(_counted(lines, deps.metrics), f.get("stream", bool, True))


def _counted(lines: Iterable[ProgressResponse], metrics: Metrics) -> Generator[ProgressResponse, None, None]:
    """The pull's progress lines, its outcome counted when it ends (success, failed, cancelled)."""
    outcome = "cancelled"
    try:
        for line in lines:
            if line.get("status") == "success":
                outcome = "success"
            yield line
    except Exception:
        outcome = "failed"
        raise
    finally:
        metrics.pulls.labels(outcome).inc()


def _progress(lines: Generator[ProgressResponse, None, None], stream: bool) -> Response:
    """Ollama's progress replies (pull, create): NDJSON lines, or only the last one. The first
    line is produced before the 200 goes out, so a bad request keeps its status code."""
    started = primed(lines)
    if not stream:
        *_, last = started  # the final line: success, or what failed
        return json_response(last)
    return ndjson(started)


@bp.route("/api/blobs/<digest>", methods=["HEAD"])
def blob_exists(digest: str) -> Response:
    present = _deps().store.has_blob(digest)
    return current_app.response_class(b"", status=200 if present else 404)


@bp.route("/api/blobs/<digest>", methods=["POST"])
def blob_upload(digest: str) -> Response:
    """The raw body becomes the blob, verified against `digest` while it streams to disk."""
    store = _deps().store
    if store.has_blob(digest):
        return current_app.response_class(b"", status=200)
    request.max_content_length = _deps().settings.max_blob_bytes
    expected = store.blob_path(digest).name.removeprefix("sha256-")
    stream = request.stream
    try:
        with store.lock():
            store.write_blob_stream(iter(lambda: stream.read(1 << 20), b""), expected)
    except DigestMismatch as exc:
        raise BadRequest(exc.message) from None
    return current_app.response_class(b"", status=201)


@bp.route("/api/create", methods=["POST"])
def create() -> Response:
    body = _body()
    return _progress(create_model(_deps().store, body),
                     Fields(body, "CreateRequest").get("stream", bool, True))


@bp.route("/api/push", methods=["POST"])
def push() -> Response:
    f, name = _named(Fields(_body(), "PushRequest"))
    raise BadRequest(f"push is not supported: rkollama has no registry to push {name} to "
                     "(copy the model's files, or pull it on the other machine)")


@dataclass(frozen=True)
class _Endpoint:
    """What chat and generate do differently; everything else `_complete` does for both."""

    name: str
    """What `pipeline.prepare` renders: "chat" or "generate"."""
    chunk: convert.ChunkBuilder
    has_input: Callable[[Request], bool]
    """False: a bare load or unload (Ollama's idiom: no messages, no prompt)."""


_CHAT = _Endpoint("chat", convert.chat_chunk, lambda req: bool(req.messages))
_GENERATE = _Endpoint("generate", convert.generate_chunk, lambda req: bool(req.prompt))


@bp.route("/api/chat", methods=["POST"])
def chat() -> Response:
    started = time.monotonic()
    return _complete(convert.parse_chat(_body()), _CHAT, started)


@bp.route("/api/generate", methods=["POST"])
def generate() -> Response:
    started = time.monotonic()
    return _complete(convert.parse_generate(_body()), _GENERATE, started)


def _complete(req: Request, endpoint: _Endpoint, started: float) -> Response:
    """Shared body of chat and generate: the load/unload idioms, then stream or collect."""
    prepared = pipeline.prepare(req, endpoint.name)
    if req.debug_render_only:  # Ollama's way to test templates: the prompt, no generation
        return _render_only(req, prepared, endpoint)
    if not endpoint.has_input(req):
        return _load_or_unload(req, prepared, endpoint)
    stream = pipeline.submit(req, prepared)

    def final(done: Done, reply: convert.Reply,
              logprobs: Sequence[TokenLogprob] | None = None) -> convert.Reply:
        """The last object, in Go's key order: …, done, done_reason, context, logprobs, metrics."""
        reply["done_reason"] = convert.done_reason(done.reason)
        if "response" in reply and not req.raw and done.context:  # /api/generate
            reply["context"] = list(done.context)  # Ollama: prompt and answer, to continue from
        if logprobs is not None:
            reply["logprobs"] = [convert.logprob(lp) for lp in logprobs]
        reply.update(convert.metrics(done, stream.load_duration, time.monotonic() - started))
        return reply

    if not req.stream:
        completion = collect(stream)
        answer = endpoint.chunk(req.model, completion.content, completion.thinking, done=True,
                                calls=completion.tool_calls)
        return json_response(final(completion.done, answer, completion.logprobs if req.logprobs else None))
    events = primed(stream)  # errors before the first token still get a proper status code
    return ndjson(_lines(req.model, endpoint, events, final), on_close=stream.close)


def _lines(model: str, endpoint: _Endpoint, events: Iterator[Event],
           final: Callable[[Done, convert.Reply], convert.Reply]) -> Iterator[convert.Reply]:
    """A streamed answer: one object per token or tool call, then the final one."""
    for event in events:
        if isinstance(event, Token):
            line = endpoint.chunk(model, "" if event.thinking else event.text,
                                  event.text if event.thinking else "")
            if event.logprobs:
                line["logprobs"] = [convert.logprob(lp) for lp in event.logprobs]
            yield line
        elif isinstance(event, ToolCall):
            yield endpoint.chunk(model, calls=[event])
        elif event.reason is not DoneReason.CANCELLED:
            yield final(event, endpoint.chunk(model, done=True))


def _render_only(req: Request, prepared: pipeline.Prepared, endpoint: _Endpoint) -> Response:
    """`_debug_info` with the rendered prompt and the image count, and an empty answer."""
    text = _deps().scheduler.render(prepared.spec, prepared.gen, prepared.load_opts, req.keep_alive,
                                    _disconnected())
    reply = endpoint.chunk(req.model)
    if "message" in reply:  # /api/chat: Ollama sends an empty message, not the assistant's
        reply["message"] = {"role": "", "content": ""}
    reply["_debug_info"] = {"rendered_template": text,
                            "image_count": sum(len(m.images) for m in prepared.gen.messages or [])}
    return json_response(reply)


def _load_or_unload(req: Request, prepared: pipeline.Prepared, endpoint: _Endpoint) -> Response:
    scheduler = _deps().scheduler
    if req.keep_alive == 0:
        scheduler.unload(prepared.spec)
        reason = "unload"
    else:
        scheduler.load(prepared.spec, prepared.load_opts, req.keep_alive, _disconnected())
        reason = "load"
    reply = endpoint.chunk(req.model, done=True)
    reply["done_reason"] = reason
    return json_response(reply)


@bp.route("/api/embed", methods=["POST"])
def embed() -> Response:
    started = time.monotonic()
    f = Fields(_body(), "EmbedRequest")
    model = f.get("model", str, "")
    if not model:
        raise BadRequest("model is required")
    value = f.raw("input", [])
    texts = ([value] if value else []) if isinstance(value, str) else value  # "" or [] only loads
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise BadRequest("invalid input type")
    vectors, tokens, load_s = embedding.embed(model, texts, f.get("truncate", bool, True),
                                               f.get("options", dict),
                                               keep_alive_seconds(f.raw("keep_alive")))
    reply = {"model": model, "embeddings": shape(vectors, f.get("dimensions", int))}
    if texts:
        reply.update(total_duration=int((time.monotonic() - started) * 1e9),
                     load_duration=int(load_s * 1e9), prompt_eval_count=tokens)
    return json_response(reply)


@bp.route("/api/embeddings", methods=["POST"])
def embeddings() -> Response:
    f = Fields(_body(), "EmbeddingRequest")
    model = f.get("model", str, "")
    if not model:
        raise BadRequest("model is required")
    prompt = f.get("prompt", str, "")
    vectors, _, _ = embedding.embed(model, [prompt] if prompt else [], True,
                                     f.get("options", dict), keep_alive_seconds(f.raw("keep_alive")))
    return json_response({"embedding": vectors[0] if vectors else []})
