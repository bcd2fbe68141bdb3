"""Anthropic's Messages API (/v1/messages), translated to and from the same core as the others."""

import itertools

from flask import Blueprint, Response, request

from rkollama.anthropic import convert
from rkollama.api.fields import parse_body
from rkollama.core.collect import collect
from rkollama.core.types import DoneReason, Token, ToolCall
from rkollama.errors import RkollamaError
from rkollama.server import generation
from rkollama.server.streaming import dumps, json_response

bp = Blueprint("anthropic", __name__, url_prefix="/v1/messages")


@bp.errorhandler(RkollamaError)
def _error(exc: RkollamaError):
    return json_response(convert.error_body(exc.message, exc.status), exc.status)


@bp.route("", methods=["POST"])
def messages():
    req = convert.from_messages_request(parse_body(request.get_data(cache=False)))
    stream = generation.submit(req, generation.prepare(req, "chat"))
    mid = convert.new_id("msg")
    if not req.stream:
        return json_response(convert.to_message(req, collect(stream), mid))
    try:
        first = next(stream)  # errors before any output keep their status code
    except BaseException:
        stream.close()
        raise
    writer = convert.StreamWriter(req, mid)

    def body():
        try:
            events = writer.start()
            for event in itertools.chain([first], stream):
                if isinstance(event, Token):
                    events += writer.token(event.text, event.thinking)
                elif isinstance(event, ToolCall):
                    events += writer.call(event)
                elif event.reason is not DoneReason.CANCELLED:
                    events += writer.done(event)
                for name, data in events:
                    yield f"event: {name}\ndata: {dumps(data)}\n\n"
                events = []
        except RkollamaError as exc:
            yield f"event: error\ndata: {dumps(convert.error_body(exc.message, exc.status))}\n\n"
        except Exception as exc:  # never a traceback on the wire
            yield f"event: error\ndata: {dumps(convert.error_body(f'internal error: {exc}', 500))}\n\n"
        finally:
            stream.close()

    return Response(body(), status=200, content_type="text/event-stream",
                    headers={"Cache-Control": "no-cache"})


@bp.route("/count_tokens", methods=["POST"])
def count_tokens():
    return json_response(convert.count_tokens(parse_body(request.get_data(cache=False))))
