"""Anthropic's Messages API (/v1/messages), translated to and from the same core as the others."""

from flask import Blueprint, Response, request

from rkollama.anthropic import convert
from rkollama.api.fields import parse_body
from rkollama.core.collect import collect
from rkollama.server import pipeline
from rkollama.server.streaming import json_response, named_events

bp = Blueprint("anthropic", __name__, url_prefix="/v1/messages")


@bp.route("", methods=["POST"])
def messages() -> Response:
    req = convert.from_messages_request(parse_body(request.get_data(cache=False)))
    stream = pipeline.submit(req, pipeline.prepare(req, "chat"))
    mid = convert.new_id("msg")
    if not req.stream:
        return json_response(convert.to_message(req, collect(stream), mid))
    return named_events(stream, convert.StreamWriter(req, mid), convert.error_body)


@bp.route("/count_tokens", methods=["POST"])
def count_tokens() -> Response:
    return json_response(convert.count_tokens(parse_body(request.get_data(cache=False))))
