"""Response helpers: JSON bodies with Ollama's content type, and NDJSON streams that end with an
error line on failure and cancel the generation when the client goes away."""

import itertools
import json

from flask import Response

from rkollama.errors import RkollamaError

JSON_TYPE = "application/json; charset=utf-8"
NDJSON_TYPE = "application/x-ndjson"


def dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def json_response(obj, status: int = 200) -> Response:
    return Response(dumps(obj), status=status, content_type=JSON_TYPE)


def error_response(message: str, status: int) -> Response:
    return json_response({"error": message}, status)


def ndjson(lines, on_close=None) -> Response:
    """Stream dicts as NDJSON. An RkollamaError mid-stream becomes a final `{"error": …}` line.

    `on_close` runs when the stream ends for any reason, including the client disconnecting
    (Waitress closes the app iterator when a write fails): that is how generation stops.
    """
    def body():
        try:
            for line in lines:
                yield dumps(line) + "\n"
        except RkollamaError as exc:
            yield dumps({"error": exc.message}) + "\n"
        except Exception as exc:  # never a traceback on the wire
            yield dumps({"error": f"internal error: {exc}"}) + "\n"
        finally:
            if on_close is not None:
                on_close()

    return Response(body(), status=200, content_type=NDJSON_TYPE)


def named_events(stream, writer, error_body) -> Response:
    """Server-sent events with event names (Anthropic's Messages, OpenAI's Responses): `writer`
    turns core events into (name, data) pairs through start(), token(), call() and done();
    an error after the first event becomes a final `error` event in `error_body`'s shape."""
    from rkollama.core.types import Done, DoneReason, Token, ToolCall

    try:
        first = next(stream)  # errors before any output keep their status code
    except BaseException:
        stream.close()
        raise

    def body():
        try:
            events = writer.start()
            for event in itertools.chain([first], stream):
                if isinstance(event, Token):
                    events += writer.token(event.text, event.thinking)
                elif isinstance(event, ToolCall):
                    events += writer.call(event)
                elif isinstance(event, Done) and event.reason is not DoneReason.CANCELLED:
                    events += writer.done(event)
                for name, data in events:
                    yield f"event: {name}\ndata: {dumps(data)}\n\n"
                events = []
        except RkollamaError as exc:
            yield f"event: error\ndata: {dumps(error_body(exc.message, exc.status))}\n\n"
        except Exception as exc:  # never a traceback on the wire
            yield f"event: error\ndata: {dumps(error_body(f'internal error: {exc}', 500))}\n\n"
        finally:
            stream.close()

    return Response(body(), status=200, content_type="text/event-stream",
                    headers={"Cache-Control": "no-cache"})
