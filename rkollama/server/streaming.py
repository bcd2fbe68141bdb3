"""Response helpers: JSON bodies with Ollama's content type, and NDJSON streams that end with an
error line on failure and cancel the generation when the client goes away."""

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
